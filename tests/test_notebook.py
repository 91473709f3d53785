"""The story notebook runs top to bottom (with a short training budget) and shows what it says."""

import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from experiments import ablate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "18_relational_rnn.ipynb"
# cells that draw a figure inline as a PNG: attention gradients, training curves, attention
# maps, ablations
FIGURE_CELLS = 4
TINY_ABLATION = ["--tiny", "--out", "runs/notebook_ablation", "--workers", "1"]


def _execute(nb) -> None:
    nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()


def _stdout(cells) -> str:
    return "".join(
        out.get("text", "")
        for cell in cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("name") == "stdout"
    )


def _pngs(cells) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("output_type") in ("display_data", "execute_result")
    )


def _table_rows(printed: str) -> list[str]:
    """The lines of the ablation table printed after its header."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("factor "))
    return [line for line in lines[start + 1 :] if line.split(" ", 1)[0] in ablate.ORDER]


def _check_table(printed: str, summary: dict) -> None:
    rows = _table_rows(printed)
    assert len(rows) == len(summary["rows"])
    for line, row in zip(rows, summary["rows"]):
        assert line.split()[0] == row["factor"]
        assert row["label"] in line
        assert f"{100 * row['test_acc']['mean']:.1f}%" in line


def test_notebook_executes(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTEBOOK_STEPS", "150")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    # no saved sweep: the ablation cell must run the tiny one itself
    monkeypatch.setenv("ABLATION_DIR", str(tmp_path / "no_sweep"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _execute(nb)
    printed = _stdout(nb.cells)
    assert "caught: gradcheck failed" in printed
    assert "gradcheck with a causal mask: True" in printed

    # both models reach at least the 2/K level (0.667 for K=3) from chance (0.333) in 150 steps
    accs = dict(
        re.findall(r"^(RMC|LSTM)\s*: [\d,]+ parameters, test accuracy ([\d.]+)", printed, re.M)
    )
    assert set(accs) == {"RMC", "LSTM"}
    assert all(float(a) > 0.6 for a in accs.values()), accs
    babi = re.search(r"RMC test accuracy ([\d.]+) .*most frequent answer: ([\d.]+)", printed)
    if babi:  # only where a bAbI copy is found
        assert float(babi.group(1)) > float(babi.group(2)) + 0.05

    assert _pngs(nb.cells) >= FIGURE_CELLS

    # the ablation: one table line per variant of the tiny grid, matching what the sweep wrote
    ablation = next(c for c in nb.cells if "ablate.run_ablation" in c.source)
    out = ROOT / "runs" / "notebook_ablation"
    summary = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    tiny = ablate.parse_args(TINY_ABLATION)
    grid = ablate.variants(ablate.base_plan(tiny).memory)
    assert len(summary["rows"]) == sum(len(v.groups) for v in grid) == 14
    _check_table(_stdout([ablation]), summary)
    assert all(row["test_acc"]["mean"] > summary["chance"] + 0.1 for row in summary["rows"])
    assert _pngs([ablation]) == 1
    assert (out / summary["figure"]["png"]).is_file()

    # with a saved sweep, the same cell shows it instead of training
    monkeypatch.setenv("ABLATION_DIR", str(out))
    setup = next(c for c in nb.cells if c.cell_type == "code")
    again = nbformat.v4.new_notebook(cells=[setup, nbformat.v4.new_code_cell(ablation.source)])
    again.metadata = nb.metadata
    _execute(again)
    printed_again = _stdout(again.cells[1:])
    assert printed_again.startswith(f"the sweep saved in {out}:")
    _check_table(printed_again, summary)
    assert _pngs(again.cells[1:]) == 1
