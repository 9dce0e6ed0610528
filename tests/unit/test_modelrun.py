"""modelrun.py: the model-run script against a stand-in `ollama`, and the parsing of its report."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.errors import PackageError
from pipeline.smoke import modelrun

from .conftest import fake_ollama_prefix

FAKE_OLLAMA = r"""#!/bin/sh
# Stand-in for the CLI: serve writes ggml's lines and stays up; list answers once serve is up.
case $1 in
  serve)
    echo "load_backend: loaded CPU backend from /pkg/lib/ollama/libggml-cpu-haswell.so"
    echo 'time=x level=INFO msg="inference compute" id=cpu library=cpu'
    i=0; while [ $i -lt 50 ]; do echo "server line $i"; i=$((i + 1)); done
    if [ -n "${FAKE_SERVE_FAIL:-}" ]; then echo "Error: listen tcp: address already in use"; exit 1; fi
    touch "$OLLAMA_MODELS.up"; exec sleep 60 ;;
  list) [ -e "$OLLAMA_MODELS.up" ] ;;
  create)
    [ "$3" = -f ] && grep -q "^FROM $FAKE_MODEL\$" "$4" && grep -q '^PARAMETER temperature 0$' "$4" \
      || { echo "Error: bad Modelfile"; exit 1; }
    echo success ;;
  run)
    [ "$2" = tiny ] && [ "$4" = --verbose ] || exit 3
    echo "some noise"
    printf 'prompt eval count:    4 token(s)\neval count:           %s token(s)\n' "${FAKE_TOKENS:-16}" >&2
    printf 'eval duration:        1s\neval rate:            42.50 tokens/s\n' >&2 ;;
