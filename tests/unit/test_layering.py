"""The packages of pipeline/ stand in layers: each module imports only its own package and the layers
below it, and no package holds more than a quarter of the code."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).parent
# Bottom to top. Names on one line are side by side: neither imports the other.
LAYERS = (
    ("errors", "hashing", "formats", "records"),  # the ground
    ("config",),  # what is read, typed
    ("infra",),  # mechanism: runner, container, engine, images, log, fsutil, git, archive, templates
    ("closure", "gpu", "smoke", "upstream"),  # subjects, one each
    ("stages",),  # the stage table, the plan, the results and one module per stage
    ("orchestrate",),
    ("tools", "release"),  # maintainer tools; release assembly and publishing
    ("cli",),  # the command line: the one error edge
    ("__main__",),
)
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
SHARE = 0.25


def unit_of(module: str) -> str:
    """`pipeline.stages.build` -> `stages`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@functools.cache
def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every `import x` and `from x import y` in the file, relative ones
    resolved; `from x import y` names x.y where that is a module (`from pipeline import stages`:
    pipeline.stages), else x."""
    known = modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
                      for a in node.names]
    return [(line, name) for line, name in found if name == "pipeline" or name.startswith("pipeline.")]


def test_every_package_and_top_level_module_has_a_layer():
    units = {unit_of(m) for m in modules()} - {""}
    assert units <= set(LEVEL), f"place these in LAYERS: {sorted(units - set(LEVEL))}"


def test_no_module_imports_a_higher_or_a_sibling_package():
    wrong = []
    for module, path in modules().items():
        mine = unit_of(module)
        if not mine:
            continue  # pipeline/__init__.py
        for line, name in imports(module, path):
            theirs = unit_of(name)
            if theirs != mine and not LEVEL[theirs] < LEVEL[mine]:
                wrong.append(f"{path.relative_to(ROOT.parent)}:{line} ({mine}) imports {name} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_ground_imports_nothing_of_the_pipeline():
    for module, path in modules().items():
        if unit_of(module) in LAYERS[0]:
            assert imports(module, path) == [], path


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_package_holds_more_than_a_quarter_of_the_code():
    total = sum(lines(p) for p in modules().values())
    per_unit: dict[str, int] = {}
    for module, path in modules().items():
        per_unit[unit_of(module)] = per_unit.get(unit_of(module), 0) + lines(path)
    big = {u: f"{n / total:.0%}" for u, n in per_unit.items() if n > SHARE * total}
    assert not big, f"packages over {SHARE:.0%} of the {total} lines of pipeline/: {big}"


def test_the_layering_check_sees_both_import_forms(tmp_path):
    """`import pipeline.x` and `from pipeline.x import y`, relative imports and function bodies too."""
    path = tmp_path / "mod.py"
    path.write_text("import pipeline.cli\nfrom pipeline.tools import bench\nfrom pipeline import stages\n"
                    "from pipeline.errors import PipelineError\n"
                    "def f():\n    from ..orchestrate import build_target\n    from . import results\n")
    found = [name for _, name in imports("pipeline.stages.mod", path)]
    assert found == ["pipeline.cli", "pipeline.tools.bench", "pipeline.stages", "pipeline.errors",
                     "pipeline.orchestrate", "pipeline.stages.results"]
