"""Smoke test of the training-step benchmark: it runs, and its JSON holds every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import bench

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    cmd = [sys.executable, "-m", "experiments.bench", "--quick", "--threads", "1"]
    cmd += ["--configs", "small,headline", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {"stdout": proc.stdout, "data": json.loads(out.read_text())}


def test_quick_run_reports_every_config_and_model(quick_run):
    data = quick_run["data"]
    pairs = [(r["config"], r["model"]) for r in data["results"]]
    assert pairs == [("small", "rmc"), ("small", "lstm"), ("headline", "rmc"), ("headline", "lstm")]
    assert quick_run["stdout"].count(" steps/s ") == 4


def test_threads_are_set_before_numpy_loads(quick_run):
    meta = quick_run["data"]["meta"]
    assert meta["threads_set_by"] == "env"
    assert set(meta["thread_env"].values()) == {"1"}
    assert meta["dtype"] == "float32" and meta["quick"] is True


def test_figures_are_positive_and_consistent(quick_run):
    engine = quick_run["data"]["engine"]
    assert engine["us_per_op"] > 0 and engine["numpy_us_per_op"] > 0
    for r in quick_run["data"]["results"]:
        ms = r["ms"]
        for phase in ("step", "forward", "backward", "optimizer", "cpu"):
            assert 0 < ms[phase]["min"] <= ms[phase]["median"] <= ms[phase]["max"], phase
        assert ("data" in ms) == (r["config"] == "headline")
        assert r["steps_per_s"] == pytest.approx(1e3 / ms["step"]["median"])
        assert r["gflop_per_step"] > 0 and r["gflops"] > 0
        assert r["ops_per_step"] == sum(r["op_kinds"].values()) > 0
        mem = r["memory"]
        assert mem["drift_steps"] == 3 and mem["step_peak_mib"] > 0 and mem["max_rss_mib"] > 0


def test_recorded_ops_per_step_follow_the_unrolled_graph(quick_run):
    by = {(r["config"], r["model"]): r for r in quick_run["data"]["results"]}
    # the LSTM runs as one fused node, its last output is sliced off for the head and the loss
    lstm = by["small", "lstm"]["op_kinds"]
    assert lstm == {"lstm_sequence": 1, "getitem": 1, "linear": 1, "cross_entropy": 1}
    assert by["headline", "lstm"]["op_kinds"]["linear_relu"] == 2  # the 2 x 128 head
    rmc = by["small", "rmc"]["op_kinds"]
    assert rmc["attention"] == rmc["gate_inputs"] == 10 and rmc["cross_entropy"] == 1


def test_matmul_flops_of_a_linear_layer_count_forward_and_both_gradients():
    import numpy as np

    import tensorgrad as tg
    from models._kernels import linear

    x = tg.Tensor(np.ones((5, 3, 4)), requires_grad=True)
    w = tg.Tensor(np.ones((4, 6)), requires_grad=True)
    y = linear(x, w)
    assert bench.matmul_flops(y) == (2 * 15 * 4 * 6, 2 * 2 * 15 * 4 * 6)
    stats = bench.graph_stats((y @ tg.Tensor(np.ones((6, 2)))).sum())
    # the constant right-hand matrix needs no gradient: its product runs once backward
    assert stats["train_flops"] == 3 * 720 + 2 * 2 * 15 * 6 * 2
    assert stats["ops"] == 3


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        bench.parse_args(["--configs", "huge"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
