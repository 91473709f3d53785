"""The main job end to end (--tiny), its options, matched budgets and reproducibility."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments import compare
from experiments.plan import full_plan, quick_plan, tiny_plan
from experiments.runner import build_model, load_task_data, make_job, run_job
from experiments.study import _babi_dir

FIGURE_EXTS = (".png", ".svg", ".dot")
BABI_DIR = Path(os.environ.get("BABI_DIR", compare.DEFAULT_BABI))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    status = compare.main(["--tiny", "--out", str(out)])
    return status, out


def test_tiny_run_learns_and_writes_everything(tiny_run):
    status, out = tiny_run
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {p.key for p in tiny_plan()}
    for key, task in results["tasks"].items():
        assert set(task["models"]) == {"lstm", "rmc"}
        for kind, model in task["models"].items():
            # easy tasks: both models well above chance after a few hundred steps
            assert model["test_acc"]["mean"] > task["chance"] + 0.1, (key, kind)
            assert abs(model["params"] - model["rmc_params"]) <= 0.1 * model["rmc_params"]

    report = (out / "report.md").read_text()
    assert "## The paper's claims at this scale" in report
    figures = sorted((out / "figures").iterdir())
    assert {f.suffix for f in figures} == set(FIGURE_EXTS)
    for f in figures:
        assert f.stat().st_size > 0, f
        assert f"figures/{f.name}" in report, f"{f.name} is not linked from the report"
    for stem in (
        "accuracy",
        "curves_all",
        "convergence",
        "sample_efficiency",
        "harder",
        "rmc_step_graph",
        "gradient_flow_nth_farthest_k2",
        "memory_pair_matching",
    ):
        if stem == "rmc_step_graph" and shutil.which("dot") is None:
            continue  # without graphviz the step graph is written as DOT text only
        assert (out / "figures" / f"{stem}.png").exists(), stem
        assert (out / "figures" / f"{stem}.svg").exists(), stem
    assert (out / "figures" / "rmc_step_graph.dot").read_text().startswith("digraph")


def test_tiny_run_metrics_have_one_line_per_evaluation(tiny_run):
    _, out = tiny_run
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    keys = {
        "task",
        "model",
        "seed",
        "step",
        "loss",
        "train_acc",
        "val_acc",
        "lr",
        "grad_norm",
        "elapsed",
    }
    assert lines and all(keys <= set(rec) for rec in lines)
    results = json.loads((out / "results.json").read_text())
    for key, task in results["tasks"].items():
        for kind, model in task["models"].items():
            steps = [r["step"] for r in lines if r["task"] == key and r["model"] == kind]
            assert steps == [h["step"] for h in model["runs"][0]["history"]]


def test_resume_skips_finished_runs_and_gives_the_same_numbers(tiny_run, capsys):
    _, out = tiny_run
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert compare.main(["--tiny", "--out", str(out), "--resume"]) == 0
    assert "8 runs (8 already done)" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    for key, task in first["tasks"].items():
        for kind, model in task["models"].items():
            other = again["tasks"][key]["models"][kind]
            assert model["test_acc"] == other["test_acc"]
            assert model["runs"][0]["history"] == other["runs"][0]["history"]


def test_same_seed_gives_the_same_numbers(tmp_path):
    plan = tiny_plan()[1]
    job = make_job(plan, "rmc", 3, str(tmp_path / "a"), None)
    a = run_job(job, log=lambda line: None)
    b = run_job({**job, "out": str(tmp_path / "b")}, log=lambda line: None)
    assert a["test_acc"] == b["test_acc"] and a["predictions"] == b["predictions"]
    strip = [{k: v for k, v in h.items() if k != "elapsed"} for h in a["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "elapsed"} for h in b["history"]]
    c = run_job({**job, "seed": 4, "out": str(tmp_path / "c")}, log=lambda line: None)
    assert c["history"][-1]["loss"] != a["history"][-1]["loss"]


def test_parameter_counts_match_within_ten_percent_on_every_quick_task():
    for plan in quick_plan():
        if plan.task.startswith("babi_qa"):
            continue  # sizes come from the bAbI files; covered when they are present
        data = load_task_data(plan, 0)
        counts = {}
        for kind in ("rmc", "lstm", "rrnn"):
            _, info = build_model(kind, plan, data.meta.input_size, data.meta.num_classes, 0)
            counts[kind] = info["params"]
        for n in counts.values():
            assert abs(n - counts["rmc"]) <= 0.1 * counts["rmc"], (plan.key, counts)


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        compare.parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--tasks",
        "--seeds",
        "--steps",
        "--babi-dir",
        "--full",
        "--tiny",
        "--threads",
        "--workers",
        "--resume",
        "--scheduler",
    ):
        assert option in text, option


def test_step_and_seed_options_are_checked():
    args = compare.parse_args(["--steps", "0.5x", "--seeds", "3,4"])
    assert (args.step_factor, args.step_count, args.seed_list) == (0.5, None, (3, 4))
    assert compare.parse_args(["--steps", "300"]).step_count == 300
    assert compare.parse_args([]).out == str(Path("runs") / "quick")
    for bad in (["--steps", "ten"], ["--seeds", "1,1"], ["--full", "--tiny"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_the_scheduler_address_is_checked_before_anything_runs(capsys):
    assert compare.parse_args(["--scheduler", "10.1.2.3:8786"]).scheduler == "tcp://10.1.2.3:8786"
    with pytest.raises(SystemExit) as info:
        compare.parse_args(["--scheduler", "10.1.2.3"])
    assert info.value.code == 2
    assert "scheduler address '10.1.2.3' is not of the form tcp://HOST:PORT" in (
        capsys.readouterr().err
    )


def test_a_babi_dir_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(SystemExit) as info:
        compare.parse_args(["--babi-dir", str(missing)])
    assert info.value.code == 2
    assert f"--babi-dir {missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--tasks", ","], ["--tasks", "babi_qa1,babi_qa2"]])
def test_selecting_nothing_runnable_fails_and_keeps_earlier_outputs(tmp_path, argv):
    out = tmp_path / "out"
    (out / "metrics").mkdir(parents=True)
    (out / "results.json").write_text("{}", encoding="utf-8")
    kept = out / "metrics" / "earlier.jsonl"
    kept.write_text("{}\n", encoding="utf-8")
    argv = [*argv, "--out", str(out), "--babi-dir", str(tmp_path)]  # no bAbI files there
    with pytest.raises(SystemExit) as info:
        compare.main(argv)
    assert info.value.code not in (0, None)
    assert kept.exists() and (out / "results.json").exists()


def test_full_hard_variant_labels_name_the_sizes_trained():
    labels = {p.key: p.label for p in full_plan()}
    assert labels["tracking_hard"] == (
        "Tracking, 5 objects, 6 places on a line, 16 moves (hard variant)"
    )
    assert labels["pair_matching_hard"] == "Pair matching, 8 pairs over 12 tokens (hard variant)"
    assert labels["sorting_hard"] == "Sorting, rank of 10 scalars (hard variant)"
    assert labels["babi_synthetic_2_hard"].startswith("bAbI-style QA, two supporting facts, ")
    assert "12 distractors" in labels["babi_synthetic_2_hard"]


def test_missing_babi_files_give_a_message_not_a_crash(tmp_path):
    args = compare.parse_args(["--babi-dir", str(tmp_path)])
    path, note = _babi_dir(args, quick_plan())
    assert path is None
    assert str(tmp_path) in note and "babi_qa1" in note and "skipped" in note


@pytest.mark.skipif(
    not (BABI_DIR / "qa1_single-supporting-fact_train.txt").exists(),
    reason=f"bAbI task 1 not found in {BABI_DIR} (set BABI_DIR)",
)
def test_real_babi_holds_out_validation_stories():
    plan = next(p for p in quick_plan() if p.key == "babi_qa1")
    data = load_task_data(plan, 0, str(BABI_DIR))
    assert len(data.val) == plan.n_val and len(data.train) + len(data.val) == 1000
    assert data.val.inputs.shape[1:] == data.train.inputs.shape[1:] == data.test.inputs.shape[1:]
    seen = {row.tobytes() for row in data.train.inputs}
    assert np.mean([row.tobytes() in seen for row in data.val.inputs]) < 0.5
