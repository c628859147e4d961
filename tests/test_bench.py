"""``fastact bench``: a tiny --quick run through the CLI entry writes JSON that
validates against the documented schema, a PNG, and consistent records."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastact
from fastact import bench, cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "bench-schema.json"
OPS = ["softmax", "cross_entropy_with_grad"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    tmp = tmp_path_factory.mktemp("bench")
    paths = {"json": tmp / "bench.json", "plot": tmp / "bench.png", "markdown": tmp / "bench.md"}
    code = cli.main(["bench", "--quick", "--shapes", "64x10,3x5", "--ops", ",".join(OPS),
                     "--threads", "1",
                     "--json", str(paths["json"]), "--plot", str(paths["plot"]),
                     "--markdown", str(paths["markdown"]), "--no-progress"])
    assert code == 0
    return json.loads(paths["json"].read_text()), paths


def test_json_validates_against_documented_schema(quick_run):
    jsonschema = pytest.importorskip("jsonschema")
    result, _ = quick_run
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(result, schema, cls=jsonschema.Draft202012Validator)


def test_schema_file_is_the_one_the_code_documents():
    assert json.loads(SCHEMA_FILE.read_text()) == bench.SCHEMA, \
        "regenerate: fastact bench --schema > docs/bench-schema.json"


def test_png_written(quick_run):
    _, paths = quick_run
    data = paths["plot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_records_cover_every_op_backend_and_peer(quick_run):
    result, paths = quick_run
    recs = result["records"]
    assert result["settings"]["ops"] == OPS
    assert result["settings"]["quick"] is True
    shapes = [[64, 10], [3, 5]]
    assert result["settings"]["shapes"] == shapes
    backends = set(fastact.available_backends())
    assert set(result["settings"]["backends"]) == backends
    peers = result["settings"]["peers"]
    skipped = {(s["label"], s["op"]) for s in result["skipped"]}
    for shape in shapes:
        copies = [r for r in recs if r["op"] == "copy" and r["shape"] == shape]
        assert len(copies) == 1
        for op in OPS:
            mine = [r for r in recs if r["op"] == op and r["shape"] == shape]
            labels = {r["label"] for r in mine}
            for b in backends:
                assert b in labels or (b, op) in skipped, (op, shape, b)
            assert "numpy" in labels  # the reference: the baseline of every ratio
            for p in peers:
                if p in bench.OPS[op].peers:
                    assert p in labels or (p, op) in skipped, (op, shape, p)
            for r in mine:
                assert r["median_s"] > 0 and r["min_s"] > 0 and r["first_call_s"] > 0
                assert r["min_s"] <= r["median_s"]
                assert r["repeats"] >= 1 and r["number"] >= 1
                assert r["bytes"] == math.prod(shape) * 4
                assert r["copy_pct"] == pytest.approx(r["copy_s"] / r["median_s"] * 100)
                assert r["speedup_vs_numpy"] > 0
    # every record's ratio is against the reference's time in the same mode
    for r in recs:
        if r["label"] == "numpy":
            assert r["speedup_vs_numpy"] == pytest.approx(1.0)
    # the first calls were timed and checked against the reference
    assert {(f["label"], f["op"]) for f in result["first_calls"]} >= {
        (b, op) for b in backends for op in OPS if (b, op) not in skipped}
    assert all(f["agrees"] for f in result["first_calls"])
    md = paths["markdown"].read_text()
    assert "| op | shape |" in md and result["command"] in md


def test_bad_arguments_exit_2(capsys):
    assert cli.main(["bench", "--ops", "no_such_op"]) == 2
    assert cli.main(["bench", "--shapes", "12"]) == 2
    assert cli.main(["bench", "--threads", "0"]) == 2
    assert cli.main(["bench", "--dtype", "int8"]) == 2
    assert "error" in capsys.readouterr().err


def test_measure_is_bounded_and_positive():
    t = bench.measure(lambda: sum(range(100)), min_time=0.01, min_repeats=3, max_time=0.5)
    assert t.repeats >= 3 and t.number >= 1 and 0 < t.min_s <= t.median_s
    calls = []
    slow = bench.measure(lambda: calls.append(__import__("time").sleep(0.02)),
                          min_time=10, min_repeats=100, max_time=0.05)
    assert 1 <= slow.repeats < 10 and len(calls) < 12


def test_derived_ratios():
    def rec(op, label, impl, mode, t):
        return {"op": op, "shape": [4, 4], "dtype": "float32", "threads": 1, "label": label,
                "impl": impl, "mode": mode, "median_s": t}
    recs = [rec("copy", "copy", "copy", "alloc", 1.0),
            rec("softmax", "numpy", "fastact", "out", 8.0),
            rec("softmax", "numpy", "fastact", "alloc", 10.0),
            rec("softmax", "c", "fastact", "out", 2.0),
            rec("softmax", "c", "fastact", "alloc", 4.0),
            rec("softmax", "scipy", "scipy", "alloc", 5.0),
            rec("softmax", "torch", "torch", "out", 6.0),
            rec("softmax", "torch", "torch", "alloc", 7.0)]
    bench.derive(recs)
    c_out, c_alloc = recs[3], recs[4]
    assert c_out["speedup_vs_numpy"] == pytest.approx(4.0)
    assert c_alloc["speedup_vs_numpy"] == pytest.approx(2.5)
    # best peer: scipy (5, alloc only) beats torch out= (6)
    assert c_out["best_peer"] == "scipy" and c_out["speedup_vs_best_peer"] == pytest.approx(2.5)
    assert c_out["copy_pct"] == pytest.approx(50.0)


def test_case_table():
    for name in ("softmax", "log_softmax", "logsumexp", "softmax_backward",
                 "log_softmax_backward", "cross_entropy", "cross_entropy_with_grad"):
        assert name in bench.available_ops()
    inp = bench.Inputs((5, 7), "float64")
    for name in bench.available_ops():
        op = bench.OPS[name]
        ref = op.fastact_call(inp, "numpy", "alloc")()
        for mode in op.modes:
            got = op.fastact_call(inp, "numpy", mode)()
            assert np.allclose(np.asarray(got[0] if isinstance(got, tuple) else got),
                               np.asarray(ref[0] if isinstance(ref, tuple) else ref))
    assert bench.parse_shapes("standard,3x4") == list(bench.SHAPES) + [(3, 4)]


def test_import_stays_light():
    code = ("import sys, fastact, fastact.cli, fastact.bench; "
            "print(sorted(m for m in ('rich', 'matplotlib', 'torch', 'scipy', 'jax') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_from_json_renders_a_saved_run(quick_run, tmp_path, capsys):
    _, paths = quick_run
    md = tmp_path / "again.md"
    assert cli.main(["bench", "--from-json", str(paths["json"]), "--markdown", str(md)]) == 0
    assert md.read_text() == paths["markdown"].read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli.main(["bench", "--from-json", str(bad)]) == 2
