"""The ablation sweep: its grid, its command line, a tiny trained run and the main report."""

import json
from pathlib import Path

import pytest

from experiments import ablate, compare
from experiments.plan import MemorySize, quick_plan
from experiments.runner import build_model


def test_grid_varies_one_thing_at_a_time_and_trains_the_base_once():
    base = MemorySize(slots=4, heads=4, head_size=16)
    grid = ablate.variants(base)
    keys = [v.key for v in grid]
    assert len(keys) == len(set(keys)) == 11  # 4 heads + 3 slots + 1 residual + 2 gates + LSTM
    base_variant = next(v for v in grid if v.memory == base and v.model == "rmc")
    assert set(base_variant.groups) == {
        ("heads", "4"),
        ("slots", "4"),
        ("residual", "on"),
        ("gate", "unit"),
    }
    heads = {v.memory.heads: v.memory.head_size for v in grid if ("heads", "4") in v.groups}
    assert heads == {4: 16}
    widths = {v.memory.heads * v.memory.head_size for v in grid}
    assert widths == {64}  # heads split the same memory width
    gates = {v.memory.gate for v in grid if any(f == "gate" for f, _ in v.groups)}
    assert gates == {"unit", "memory", None}
    assert [v.key for v in grid if v.model == "lstm"] == ["lstm"]
    assert len(ablate.variants(base, ("gate",), lstm=False)) == 3


def test_head_variants_have_equal_parameter_counts():
    plan = next(p for p in quick_plan() if p.key == "nth_farthest_k3")
    counts = {}
    for v in ablate.variants(plan.memory, ("heads",), lstm=False):
        model, _ = build_model("rmc", _with(plan, v.memory), 13, 3, seed=0)
        counts[v.memory.heads] = model.num_parameters()
    # the projections are 64 wide whatever the split; only the per-head layout changes
    assert len(set(counts.values())) == 1, counts
    assert counts[4] == 88771


def _with(plan, memory):
    from dataclasses import replace

    return replace(plan, memory=memory)


def test_gate_and_residual_reach_the_model():
    plan = next(p for p in quick_plan() if p.key == "nth_farthest_k3")
    no_gate, _ = build_model("rmc", _with(plan, MemorySize(gate=None)), 13, 3, seed=0)
    no_res, info = build_model("rmc", _with(plan, MemorySize(residual=False)), 13, 3, seed=0)
    assert no_gate.core.gate_style is None and no_res.core.use_residual is False
    assert "no residual" in info["size"]
    # the difference is the unit gates: input and forget gate (2 x 64) per feature, each read
    # from the projected input (64) and from the memory (64), with biases
    assert 88771 - no_gate.num_parameters() == 2 * (64 * 128 + 128)


