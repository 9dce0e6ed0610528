"""Memory workbench: how Ollama's own estimator places a model on given GPUs, upstream against patched.

Scenarios (TOML, one per file) describe GPUs, a model's shape and the request options. For an upstream
ref that still has llm/memory.go (v0.12.x before v0.12.11) the upstream tree and the patched tree are
exported into a temporary folder, a Go test file is put into each tree's llm package, and `go test -c`
compiles it there (in the Go builder, or with the host's Go) into a test binary kept in the cache under
a key of its inputs, so a later run compiles nothing. The binary synthesizes each model as a GGUF with
metadata and tensor descriptions only (ggml.WriteGGUF, as llm/memory_test.go does) and calls
estimateGPULayers, predictServerFit and pickBestFullFitByLibrary. Results come back as JSON; the
scenarios' expectations are evaluated and the report rendered.

    scenario TOML ─▶ load (frozen) ─▶ input JSON ─▶ test binaries (before, after; cached) ─▶ report
      scenario.py                      driver.py     run.py                                    report.py
"""
