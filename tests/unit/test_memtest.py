"""memtest: scenario parsing and refusals, the Go driver's input, expectations and the report."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import textwrap
import types
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.errors import ConfigError, SourceError
from pipeline.tools.memtest import driver as mt_driver
from pipeline.tools.memtest import report as mt_reports
from pipeline.tools.memtest import run as mt_workbench
from pipeline.tools.memtest import scenario as mt_scenarios

GIB = 2**30
MIB = 2**20

K80_PAIR = """
description = "12B on two K80 dies"

[gpus]
count = 2
library = "CUDA"
name = "Tesla K80"
total = "12 GiB"
free = "11468 MiB"
compute = "3.7"
driver = "470.82"

[model]
block_count = 48
embedding_length = 3840
feed_forward_length = 15360
head_count = 16
head_count_kv = 8
head_dim = 256
vocab_size = 262144
context_length = 131072
tied_embeddings = true

[options]
num_ctx = 4096

[expect.before]
gpus_used = 2

[expect.after]
gpus_used = 1
layers_on_gpu = ">= 49"
"""


def write(tmp_path: Path, text: str, name: str = "k80x2-12b.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_scenario_is_read_into_frozen_typed_objects(tmp_path):
    s = mt_scenarios.load(write(tmp_path, K80_PAIR))
    assert s.name == "k80x2-12b"
    assert s.gpus[0].free == 11468 * MIB and s.gpus[0].total == 12 * GIB
    assert len(s.gpu_list) == 2
    assert s.model.architecture == "llama" and s.model.quantization == "Q4_K_M" and s.model.head_size == 256
    assert s.options == mt_scenarios.Options(num_ctx=4096)
    assert s.checks == (mt_scenarios.Check("before", "gpus_used", "==", 2),
                        mt_scenarios.Check("after", "gpus_used", "==", 1),
                        mt_scenarios.Check("after", "layers_on_gpu", ">=", 49))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.model.block_count = 1  # type: ignore[misc]


def test_unknown_key_is_refused_with_file_table_key_and_suggestion(tmp_path):
    path = write(tmp_path, edit(K80_PAIR, "embedding_length", "embeding_length"))
    with pytest.raises(ConfigError) as err:
        mt_scenarios.load(path)
    msg = str(err.value)
    assert str(path) in msg and "[model]" in msg and "'embeding_length'" in msg
    assert "did you mean 'embedding_length'?" in msg


def test_unknown_expectation_metric_is_refused_with_suggestion(tmp_path):
    path = write(tmp_path, edit(K80_PAIR, "gpus_used = 1", "gpu_used = 1"))
    with pytest.raises(ConfigError, match=r"\[expect.after\] unknown key 'gpu_used' \(did you mean "
                                          r"'gpus_used'\?\)"):
        mt_scenarios.load(path)


def test_unknown_top_level_table_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'option' \(did you mean 'options'\?\)"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, "[options]", "[option]")))


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = write(tmp_path, edit(K80_PAIR, "num_ctx = 4096", 'num_ctx = "4096"'))
    with pytest.raises(ConfigError, match=r"\[options\] key 'num_ctx' must be an integer, got a string"):
        mt_scenarios.load(path)
    with pytest.raises(ConfigError, match=r"\[gpus\] key 'free' must be a size"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, 'free = "11468 MiB"', 'free = "lots"')))
    with pytest.raises(ConfigError, match=r"\[model\] key 'tied_embeddings' must be true or false, got an "
                                          r"integer"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, "tied_embeddings = true", "tied_embeddings = 1")))


def test_missing_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[model\] missing key 'vocab_size' \(an integer\)"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, "vocab_size = 262144\n", "")))


def test_ollama_engine_architecture_is_refused_with_the_reason(tmp_path):
    path = write(tmp_path, edit(K80_PAIR, "[model]\n", '[model]\narchitecture = "gemma3n"\n'))
    with pytest.raises(ConfigError,
                       match=r"runs on the Ollama engine.*memory its runner reports.*gemma3.*llama"):
        mt_scenarios.load(path)


def test_gemma3_takes_the_create_layout_path(tmp_path):
    s = mt_scenarios.load(write(tmp_path, edit(K80_PAIR, "[model]\n", '[model]\narchitecture = "gemma3"\n')))
    assert s.model.placement == "createLayout"
    data = mt_driver.driver_input(s)
    assert data["placement"] == "createLayout"
    kv = {e["key"]: e["value"] for e in data["kv"]}
    assert kv["general.architecture"] == "gemma3" and kv["gemma3.attention.sliding_window"] == 1024
    pair = mt_scenarios.load(write(tmp_path, K80_PAIR))
    assert mt_driver.driver_input(pair)["placement"] == "estimateGPULayers"


def test_gpu_values_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="must be one of CUDA, ROCm"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, 'library = "CUDA"', 'library = "cuda"')))
    with pytest.raises(ConfigError, match="'compute' of a CUDA GPU must be a compute capability"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, 'compute = "3.7"', 'compute = "gfx906"')))
    with pytest.raises(ConfigError, match=r"'free'.*is more than 'total'"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, 'total = "12 GiB"', 'total = "8 GiB"')))


def test_bad_expectation_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'layers_on_gpu' must be an integer or a comparison"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, '">= 49"', '"about 49"')))
    with pytest.raises(ConfigError, match=r"key 'fits' must be true or false"):
        mt_scenarios.load(write(tmp_path, edit(K80_PAIR, "gpus_used = 2", 'fits = "yes"')))


def test_sizes_and_compute_numbers():
    assert mt_scenarios.parse_size("11.2 GiB", "x") == int(11.2 * GIB)
    assert mt_scenarios.parse_size("457 MiB", "x") == 457 * MIB
    assert mt_scenarios.parse_size("32 GB", "x") == 32 * 10**9
    assert mt_scenarios.parse_size(1024, "x") == 1024
    assert mt_scenarios.compute_numbers("CUDA", "3.7") == (3, 7)
    assert mt_scenarios.compute_numbers("ROCm", "gfx906") == (9, 6)
    assert mt_scenarios.compute_numbers("ROCm", "gfx1103") == (0x11, 3)  # Ollama logs gfx%x%02x


def test_folder_of_scenarios_and_duplicate_names(tmp_path):
    write(tmp_path, K80_PAIR, "b.toml")
    write(tmp_path, K80_PAIR, "a.toml")
    assert [s.name for s in mt_scenarios.load_all([tmp_path])] == ["a", "b"]
    with pytest.raises(ConfigError, match="not found"):
        mt_scenarios.load_all([tmp_path / "missing.toml"])


def test_shipped_scenarios_parse():
    names = [s.name for s in mt_scenarios.load_all([])]
    assert {"k80x2-12b", "k80-4b", "mi50x2-70b", "780m-8b"} <= set(names)


def test_driver_input_describes_a_weightless_gguf(tmp_path):
    data = mt_driver.driver_input(mt_scenarios.load(write(tmp_path, K80_PAIR)))
    kv = {e["key"]: e["value"] for e in data["kv"]}
    assert kv["general.architecture"] == "llama" and kv["llama.block_count"] == 48
    assert kv["llama.attention.key_length"] == 256
    names = {t["name"]: t for t in data["tensors"]}
    assert len(names) == 48 * 9 + 2  # tied: token_embd is the output layer
    assert names["blk.47.ffn_down.weight"] == {"name": "blk.47.ffn_down.weight", "type": "Q6_K",
                                               "shape": [15360, 3840]}
    assert names["token_embd.weight"]["shape"] == [3840, 262144]
    assert [g["id"] for g in data["gpus"]] == ["GPU-0", "GPU-1"]
    assert data["gpus"][0]["compute_major"] == 3 and data["gpus"][0]["driver_major"] == 470
    assert data["num_ctx"] == 4096 and data["num_gpu"] == -1
    json.dumps(data)


def test_explicit_tensors_replace_the_synthesized_ones(tmp_path):
    text = K80_PAIR + textwrap.dedent("""
        [[model.block_tensors]]
        name = "attn_q.weight"
        type = "Q8_0"
        shape = [3840, 4096]
    """)
    data = mt_driver.driver_input(mt_scenarios.load(write(tmp_path, text)))
    assert [t["name"] for t in data["tensors"][:2]] == ["blk.0.attn_q.weight", "blk.1.attn_q.weight"]


def test_each_ref_takes_the_driver_of_its_placement_code():
    assert [mt_scenarios.driver_kind(r) for r in ("v0.12.0", "v0.12.5", "v0.12.10")] == ["estimate"] * 3
    assert [mt_scenarios.driver_kind(r) for r in ("v0.12.11", "v0.14.0", "v0.24.0", "v0.29.9-rc1")] == \
        ["layout"] * 4
    with pytest.raises(ConfigError, match=r"v0.30.0 places layers with llama.cpp's own fit"):
        mt_scenarios.check_ref("v0.30.0")
    with pytest.raises(ConfigError, match=r"v0.11.10 is older"):
        mt_scenarios.check_ref("v0.11.10")


def test_a_gpu_minimum_is_refused_where_the_library_fixes_it(tmp_path):
    s = mt_scenarios.load(write(tmp_path, edit(K80_PAIR, 'driver = "470.82"\n',
                                               'driver = "470.82"\nminimum = "500 MiB"\n')))
    mt_scenarios.check_for_ref([s], "v0.12.5")
    with pytest.raises(ConfigError, match=r"key 'minimum' cannot be set at v0.24.0.*457 MiB"):
        mt_scenarios.check_for_ref([s], "v0.24.0")


def test_driver_is_rendered_for_the_trees_gpu_type():
    old = "func estimateGPULayers(gpus []discover.GpuInfo, f *ggml.GGML, projectors []string) {"
    new = "func estimateGPULayers(gpus []ml.DeviceInfo, f *ggml.GGML, projectors []string) {"
    go_old, go_new = mt_driver.render_estimate(old), mt_driver.render_estimate(new)
    assert "make([]discover.GpuInfo," in go_old and "gpus[i].MinimumMemory = 457" in go_old
    assert "make([]ml.DeviceInfo," in go_new and "g.MinimumMemory()" in go_new
    assert '"github.com/ollama/ollama/ml"' in go_new and "{{" not in go_new
    with pytest.raises(SourceError, match="estimateGPULayers"):
        mt_driver.render_estimate("package llm\n")


SERVER_GO = """
func (s *llmServer) createLayout(systemInfo ml.SystemInfo) {}
func (s *llamaServer) Load(ctx context.Context) {}
func (s *ollamaServer) Load(ctx context.Context) {}
type LoadRequest struct {
\tFlashAttention FA_TYPE
}
"""


def test_layout_driver_follows_the_trees_flash_attention_type():
    old = mt_driver.render_layout(SERVER_GO.replace("FA_TYPE", "bool"))
    new = mt_driver.render_layout(SERVER_GO.replace("FA_TYPE", "ml.FlashAttentionType"))
    assert "lr.FlashAttention = true" in old and "lr.FlashAttention = ml.FlashAttentionEnabled" in new
    assert "s := &llamaServer{llmServer: base, ggml: f}" in new and "{{" not in new
    with pytest.raises(SourceError, match=r"neither bool nor ml.FlashAttentionType"):
        mt_driver.render_layout(SERVER_GO.replace("FA_TYPE", "int"))
    with pytest.raises(SourceError, match=r"no func \(s \*llamaServer\) Load\(.*v0.12.11 to v0.24.x"):
        mt_driver.render_layout(SERVER_GO.replace("func (s *llamaServer) Load(", "func x("))


def test_the_tree_must_have_the_file_its_driver_drives(tmp_path):
    tree = tmp_path / "before"
    (tree / "llm").mkdir(parents=True)
    (tree / "llm" / "server.go").write_text(SERVER_GO.replace("FA_TYPE", "bool"))
    assert "llamaServer" in mt_driver.render_driver(tree, "layout")
    with pytest.raises(SourceError, match=r"before/llm/memory.go is missing.*v0.12.0 to v0.12.10"):
        mt_driver.render_driver(tree, "estimate")


@pytest.mark.skipif(subprocess.run(["which", "gofmt"], capture_output=True).returncode != 0,
                    reason="no gofmt on PATH")
def test_rendered_driver_is_gofmt_clean(tmp_path):
    rendered = [mt_driver.render_estimate(f"func estimateGPULayers(gpus {sig}, f)")
                for sig in ("[]discover.GpuInfo", "[]ml.DeviceInfo")]
    rendered += [mt_driver.render_layout(SERVER_GO.replace("FA_TYPE", fa))
                 for fa in ("bool", "ml.FlashAttentionType")]
    for text in rendered:
        src = tmp_path / "driver_test.go"
        src.write_text(text)
        out = subprocess.run(["gofmt", "-l", "-e", str(src)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout == "", out.stderr


# ---------------------------------------------------------------------------- results and the report

def estimate(split, sizes, graphs, gpus=("GPU-0", "GPU-1")):
    return {"gpus": list(gpus), "minimum": [457 * MIB] * len(gpus), "layers": sum(split),
            "tensor_split": split,
            "gpu_sizes": sizes, "graph_per_gpu": graphs, "graph": max(graphs), "vram": sum(sizes),
            "total": sum(sizes)}


def driver_result(name, split, sizes, graphs, sched_split, sched_sizes):
    return {"name": name, "layers_model": 49, "weights": 7_600_000_000, "kv": 1_610_612_736,
            "graph_partial": 1_378_353_152, "graph_full": 544_000_000,
            "layout": estimate(split, sizes, graphs), "fits": True, "full_fit": True,
            "scheduler": estimate(sched_split, sched_sizes, [544_000_000], gpus=("GPU-0",))}


RESULTS = {
    "before": {"k80x2-12b": driver_result("k80x2-12b", [25, 24], [6_700_000_000, 6_584_195_328],
                                          [1_378_353_152, 1_378_353_152], [49], [10_417_000_000])},
    "after": {"k80x2-12b": driver_result("k80x2-12b", [49, 0], [11_251_776_512, 0], [1_378_353_152, 0],
                                         [49], [10_417_000_000])},
}


@pytest.fixture
def report(tmp_path):
    scenario = mt_scenarios.load(write(tmp_path, K80_PAIR))
    return mt_reports.report([scenario], RESULTS, ref="v0.12.5", commit="3db2e6b" + "0" * 33,
                          patches=["0003-x.patch", "0004-y.patch"])


def test_expectations_are_evaluated_per_side(report):
    checks = report["scenarios"][0]["checks"]
    assert [(c["side"], c["metric"], c["actual"], c["ok"]) for c in checks] == [
        ("before", "gpus_used", 2, True), ("after", "gpus_used", 1, True),
        ("after", "layers_on_gpu", 49, True)]
    assert mt_reports.failed(report) == []


def test_a_failed_expectation_is_reported():
    checks = [mt_scenarios.Check("after", "gpus_used", "==", 2),
              mt_scenarios.Check("before", "vram", "<=", 10 * GIB),
              mt_scenarios.Check("before", "fits", "==", True)]
    sides = {"before": {"gpus_used": 2, "vram": 13 * GIB, "fits": True}, "after": {"gpus_used": 1}}
    assert [c["ok"] for c in mt_reports.evaluate(checks, sides)] == [False, False, True]


def test_report_text_shows_layers_memory_and_graph_per_gpu(report):
    text = mt_reports.render(report)
    assert "upstream v0.12.5 (3db2e6b00000); after = + 0003-x.patch, 0004-y.patch" in text
    assert "2x Tesla K80 (CUDA 3.7, 11.20 GiB of 12.00 GiB free)" in text
    lines = text.splitlines()
    before = next(line for line in lines if line.strip().startswith("before") and "GPU-0" in line)
    assert before.split() == ["before", "GPU-0", "25", "6.24", "GiB", "1.28", "GiB"]
    after_gpu1 = lines[lines.index(next(line for line in lines if line.strip().startswith("after")
                                        and "GPU-0" in line)) + 1]
    assert after_gpu1.split() == ["GPU-1", "0", "0.00", "GiB", "0.00", "GiB"]
    assert "before  layers 49/49 on GPU, 12.37 GiB VRAM, fits: yes, GPUs used: 2" in text
    assert "after   layers 49/49 on GPU, 10.48 GiB VRAM, fits: yes, GPUs used: 1" in text
    assert "scheduler (fewest GPUs that fit): 1 (GPU-0)" in text
    assert "expect  after gpus_used == 1: ok (got 1)" in text


def test_report_json_round_trips(report):
    data = json.loads(json.dumps(report))
    row = data["scenarios"][0]
    assert row["before"]["per_gpu"][1] == {"gpu": "GPU-1", "layers": 24, "memory": 6_584_195_328,
                                           "graph": 1_378_353_152, "reserved": None}
    assert row["after"]["gpus_used"] == 1 and row["before"]["gpus_used"] == 2
    assert row["options"]["num_ctx"] == 4096


def test_unknown_graph_split_renders_as_question_mark(report):
    est = RESULTS["before"]["k80x2-12b"]["layout"]
    result = {**RESULTS["before"]["k80x2-12b"], "layout": {**est, "graph_per_gpu": None}}
    assert [g["graph"] for g in mt_reports.summarize(result)["per_gpu"]] == [None, None]
    assert mt_reports.gib(None) == "?"


def test_cli_refuses_an_unsupported_ref_before_any_work(tmp_path, capsys):
    assert cli.main(["memtest", "--ref", "v0.30.0", str(write(tmp_path, K80_PAIR))]) == 2
    assert "v0.12.0 to v0.24.x" in capsys.readouterr().err


def test_cli_reports_a_bad_scenario(tmp_path, capsys):
    path = write(tmp_path, edit(K80_PAIR, "num_ctx = 4096", "num_ctxx = 4096"))
    assert cli.main(["memtest", "--ref", "v0.12.5", str(path)]) == 2
    assert "did you mean 'num_ctx'?" in capsys.readouterr().err


def test_unknown_target_is_refused_before_any_export(settings, log):
    with pytest.raises(ConfigError, match=r"unknown target 'sm37' \(did you mean 'sm_37'\?\)"):
        mt_workbench.run(settings, log, [], "v0.12.5", targets=["sm37"])


def test_host_go_without_go_on_path_is_refused(settings, log, monkeypatch):
    monkeypatch.setattr(mt_workbench.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="--host-go: no `go` on PATH"):
        mt_workbench.run(settings, log, [], "v0.12.5", host_go=True)


def test_report_names_the_placement_path_and_the_go_warnings(tmp_path):
    scenario = mt_scenarios.load(write(tmp_path, K80_PAIR))
    results = {side: {"k80x2-12b": dict(r["k80x2-12b"])} for side, r in RESULTS.items()}
    results["after"]["k80x2-12b"]["warnings"] = ["invalid OLLAMA_GRAPH_SECONDARY_RATIO value=abc"]
    rep = mt_reports.report([scenario], results, ref="v0.12.5", commit="3db2e6b" + "0" * 33, patches=[])
    assert rep["scenarios"][0]["before"]["placement"] == "estimateGPULayers"
    assert rep["scenarios"][0]["after"]["warnings"] == ["invalid OLLAMA_GRAPH_SECONDARY_RATIO value=abc"]
    text = mt_reports.render(rep)
    assert "placement path: estimateGPULayers (llm/memory.go, llama engine)" in text
    assert "after   Go warning: invalid OLLAMA_GRAPH_SECONDARY_RATIO value=abc" in text
    results["before"]["k80x2-12b"]["placement"] = results["after"]["k80x2-12b"]["placement"] = "createLayout"
    text = mt_reports.render(mt_reports.report([scenario], results, ref="v0.12.5", commit="0" * 40,
                                               patches=[]))
    assert ("placement path: createLayout (llm/server.go, Ollama engine) from a synthesized runner memory "
            "report") in text


def test_graph_secondary_is_the_graph_beyond_the_largest_one():
    rows = [{"layers": 20, "graph": 1300, "reserved": 400}, {"layers": 29, "graph": 340, "reserved": 1350},
            {"layers": 0, "graph": 0, "reserved": 0}]
    assert mt_reports.graph_secondary(rows) == 340
    # createLayout: what it reserved itself, not the report's graph
    assert mt_reports.graph_secondary(rows, "createLayout") == 400
    assert mt_reports.graph_secondary(rows[:1]) == 0
    assert mt_reports.graph_secondary([{"layers": 1, "graph": None, "reserved": None}, *rows]) is None


def test_an_unknown_metric_value_fails_its_expectation():
    check = mt_scenarios.Check("before", "graph_secondary", "<=", 400 * MIB)
    [result] = mt_reports.evaluate([check], {"before": {"graph_secondary": None}})
    assert result["ok"] is False and result["actual"] is None


def test_create_layout_rows_show_what_create_layout_reserved(tmp_path):
    scenario = mt_scenarios.load(write(tmp_path, K80_PAIR))
    results = {side: {"k80x2-12b": json.loads(json.dumps(r["k80x2-12b"]))} for side, r in RESULTS.items()}
    for side in results:
        res = results[side]["k80x2-12b"]
        res["placement"] = "createLayout"
        res["layout"]["tensor_split"] = [29, 20]
        res["layout"]["graph_per_gpu"] = [340 * MIB, 1300 * MIB]
        res["layout"]["reserved_graph"] = [384 * MIB, -1]
    rep = mt_reports.report([scenario], results, ref="v0.12.5", commit="0" * 40, patches=[])
    gpus = rep["scenarios"][0]["before"]["per_gpu"]
    assert [g["reserved"] for g in gpus] == [384 * MIB, None]
    assert rep["scenarios"][0]["before"]["graph_secondary"] is None  # one GPU's reservation unknown
    text = mt_reports.render(rep)
    header = next(line for line in text.splitlines() if line.split()[:1] == ["GPU"])
    assert header.split()[-1] == "reserved" and "0.38 GiB" in text


# ------------------------------------------------------------------------------ binary cache and lock

def test_cache_key_changes_with_every_input():
    base = mt_workbench.cache_key("a" * 40, [("0003.patch", b"x")], b"driver", "builder img:1")
    assert base == mt_workbench.cache_key("a" * 40, [("0003.patch", b"x")], b"driver", "builder img:1")
    assert len({base,
                mt_workbench.cache_key("b" * 40, [("0003.patch", b"x")], b"driver", "builder img:1"),
                mt_workbench.cache_key("a" * 40, [("0003.patch", b"y")], b"driver", "builder img:1"),
                mt_workbench.cache_key("a" * 40, [("0004.patch", b"x")], b"driver", "builder img:1"),
                mt_workbench.cache_key("a" * 40, [], b"driver", "builder img:1"),
                mt_workbench.cache_key("a" * 40, [("0003.patch", b"x")], b"driver2", "builder img:1"),
                mt_workbench.cache_key("a" * 40, [("0003.patch", b"x")], b"driver", "builder img:2")}) == 7
    two = [("0003.patch", b"x"), ("0004.patch", b"y")]
    assert mt_workbench.cache_key("a" * 40, two, b"d", "t") \
        != mt_workbench.cache_key("a" * 40, two[::-1], b"d", "t")


def test_a_second_memtest_waits_for_the_lock(tmp_path, log):
    import threading
    import time

    lock = tmp_path / "memtest" / "lock"
    order: list[str] = []

    def another():
        with mt_workbench.locked(lock, log):
            order.append("second")

    with mt_workbench.locked(lock, log):
        assert lock.read_text() == str(os.getpid())
        second = threading.Thread(target=another)
        second.start()
        time.sleep(0.3)
        order.append("first done")
    second.join(5)
    assert order == ["first done", "second"]
    assert "waiting for another memtest" in log.path.read_text()


def test_a_second_run_reuses_the_test_binaries(settings, log, monkeypatch, tmp_path):
    compiled: list[str] = []
    kinds: list[str] = []

    def compile_(tree, binary, *args, kind, **kw):
        compiled.append(tree.name)
        kinds.append(kind)
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_bytes(b"binary")

    def execute(folder, binaries, inputs, *args):
        assert all(b.is_file() for b in binaries.values())
        result = {"name": "s", "layers_model": 1, "fits": True, "full_fit": True, "weights": 0, "kv": 0,
                  "graph_partial": 0, "graph_full": 0,
                  "layout": {"layers": 1, "tensor_split": [1], "gpu_sizes": [1], "gpus": ["GPU-0"], "vram": 1,
                             "total": 1},
                  "scheduler": {"layers": 1, "tensor_split": [1], "gpu_sizes": [1], "gpus": ["GPU-0"],
                                "vram": 1,
                                "total": 1}}
        return {side: {"s": result} for side in binaries}

    patch = tmp_path / "0003.patch"
    patch.write_text("diff")
    monkeypatch.setattr(mt_workbench.patchtool, "repository", lambda *a: tmp_path)
    monkeypatch.setattr(mt_workbench.git, "commit_of", lambda *a: "c" * 40)
    monkeypatch.setattr(mt_workbench.git, "export", lambda gitdir, commit, tree,
                        log: tree.mkdir(parents=True))
    monkeypatch.setattr(mt_workbench.gobox, "builder_image", lambda *a: "builder:1")
    monkeypatch.setattr(mt_workbench.patchtool, "in_range",
                        lambda *a: [types.SimpleNamespace(name="0003.patch", path=patch)])
    monkeypatch.setattr(mt_workbench.patchtool, "apply",
                        lambda m, s, ref, tree, *a: tree.mkdir(parents=True) or ["0003.patch"])
    monkeypatch.setattr(mt_workbench, "_compile", compile_)
    monkeypatch.setattr(mt_workbench, "_execute", execute)

    first = mt_workbench.run(settings, log, [], "v0.12.5")
    assert compiled == ["before", "after"] and first["patches"] == ["0003.patch"]
    second = mt_workbench.run(settings, log, [], "v0.12.5")
    assert compiled == ["before", "after"] and second["patches"] == ["0003.patch"]
    patch.write_text("diff changed")  # a changed patch: only the patched side compiles again
    mt_workbench.run(settings, log, [], "v0.12.5")
    assert compiled == ["before", "after", "after"]
    assert len(list((settings.cache / "memtest" / "bin").glob("*.test"))) == 3
    # Another ref compiles with the driver of its placement code, under other keys
    rep = mt_workbench.run(settings, log, [], "v0.24.0")
    assert compiled[3:] == ["before", "after"] and kinds == ["estimate"] * 3 + ["layout"] * 2
    assert rep["driver"] == "memtest_layout_driver_test.go.j2"


# ---------------------------------------------------------------------------- v0.12.11 and later

VERSIONED = K80_PAIR.replace("""[expect.before]
gpus_used = 2
""", """[expect.before]
layers_on_gpu = 49