def test_help_explains_grid_seeds_and_scheduler(capsys):
    with pytest.raises(SystemExit) as stop:
        ablate.parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for words in ("1, 2, 4, 8 heads", "1, 2, 4, 8 memory slots", "residual", '"memory"', "seed"):
        assert words in text, words
    assert "--scheduler ADDRESS" in text and "dask" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--factors", "heads,depth"], "--factors must name some of heads,slots,residual,gate"),
        (["--seeds", "0,0"], "--seeds must be distinct"),
        (["--seeds", "a"], "--seeds must be comma-separated integers"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--scheduler", "nowhere"], "is not of the form tcp://HOST:PORT"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        ablate.parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_task_is_named(tmp_path):
    args = ablate.parse_args(["--task", "babi_qa1", "--out", str(tmp_path)])
    with pytest.raises(ablate.UsageError, match="not one of this study's synthetic tasks"):
        ablate.base_plan(args)
    assert ablate.main(["--task", "babi_qa1", "--out", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def study_with_ablation(tmp_path_factory):
    """The tiny main study, then the tiny sweep into its ablation folder."""
    out = tmp_path_factory.mktemp("study")
    assert compare.main(["--tiny", "--out", str(out)]) == 0
    status = ablate.main(["--tiny", "--seeds", "0,1", "--out", str(out / "ablation")])
    return status, out


def test_tiny_sweep_writes_table_figure_and_summary(study_with_ablation):
    status, out = study_with_ablation
    assert status == 0
    summary = json.loads((out / "ablation" / "ablation.json").read_text())
    rows = summary["rows"]
    # 4 heads + 4 slots + 2 residual + 3 gates + the LSTM, the base shown in each group
    assert [r["factor"] for r in rows].count("heads") == 4 and len(rows) == 14
    assert [r["value"] for r in rows if r["factor"] == "slots"] == ["1", "2", "4", "8"]
    assert summary["runs"] == 2 * 11
    for row in rows:
        assert row["seeds"] == [0, 1] and len(row["accs"]) == 2
        assert row["test_acc"]["min"] <= row["test_acc"]["mean"] <= row["test_acc"]["max"]
    base = next(r for r in rows if r["factor"] == "gate" and r["value"] == "unit")
    assert base["test_acc"]["mean"] > summary["chance"] + 0.25  # 2 pairs of 3 tokens: 1/3
    assert (out / "ablation" / summary["figure"]["png"]).stat().st_size > 10_000
    md = (out / "ablation" / "ablation.md").read_text()
    assert md.count("\n| ") == 1 + len(rows)  # header and one row per variant
    assert ablate.load_summary(out / "ablation") == summary


def test_main_report_gains_the_ablation(study_with_ablation):
    _, out = study_with_ablation
    report = (out / "report.md").read_text()
    assert "## Ablations on Pair matching, 2 pairs over 3 tokens" in report
    assert "(ablation/figures/ablation.png)" in report
    assert "| gate | gate none |" in report
    results = json.loads((out / "results.json").read_text())
    assert [a["folder"] for a in results["ablations"]] == ["ablation"]
    # a sweep on a second task gets its own folder and section, after the first
    args = ablate.parse_args(["--tiny", "--task", "nth_farthest_k2"])
    assert Path(args.out) == Path("runs", "tiny", "ablation_nth_farthest_k2")
    assert ablate.parse_args(["--task", "nth_farthest_k3"]).out == str(Path("runs/quick/ablation"))
    second = ["--tiny", "--task", "nth_farthest_k2", "--factors", "gate", "--no-lstm"]
    assert ablate.main([*second, "--out", str(out / "ablation_nth_farthest_k2")]) == 0
    report = (out / "report.md").read_text()
    first_at = report.index("## Ablations on Pair matching")
    assert report.index("## Ablations on Nth-farthest, K=2") > first_at
    assert "(ablation_nth_farthest_k2/figures/ablation.png)" in report
    # a rerun of the main study keeps both sections
    assert compare.main(["--tiny", "--out", str(out), "--tasks", "pair_matching"]) == 0
    assert (out / "report.md").read_text().count("## Ablations on ") == 2


def test_sweep_resume_keeps_finished_runs(tmp_path, capsys):
    argv = ["--tiny", "--factors", "gate", "--no-lstm", "--steps", "20", "--out", str(tmp_path)]
    assert ablate.main([*argv, "--workers", "1"]) == 0
    first = json.loads((tmp_path / "ablation.json").read_text())
    capsys.readouterr()
    assert ablate.main([*argv, "--workers", "1", "--resume"]) == 0
    assert "3 runs (3 already done)" in capsys.readouterr().out
    again = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["accs"] for r in again["rows"]] == [r["accs"] for r in first["rows"]]


def test_a_foreign_output_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds no earlier ablation sweep"):
        ablate.main(["--tiny", "--factors", "gate", "--out", str(tmp_path)])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_study_and_a_sweep_never_take_each_others_folders(study_with_ablation):
    _, out = study_with_ablation
    figures = sorted((out / "figures").iterdir())
    with pytest.raises(SystemExit, match="holds a main study .* folder of its own such as"):
        ablate.main(["--tiny", "--factors", "gate", "--out", str(out)])
    with pytest.raises(SystemExit, match="holds an ablation sweep"):
        compare.main(["--tiny", "--out", str(out / "ablation")])
    assert sorted((out / "figures").iterdir()) == figures  # nothing was removed
    assert (out / "ablation" / "ablation.json").exists()


def test_empty_seeds_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        ablate.parse_args(["--seeds", " "])
    assert stop.value.code == 2 and "--seeds is empty" in capsys.readouterr().err


def test_resume_under_a_new_budget_trains_afresh(tmp_path, capsys):
    argv = ["--tiny", "--factors", "gate", "--no-lstm", "--workers", "1", "--out", str(tmp_path)]
    assert ablate.main([*argv, "--steps", "20"]) == 0
    capsys.readouterr()
    assert ablate.main([*argv, "--steps", "30", "--resume"]) == 0
    log = capsys.readouterr().out
    assert "3 runs (0 already done)" in log
    assert log.count("made under another plan; training afresh") == 3
    for path in (tmp_path / "jobs").iterdir():
        result = json.loads(path.read_text())
        assert result["plan"]["steps"] == 30 and result["steps_done"] == 30
        assert result["history"][0]["step"] < 20  # trained from step 0, not continued


def test_an_unreachable_scheduler_leaves_the_earlier_sweep_alone(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import socket

    from experiments import sweep

    argv = ["--tiny", "--factors", "gate", "--no-lstm", "--steps", "10", "--out", str(tmp_path)]
    assert ablate.main([*argv, "--workers", "1"]) == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with socket.socket() as s:  # a loopback port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(
        SystemExit, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    ):
        ablate.main([*argv, "--scheduler", f"127.0.0.1:{port}"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_study_folder_holding_only_a_cut_short_sweep_is_still_the_studys(tmp_path):
    from experiments.sweep import prepare_output

    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / ".sweep").write_text("")  # killed before its ablation.json
    assert prepare_output(tmp_path, kind="study", resume=False, generated=("jobs",))
    assert (tmp_path / ".study").exists() and (tmp_path / "ablation" / ".sweep").exists()