esac
"""


@pytest.fixture
def prefix(tmp_path, monkeypatch):
    root = fake_ollama_prefix(tmp_path, FAKE_OLLAMA)
    monkeypatch.setenv("FAKE_MODEL", str(tmp_path / "tiny.gguf"))
    return root


def host_exec(argv) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=60)
    return done.stdout + done.stderr


def run(prefix, **kwargs):
    return modelrun.run(host_exec, prefix=str(prefix), model_path=str(prefix.parent / "tiny.gguf"),
                        limit_s=10, **kwargs)


def test_run_serves_creates_generates_and_reports(prefix):
    result = run(prefix)
    assert result.tokens == 16
    assert result.tokens_per_s == 42.5
    assert result.backend == "CPU (libggml-cpu-haswell.so)"
    assert result.backends == (modelrun.Backend("CPU", "libggml-cpu-haswell.so"),)
    assert result.compute == ("cpu",)
    assert result.response == "some noise"
    assert "16 tokens at 42.5 tokens/s on CPU" in result.summary()


def test_server_that_exits_fails_with_its_log_tail(prefix, monkeypatch):
    monkeypatch.setenv("FAKE_SERVE_FAIL", "1")
    with pytest.raises(modelrun.ModelRunError) as failure:
        run(prefix)
    text = str(failure.value)
    assert isinstance(failure.value, PackageError)
    assert failure.value.step == "ready"
    assert "ollama serve exited with code 1" in text
    assert "address already in use" in text
    # The last 40 lines, not the first ones.
    assert "server line 49" in text and "load_backend" not in text


def test_too_few_tokens_is_a_failure(prefix, monkeypatch):
    monkeypatch.setenv("FAKE_TOKENS", "3")
    with pytest.raises(modelrun.ModelRunError, match="generated 3 tokens, fewer than 8"):
        run(prefix)


def test_missing_binary_is_reported(tmp_path):
    with pytest.raises(modelrun.ModelRunError, match="missing or not executable"):
        modelrun.run(host_exec, prefix=str(tmp_path / "nothing"), model_path="/nonexistent")


def test_exec_failure_becomes_a_model_run_error():
    def broken(argv):
        raise RuntimeError("no container")

    with pytest.raises(modelrun.ModelRunError, match="could not run: no container"):
        modelrun.run(broken)


def test_values_travel_as_arguments_not_inside_the_script():
    argv = modelrun.script_argv("/opt/p'x", "/m/tiny.gguf", port=1234)
    assert argv[:2] == ["sh", "-c"] and argv[2] == modelrun.SCRIPT
    assert argv[4:8] == ["/opt/p'x", "/m/tiny.gguf", "1234", "300"]
    assert "PARAMETER num_predict 16" in argv[8] and "PARAMETER temperature 0" in argv[8]


REAL_LOG = """\
time=2026-01-01T00:00:00Z level=INFO source=types.go:129 msg="inference compute" id=GPU-0 library=CUDA compute=3.7
load_backend: loaded CUDA backend from /usr/local/lib/ollama/cuda_v11/libggml-cuda.so
load_backend: loaded CPU backend from /usr/local/lib/ollama/libggml-cpu-haswell.so
load_tensors: offloaded 3/3 layers to GPU
"""


def report(status="ok", step="done", run_err="eval count:           16 token(s)\neval rate:  7.25 tokens/s",
           server_log=REAL_LOG) -> str:
    parts = {"status": status, "step": step, "message": "", "create.log": "success", "run.out": "xyz",
             "run.err": run_err, "server.log": server_log, "end": ""}
    return "\n".join(f"{modelrun.MARK}{k}=====\n{v}" for k, v in parts.items())


def test_gpu_backend_is_preferred_over_the_cpu_one():
    result = modelrun.parse(report())
    assert result.backend == "CUDA (libggml-cuda.so)"
    assert result.compute == ("CUDA",)
    assert result.offloaded == (3, 3)
    assert result.tokens_per_s == 7.25


def test_a_server_in_gins_debug_mode_fails_the_run():
    debug = REAL_LOG + ('[GIN-debug] [WARNING] Running in "debug" mode. Switch to "release" mode in production.\n'
                        "[GIN-debug] GET    /api/version --> ...\n")
    with pytest.raises(modelrun.ModelRunError) as failure:
        modelrun.parse(report(server_log=debug))
    assert failure.value.step == "serve"
    assert "gin's debug mode ([GIN-debug] [WARNING] Running in \"debug\" mode." in str(failure.value)
    assert "server.mode=release" in str(failure.value)


def test_incomplete_report_is_an_error():
    with pytest.raises(modelrun.ModelRunError, match="no complete report"):
        modelrun.parse("sh: 1: syntax error")


def test_check_unit_skips_without_systemd_analyze():
    check = modelrun.check_unit(lambda argv: "skipped: no systemd-analyze\n", "/opt/ollama")
    assert check == modelrun.UnitCheck(False, ())


def test_check_unit_reports_the_units_own_complaints():
    out = ("failed:\n/tmp/x/ollama.service:7: Unknown key name 'Bogus' in section 'Service', ignoring.\n"
           "multi-user.target: Wants dependency dropped\n")
    check = modelrun.check_unit(lambda argv: out, "/opt/ollama")
    assert check.checked
    assert check.problems == ("/tmp/x/ollama.service:7: Unknown key name 'Bogus' in section 'Service', "
                              "ignoring.",)


def test_a_gpu_backend_only_discovery_loaded_does_not_count_when_the_server_computes_on_the_cpu():
    # OLLAMA_DEBUG=2 on a host without an AMD GPU (v0.12.5): the discovery runner's lines, then the CPU.
    log = ("load_backend: loaded ROCm backend from /opt/prefix/lib/ollama/rocm/libggml-hip.so\n"
           "ggml_cuda_init: failed to initialize ROCm: no ROCm-capable device is detected\n"
           'time=x level=INFO source=types.go:129 msg="inference compute" id=cpu library=cpu compute=""\n'
           "load_backend: loaded CPU backend from /opt/prefix/lib/ollama/libggml-cpu-haswell.so\n")
    result = modelrun.parse(report(server_log=log))
    assert result.backend == "CPU (libggml-cpu-haswell.so)"
    assert [b.name for b in result.backends] == ["ROCm", "CPU"]