[[expect.versions]]
versions = "<0.12.11"
before = { gpus_used = 2 }

[[expect.versions]]
versions = ">=0.12.11"
before = { gpus_used = 1 }
""")


def test_versioned_expectations_hold_only_at_their_versions(tmp_path):
    s = mt_scenarios.load(write(tmp_path, VERSIONED))
    assert [(c.side, c.metric, c.value, c.versions) for c in s.checks if c.metric == "gpus_used"] == [
        ("after", "gpus_used", 1, ""), ("before", "gpus_used", 2, "<0.12.11"),
        ("before", "gpus_used", 1, ">=0.12.11")]
    for ref, used in (("v0.12.5", 2), ("v0.24.0", 1)):
        rep = mt_reports.report([s], RESULTS, ref=ref, commit="c" * 40, patches=[])
        checks = rep["scenarios"][0]["checks"]
        skipped = [c for c in checks if c["ok"] is None]
        assert len(skipped) == 1 and skipped[0]["value"] != used
        # RESULTS has upstream on two GPUs: only the v0.12.x expectation holds
        assert bool(mt_reports.failed(rep)) == (ref == "v0.24.0")
        assert "not for this version (versions " in mt_reports.render(rep)


def test_versioned_expectations_are_checked(tmp_path):
    for bad, message in (
            ('versions = "0.12"', r"\[expect.versions\] #1 key 'versions' must be a version specifier"),
            ('versions = ">=0.12.11"\nside = 1', r"\[expect.versions\] #1 unknown key 'side'"),
            ('versions = ">=0.12.11"', r"\[expect.versions\] #1 has no before or after"),
    ):
        text = K80_PAIR + f"\n[[expect.versions]]\n{bad}\n"
        with pytest.raises(ConfigError, match=message):
            mt_scenarios.load(write(tmp_path, text))
    text = K80_PAIR + '\n[[expect.versions]]\nversions = ">=0.12.11"\nbefore = { gpus = 1 }\n'
    with pytest.raises(ConfigError, match=r"#1 before unknown key 'gpus' \(did you mean 'gpus_used'"):
        mt_scenarios.load(write(tmp_path, text))


def test_load_paths_count_what_create_layout_reserved(tmp_path):
    s = mt_scenarios.load(write(tmp_path, K80_PAIR))
    results = json.loads(json.dumps(RESULTS))
    for side, reserved in (("before", [1.1 * GIB, 1.1 * GIB]), ("after", [0.58 * GIB, 1.1 * GIB])):
        r = results[side]["k80x2-12b"]
        r["placement"] = "llamaServer.Load"
        r["layout"]["tensor_split"] = [41, 40] if side == "before" else [25, 56]
        r["layout"]["reserved_graph"] = [int(x) for x in reserved]
        r["scheduler"] = r["layout"]
    rep = mt_reports.report([s], results, ref="v0.24.0", commit="c" * 40, patches=["0010.patch"],
                            driver="memtest_layout_driver_test.go.j2")
    row = rep["scenarios"][0]
    assert row["before"]["graph_secondary"] == int(1.1 * GIB)
    assert row["after"]["graph_secondary"] == int(0.58 * GIB)
    text = mt_reports.render(rep)
    assert "placement path: llamaServer.Load (llm/server.go, llama engine)" in text
    assert "reserved" in text.splitlines()[6] and "Load chose the GPUs itself" in text
    assert text.splitlines()[0].endswith("driver memtest_layout_driver_test.go.j2")


def test_builders_go_follows_the_ref(settings):
    from pipeline.config.targets import load
    from pipeline.tools import gobox
    matrix = load(settings.targets_file)
    assert gobox.go_env(matrix, "v0.12.5") == {}
    assert gobox.go_env(matrix, "v0.24.0")["PATH"].startswith("/opt/go1.26/bin:")


def test_host_go_older_than_go_mod_is_refused(tmp_path, log, monkeypatch):
    (tmp_path / "go.mod").write_text("module github.com/ollama/ollama\n\ngo 1.26.0\n")
    out = types.SimpleNamespace(stdout=b"go1.24.7\n")
    monkeypatch.setattr(mt_workbench.runner, "run", lambda *a, **kw: out)
    with pytest.raises(ConfigError, match=r"go1.24.7 is older than the go 1.26.0 the tree's go.mod needs"):
        mt_workbench._check_host_go(tmp_path, log)
    out.stdout = b"go1.26.8\n"
    mt_workbench._check_host_go(tmp_path, log)
