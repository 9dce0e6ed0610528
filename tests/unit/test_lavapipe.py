"""lavapipe.py: the Vulkan model run's environment and its proof of the device, against a stand-in
`ollama` that behaves as v0.24.0's server and ggml-vulkan do with lavapipe (a CPU-type device)."""

from __future__ import annotations

import subprocess

import pytest

from pipeline.errors import ModelRunError
from pipeline.smoke import lavapipe

from .conftest import fake_ollama_prefix

# Upstream's behaviour, in a shell: without OLLAMA_VULKAN=1 the vulkan folder is skipped; without
# GGML_VK_VISIBLE_DEVICES ggml-vulkan skips a device of type CPU ("No devices found") and the model runs
# on the CPU; with both, the device is found, listed and given every layer.
FAKE_OLLAMA = r"""#!/bin/sh
case $1 in
  serve)
    echo "load_backend: loaded CPU backend from /pkg/lib/ollama/libggml-cpu-haswell.so"
    if [ "${OLLAMA_VULKAN:-}" != 1 ]; then
      echo 'msg="experimental Vulkan support disabled.  To enable, set OLLAMA_VULKAN=1"'
      echo 'msg="inference compute" id=cpu library=cpu'
    elif [ "${GGML_VK_VISIBLE_DEVICES:-}" != 0 ] || [ "${VK_DRIVER_FILES:-}" != "$FAKE_ICD" ]; then
      echo "ggml_vulkan: No devices found."
      echo "load_backend: loaded Vulkan backend from /pkg/lib/ollama/vulkan/libggml-vulkan.so"
      echo 'msg="inference compute" id=cpu library=cpu'
    else
      echo 'msg="inference compute" id=6d65 library=Vulkan name=Vulkan0 description="llvmpipe (LLVM 19.1.7)"'
      echo "ggml_vulkan: Found 1 Vulkan devices:"
      echo "ggml_vulkan: 0 = llvmpipe (LLVM 19.1.7, 256 bits) (llvmpipe) | uma: 0 | fp16: 1 | bf16: 0"
      echo "load_backend: loaded Vulkan backend from /pkg/lib/ollama/vulkan/libggml-vulkan.so"
      echo "load_tensors: offloaded ${FAKE_OFFLOADED:-3}/3 layers to GPU"
    fi
    touch "$OLLAMA_MODELS.up"; exec sleep 60 ;;
  list) [ -e "$OLLAMA_MODELS.up" ] ;;
  create) echo success ;;
  run)
    printf 'eval count:           16 token(s)\neval rate:            9.50 tokens/s\n' >&2 ;;
esac
"""


@pytest.fixture
def prefix(tmp_path, monkeypatch):
    root = fake_ollama_prefix(tmp_path, FAKE_OLLAMA)
    monkeypatch.setenv("FAKE_ICD", lavapipe.ICD)
    return root


def run(prefix, runtime_env, **env):
    def exec_env(argv, run_env):
        done = subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", **env, "FAKE_ICD": lavapipe.ICD, **run_env})
        return done.stdout + done.stderr
    return lavapipe.run(exec_env, str(prefix), str(prefix.parent / "tiny.gguf"), runtime_env, limit_s=10)


def test_vulkan_run_on_lavapipe_reports_the_device_and_every_layer_offloaded(prefix):
    result = run(prefix, {"OLLAMA_VULKAN": "1"})
    assert result.device.startswith("llvmpipe (LLVM 19.1.7, 256 bits)")
    assert result.model_run.backend == "Vulkan (libggml-vulkan.so)"
    assert result.model_run.offloaded == (3, 3)
    assert result.env == {"OLLAMA_VULKAN": "1", **lavapipe.SETTINGS}
    assert "llvmpipe" in result.summary() and "3/3 layers on the GPU" in result.summary()
    evidence = result.evidence()
    assert len(evidence) == 3 and evidence[-1] == "load_tensors: offloaded 3/3 layers to GPU"
    assert "library=Vulkan" in evidence[0] and evidence[1].startswith("ggml_vulkan: 0 = llvmpipe")


def test_without_the_packages_runtime_switch_the_vulkan_run_fails_naming_the_cpu():
    # A package whose version gates Vulkan (OLLAMA_VULKAN) and whose runtime env does not set it.
    with pytest.raises(ModelRunError) as failure:
        lavapipe.check(_cpu_run(), {})
    message = str(failure.value)
    assert "found no device" in message and "lists no Vulkan device (inference compute: cpu)" in message
    assert "ran on CPU (libggml-cpu-haswell.so), not on the Vulkan backend" in message


def test_runtime_env_without_lavapipe_settings_finds_no_device(prefix, monkeypatch):
    monkeypatch.setattr(lavapipe, "SETTINGS", {})
    with pytest.raises(ModelRunError) as failure:
        run(prefix, {"OLLAMA_VULKAN": "1"})
    assert "ggml-vulkan found no device (ggml_vulkan: No devices found.)" in str(failure.value)
    assert failure.value.step == "vulkan"


def test_layers_left_on_the_cpu_fail_the_vulkan_run(prefix):
    with pytest.raises(ModelRunError, match=r"2/3 layers offloaded to the Vulkan device, not all"):
        run(prefix, {"OLLAMA_VULKAN": "1"}, FAKE_OFFLOADED="2")


def test_applies_only_to_packages_with_the_vulkan_backend():
    assert lavapipe.applies(["bin/ollama", "lib/ollama/vulkan/libggml-vulkan.so"])
    assert not lavapipe.applies(["bin/ollama", "lib/ollama/rocm/libggml-hip.so"])


def _cpu_run():
    from pipeline.smoke.modelrun import Backend, ModelRun

    return ModelRun(tokens=16, tokens_per_s=300.0, backend="CPU (libggml-cpu-haswell.so)",
                    backends=(Backend("CPU", "libggml-cpu-haswell.so"),), compute=("cpu",), offloaded=None,
                    response="x", server_log="load_backend: loaded CPU backend")
