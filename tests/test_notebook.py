"""The story notebook runs top to bottom without an error (with a short training budget)."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "18_relational_rnn.ipynb"


def test_notebook_executes(monkeypatch):
    monkeypatch.setenv("NOTEBOOK_STEPS", "150")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    printed = "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.get("name") == "stdout"
    )
    assert "caught: gradcheck failed" in printed
    assert "gradcheck with a causal mask: True" in printed
    assert "test accuracy" in printed
