"""The memory workbench's report: each side of each scenario in the report's terms, the expectations
evaluated, and the text rendering."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.tools.memtest.scenario import Check, Gpu, Scenario

# Placements whose graph beyond the output GPU's is what createLayout reserved (its own accounting, taken
# from its log) rather than the graph of the estimate or of the memory record: llamaServer.Load's
# over-reservation happens in its layout loop and its memory record holds graphSize afterwards.
RESERVED = ("createLayout", "llamaServer.Load", "ollamaServer.Load")


def summarize(result: Mapping[str, Any]) -> dict:
    """One side of one scenario in the report's terms, from the driver's result."""
    def gpus(est: Mapping[str, Any]) -> list[dict]:
        graphs = est.get("graph_per_gpu") or [None] * len(est["gpus"])
        reserved = est.get("reserved_graph") or [None] * len(est["gpus"])
        return [{"gpu": gid, "layers": n, "memory": size, "graph": graph,
                 "reserved": None if r is None or r < 0 else r}
                for gid, n, size, graph, r in zip(est["gpus"], est["tensor_split"], est["gpu_sizes"], graphs,
                                                  reserved)]

    layout, sched = result["layout"], result["scheduler"]
    per_gpu = gpus(layout)
    return {
        "placement": result.get("placement", "estimateGPULayers"),
        "warnings": list(result.get("warnings") or []),
        "layers_model": result["layers_model"],
        "layers_on_gpu": layout["layers"],
        "gpus_used": sum(1 for n in layout["tensor_split"] if n > 0),
        "fits": result["fits"],
        "vram": layout["vram"],
        "total": layout["total"],
        "per_gpu": per_gpu,
        "graph_secondary": graph_secondary(per_gpu, result.get("placement", "estimateGPULayers")),
        "scheduler_gpus": sum(1 for n in sched["tensor_split"] if n > 0),
        "scheduler": {"full_fit": result["full_fit"], "layers_on_gpu": sched["layers"], "vram": sched["vram"],
                      "per_gpu": gpus(sched)},
        "model": {"weights": result["weights"], "kv": result["kv"], "graph_partial": result["graph_partial"],
                  "graph_full": result["graph_full"]},
    }


def graph_secondary(per_gpu: Sequence[Mapping[str, Any]], placement: str = "estimateGPULayers") -> int | None:
    """The graph reserved on the GPUs holding layers, less the largest one (None when not known). For
    createLayout and the Load paths of v0.12.11 on, what createLayout itself reserved (its accounting), not
    the runner report or memory record."""
    key = "reserved" if placement in RESERVED else "graph"
    graphs = [g[key] for g in per_gpu if g["layers"] > 0]
    if any(g is None for g in graphs):
        return None
    return sum(graphs) - max(graphs, default=0)


def evaluate(checks: Sequence[Check], sides: Mapping[str, Mapping[str, Any]], ref: str = "") -> list[dict]:
    """Each check against its side; one scoped to other upstream versions than `ref` is listed with
    ok None (not for this version)."""
    out = []
    for c in checks:
        if ref and not c.holds_for(ref):
            out.append({"side": c.side, "metric": c.metric, "op": c.op, "value": c.value, "actual": None,
                        "ok": None, "versions": c.versions})
            continue
        actual = sides[c.side][c.metric]
        if actual is None:  # not known for this side: the expectation cannot hold
            out.append({"side": c.side, "metric": c.metric, "op": c.op, "value": c.value, "actual": None,
                        "ok": False})
            continue
        ok = {"==": actual == c.value, "!=": actual != c.value, ">=": actual >= c.value,
              "<=": actual <= c.value, ">": actual > c.value, "<": actual < c.value}[c.op]
        out.append({"side": c.side, "metric": c.metric, "op": c.op, "value": c.value, "actual": actual,
                    "ok": ok, **({"versions": c.versions} if c.versions else {})})
    return out


def report(scenarios: Sequence[Scenario], results: Mapping[str, Mapping[str, Any]], *, ref: str, commit: str,
           patches: Sequence[str], driver: str = "") -> dict:
    rows = []
    for s in scenarios:
        sides = {side: summarize(results[side][s.name]) for side in ("before", "after")}
        rows.append({"name": s.name, "file": str(s.path), "description": s.description,
                     "gpus": [_gpu_label(g) for g in s.gpus],
                     "options": dataclasses.asdict(s.options), **sides,
                     "checks": evaluate(s.checks, sides, ref)})
    return {"ref": ref, "commit": commit, "patches": list(patches), "driver": driver, "scenarios": rows}


def failed(rep: Mapping[str, Any]) -> list[str]:
    return [f"{s['name']}: {c['side']} {c['metric']} {c['op']} {_value(c['metric'], c['value'])} "
            f"(got {_value(c['metric'], c['actual'])})"
            for s in rep["scenarios"] for c in s["checks"] if c["ok"] is False]


def _gpu_label(g: Gpu) -> str:
    return (f"{g.count}x {g.name or g.library} ({g.library} {g.compute}, {gib(g.free)} of {gib(g.total)} free"
            f"{', integrated' if g.integrated else ''})")


def _path_label(placement: str) -> str:
    if placement == "createLayout":
        return ("createLayout (llm/server.go, Ollama engine) from a synthesized runner memory report: per "
                "GPU the weights and cache of its layers, the whole graph on the GPU with the output layer, "
                "the per-layer graph on the others (graph: the report's; reserved: what createLayout "
                "subtracted for it, by its own accounting, to 0.1 GiB)")
    if placement == "llamaServer.Load":
        return ("llamaServer.Load (llm/server.go, llama engine): its own layout loop over createLayout with "
                "the memory it synthesizes from the model (graph: its memory record after Load; reserved: "
                "what createLayout reserved for the graph in its last pass, to 0.1 GiB)")
    if placement == "ollamaServer.Load":
        return ("ollamaServer.Load (llm/server.go, Ollama engine): the runner protocol (fit, alloc, commit) "
                "against a fake runner that reports memory synthesized from the shapes and fails an "
                "allocation that does not fit (graph: the report's; reserved: what createLayout reserved, "
                "to 0.1 GiB)")
    return "estimateGPULayers (llm/memory.go, llama engine)"


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB"


def _value(metric: str, v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return gib(v) if metric in ("vram", "graph_secondary") else str(v)


def render(rep: Mapping[str, Any]) -> str:
    """The report as text: per scenario and side, the layout over every GPU, then the checks."""
    lines = [f"upstream {rep['ref']} ({rep['commit'][:12]}); after = + "
             f"{', '.join(rep['patches']) or 'no patch'}"
             + (f"; driver {rep['driver']}" if rep.get("driver") else "")]
    for s in rep["scenarios"]:
        o = s["options"]
        lines += ["", f"{s['name']}: {s['description']}".rstrip(": "),
                  f"  placement path: {_path_label(s['after']['placement'])}",
                  f"  GPUs: {'; '.join(s['gpus'])}",
                  f"  num_ctx {o['num_ctx']}, num_batch {o['num_batch']}, num_parallel {o['num_parallel']}, "
                  f"num_gpu {o['num_gpu']}"]
        layout = s["after"]["placement"] in RESERVED
        loads = s["after"]["placement"].endswith(".Load")
        # createLayout: the graph of the runner report it was given, and what it reserved from it
        table = [("", "GPU", "layers", "memory", "graph") + (("reserved",) if layout else ())]
        for side in ("before", "after"):
            for i, g in enumerate(s[side]["per_gpu"]):
                table.append((side if i == 0 else "", g["gpu"], str(g["layers"]), gib(g["memory"]),
                              gib(g["graph"]))
                             + ((gib(g.get("reserved")),) if layout else ()))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines += ["  " + "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                                   enumerate(zip(row, widths))).rstrip() for row in table]
        for side in ("before", "after"):
            r = s[side]
            sched = r["scheduler"]
            picked = [g["gpu"] for g in sched["per_gpu"] if g["layers"] > 0]
            head = (f"  {side:6}  layers {r['layers_on_gpu']}/{r['layers_model']} on GPU, "
                    f"{gib(r['vram'])} VRAM, fits: {'yes' if r['fits'] else 'no'}, GPUs used: "
                    f"{r['gpus_used']}, graph beyond the output GPU's: {gib(r.get('graph_secondary'))}")
            if loads:  # the scheduler hands Load every GPU; createLayout tries one GPU, then two, ...
                lines.append(f"{head}; Load chose the GPUs itself")
            else:
                lines.append(f"{head}; scheduler (fewest GPUs that fit): {len(picked)} "
                             f"({', '.join(picked) or 'none'}), {sched['layers_on_gpu']} layers, "
                             f"{gib(sched['vram'])}")
        for side in ("before", "after"):
            for w in s[side]["warnings"]:
                lines.append(f"  {side:6}  Go warning: {w}")
        for c in s["checks"]:
            what = f"  expect  {c['side']} {c['metric']} {c['op']} {_value(c['metric'], c['value'])}"
            if c["ok"] is None:
                lines.append(f"{what}: not for this version (versions {c['versions']})")
            else:
                scope = f" (versions {c['versions']})" if c.get("versions") else ""
                lines.append(f"{what}{scope}: {'ok' if c['ok'] else 'FAILED'} "
                             f"(got {_value(c['metric'], c['actual'])})")
    return "\n".join(lines)
