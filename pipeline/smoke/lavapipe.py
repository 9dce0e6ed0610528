"""The model run on the Vulkan backend where no GPU is: Mesa's software Vulkan driver, lavapipe.

A package with a Vulkan backend (lib/ollama/vulkan/libggml-vulkan.so) is run once more on its floor
with the floor policy's driver_packages installed (mesa-vulkan-drivers), so that verify proves the
backend loads, finds a device, takes the layers and generates, not only that its libraries resolve.
lavapipe shows up as `llvmpipe (LLVM ..., 256 bits)`, device type PHYSICAL_DEVICE_TYPE_CPU. What that
takes, read in upstream's v0.24.0 tree:

- Ollama skips every lib/ollama/vulkan* folder unless OLLAMA_VULKAN=1 (discover/runner.go, v0.12.11 to
  v0.24): the package's own runtime environment (runtime.env_versions) sets it.
- ggml-vulkan (ggml_vk_instance_init) takes every dedicated GPU, else the first device that is not of
  type CPU, and otherwise reports "ggml_vulkan: No devices found.": a CPU device is used only when
  GGML_VK_VISIBLE_DEVICES names it by its index. VK_DRIVER_FILES limits the Vulkan loader to lavapipe's
  driver file, so that index 0 is lavapipe whatever else Mesa installs.
- Ollama's discovery keeps the device the backend reports (it has no device-type filter): it appears
  as `inference compute ... library=Vulkan ... description="llvmpipe ..."` and gets the layers.

    from pipeline.smoke import lavapipe
    if lavapipe.applies(paths):
        run = lavapipe.run(lambda argv, env: box.exec(argv, env=env, capture=True), prefix, model,
                           runtime_env)
        print(run.device, run.model_run.summary())
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from pipeline.errors import ModelRunError
from pipeline.formats import PackageLayout
from pipeline.records import record
from pipeline.smoke import modelrun

# The backend library whose presence asks for this run.
BACKEND = f"{PackageLayout.LIBDIR}/vulkan/libggml-vulkan.so"
# lavapipe's driver file as Mesa's Debian package installs it.
ICD = "/usr/share/vulkan/icd.d/lvp_icd.json"
SETTINGS = {
    # lavapipe is of type CPU: ggml-vulkan takes it only by index.
    "GGML_VK_VISIBLE_DEVICES": "0",
    # Only lavapipe's driver, so that index 0 is lavapipe.
    "VK_DRIVER_FILES": ICD,
    # Flash attention (auto: on where the backend has it) adds the largest shaders to compile on the CPU;
    # with it the runner of v0.24.0 stopped without a message during the first generation on lavapipe.
    "OLLAMA_FLASH_ATTENTION": "0",
}
# ggml-vulkan has lavapipe compile its shaders (LLVM, on the CPU) when a graph first needs them: the first
# generation of the tiny model took 502 s on two shared cores (16 tokens, then 4.5 tokens/s).
LIMIT_S = 1800

_DEVICE = re.compile(r"ggml_vulkan: 0 = (.*)")
_EVIDENCE = re.compile(r"inference compute.*library=Vulkan|ggml_vulkan: 0 = |using device Vulkan"
                       r"|offloaded \d+/\d+ layers to GPU")

ExecEnvFn = Callable[[Sequence[str], Mapping[str, str]], str]


@record(positional=True)
class LavapipeRun:
    device: str                 # ggml-vulkan's line for device 0 ("llvmpipe (LLVM 19.1.7, 256 bits) ...")
    env: Mapping[str, str]      # the environment the server ran with
    model_run: modelrun.ModelRun

    @property
    def device_name(self) -> str:
        return self.device.split(" | ")[0]

    def summary(self) -> str:
        return f"{self.model_run.summary()} (device {self.device_name})"

    def evidence(self) -> list[str]:
        """The server log's lines that show the device found, listed and given the layers."""
        return [line.strip() for line in self.model_run.server_log.splitlines() if _EVIDENCE.search(line)]


def applies(paths: Iterable[str]) -> bool:
    """Whether a package (its files' paths) has the Vulkan backend."""
    return BACKEND in set(paths)


def environment(runtime_env: Mapping[str, str]) -> dict[str, str]:
    """The package's runtime environment (OLLAMA_VULKAN=1 where the version gates Vulkan) and lavapipe's
    settings."""
    return {**runtime_env, **SETTINGS}


def run(exec_fn: ExecEnvFn, prefix: str, model_path: str, runtime_env: Mapping[str, str], *,
        limit_s: int = LIMIT_S) -> LavapipeRun:
    """Serve, import and generate with the Vulkan backend on lavapipe (exec_fn: argv, env -> output);
    raise ModelRunError unless ggml-vulkan found lavapipe, Ollama placed every layer on it and the
    Vulkan backend generated."""
    env = environment(runtime_env)
    result = modelrun.run(lambda argv: exec_fn(argv, env), prefix, model_path, limit_s=limit_s)
    return check(result, env)


def check(result: modelrun.ModelRun, env: Mapping[str, str]) -> LavapipeRun:
    """A finished model run -> LavapipeRun, or ModelRunError saying which proof of the Vulkan device is
    missing from the server log."""
    log = result.server_log
    device = _DEVICE.search(log)
    problems = []
    if not device:
        hint = " (ggml_vulkan: No devices found.)" if "ggml_vulkan: No devices found" in log else ""
        problems.append(f"ggml-vulkan found no device{hint}: is {ICD} installed (mesa-vulkan-drivers)?")
    if "Vulkan" not in result.compute:
        problems.append(f"Ollama's discovery lists no Vulkan device (inference compute: "
                        f"{', '.join(result.compute) or 'none'})")
    if not result.backend.startswith("Vulkan"):
        problems.append(f"the model ran on {result.backend}, not on the Vulkan backend")
    if result.offloaded is None or result.offloaded[0] != result.offloaded[1]:
        where = f"{result.offloaded[0]}/{result.offloaded[1]}" if result.offloaded else "no"
        problems.append(f"{where} layers offloaded to the Vulkan device, not all")
    if problems:
        raise ModelRunError("vulkan", "; ".join(problems), log)
    return LavapipeRun(device=device[1].strip(), env=dict(env), model_run=result)
