"""Build Ollama from pinned upstream source for GPUs the official releases don't serve."""
