"""Memory workbench: how Ollama's own placement code puts a model on given GPUs, upstream against patched.

Scenarios (TOML, one per file) describe GPUs, a model's shape and the request options. The upstream tree
and the patched tree of a ref are exported into a temporary folder, a Go test file (the driver) is put
into each tree's llm package, and `go test -c` compiles it there (in the Go builder, or with the host's
Go) into a test binary kept in the cache under a key of its inputs, so a later run compiles nothing. The
binary synthesizes each model as a GGUF with metadata and tensor descriptions only (ggml.WriteGGUF, as
upstream's own tests do) and runs the placement code of the ref:

* v0.12.0 - v0.12.10 (llm/memory.go): estimateGPULayers, predictServerFit and pickBestFullFitByLibrary;
  the Ollama engine's createLayout for gemma3, from a synthesized runner memory report;
* v0.12.11 - v0.24.x (no llm/memory.go): llamaServer.Load (the llama engine's layout loop over
  createLayout) or ollamaServer.Load (the Ollama engine's fit/alloc/commit protocol), whichever the tree
  picks for the model, unchanged, against a fake runner on a loopback port.

Results come back as JSON; the scenarios' expectations (some scoped to versions) are evaluated and the
report rendered.

    scenario TOML ─▶ load (frozen) ─▶ input JSON ─▶ test binaries (before, after; cached) ─▶ report
      scenario.py                      driver.py     run.py                                    report.py
"""
