"""Patch 0012 (the glslc feature-test shaders of ggml-vulkan) against the Vulkan builder's real glslc.

ggml-vulkan's CMakeLists.txt (v0.12.6 - v0.24) turns GGML_VULKAN_<X>_GLSLC_SUPPORT off only when glslc
fails a probe with "extension not supported: <extension>"; any other outcome, "cannot open input file"
for the probes Ollama's tree lacks included, turns it on. The probes the patch adds must therefore
compile where glslc has the extension and fail with exactly that message where it does not: trixie's
glslang 15.1 has no GL_EXT_bfloat16, which is what left the bf16 shaders unbuilt and
libggml-vulkan.so with undefined symbols.
"""

from __future__ import annotations

import re
import subprocess

from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.infra.container import Container
from pipeline.infra.log import Log

from .conftest import PROJECT

PATCH = PROJECT / "patches" / "0012-vulkan-restore-glslc-feature-tests.patch"
FEATURES = "ml/backend/ggml/ggml/src/ggml-vulkan/vulkan-shaders/feature-tests"
# CMake's probe, as ggml-vulkan's test_shader_extension_support runs it (v0.24.0, CMakeLists.txt).
PROBE = r"""
cd /src/{features}
for f in *.comp; do
  ext=$(sed -n 's/^#extension \([A-Za-z0-9_]*\) : require$/\1/p' "$f")
  err=$(glslc -o - -fshader-stage=compute --target-env=vulkan1.3 "$f" 2>&1 >/dev/null)
  echo "$f $ext rc=$? $(printf '%s' "$err" | tr '\n' ' ')"
done
glslc -o - -fshader-stage=compute --target-env=vulkan1.3 missing.comp 2>&1 >/dev/null | tr '\n' ' '
"""


def test_feature_test_shaders_tell_what_the_vulkan_builders_glslc_supports(engine, settings_for, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "apply", str(PATCH)], check=True)
    settings = settings_for(PROJECT / "targets.toml")
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["vulkan"], settings)
    with Log("probes", tmp_path / "probes.log") as log:
        image = orchestrate.results_of(plan, settings, log, ["builder"])["builder"].tag
        with Container(image, log, mounts=[Mount("/src", str(src), type="bind", read_only=True)]) as box:
            out = box.exec(["sh", "-c", PROBE.format(features=FEATURES)], capture=True)
    print(out)
    *probes, missing = out.strip().splitlines()
    results = {line.split()[0]: line for line in probes}
    assert sorted(results) == ["bfloat16.comp", "coopmat.comp", "coopmat2.comp", "integer_dot.comp"]
    for line in results.values():
        _, ext, rc, *err = line.split()
        assert re.fullmatch(r"GL_[A-Z]+_[a-z0-9_]+", ext), line
        # Either glslc has it (the probe compiles) or it says so in the words CMake looks for.
        assert rc == "rc=0" or f"extension not supported: {ext}" in " ".join(err), line
    # trixie's glslang 15.1 lacks GL_EXT_bfloat16: the switch the backend and shader generator share goes off.
    assert "extension not supported: GL_EXT_bfloat16" in results["bfloat16.comp"]
    # Without the probes (Ollama's tree as synced) glslc's complaint never matches: CMake turns it on.
    assert "extension not supported" not in missing and "missing.comp" in missing
