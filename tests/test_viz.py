"""Graph drawing: escaped labels for any name, parameter names from a model, limits, rendering."""

import shutil
import subprocess

import numpy as np
import pytest

import tensorgrad as tg
from tensorgrad import nn, viz

AWKWARD = 'say "hi" <b>{x}|y\\z & more\nnext line 🙂'
HAS_DOT = shutil.which("dot") is not None


def small_graph():
    x = tg.Tensor(np.ones((2, 3), np.float32), name=AWKWARD)
    w = nn.Parameter(np.ones((3, 4), np.float32))
    loss = (x @ w).relu().sum()
    return x, w, loss


def test_dot_source_escapes_awkward_names():
    x, w, loss = small_graph()
    source = viz.draw_graph(loss, names={id(w): "w[0]\t<tab>"}).source

    escaped = "say &quot;hi&quot; &lt;b&gt;{x}|y\\z &amp; more<BR/>next line 🙂"
    assert escaped in source
    assert "<b>" not in source and "\nnext line" not in source
    assert "w[0]\\x09&lt;tab&gt;" in source  # a control character becomes visible text
    for op in ("matmul", "relu", "sum"):
        assert f"label=<{op}>" in source
    assert source.count("shape=box") == 5  # x, w, x @ w, relu, sum
    assert source.count("shape=ellipse") == 3
    assert "(2, 3) float32" in source and "(3, 4) float32" in source and "() float32" in source


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot not installed")
def test_dot_parses_and_renders_the_awkward_names():
    _, _, loss = small_graph()
    source = viz.draw_graph(loss).source
    done = subprocess.run(
        ["dot", "-Tsvg"], input=source.encode("utf-8"), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    svg = done.stdout.decode("utf-8")
    assert "say &quot;hi&quot; &lt;b&gt;{x}|y\\z &amp; more" in svg
    assert "next line 🙂" in svg
    assert b"Warning" not in done.stderr and b"Error" not in done.stderr


def test_parameters_are_labelled_from_the_model():
    class TwoLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc2(self.fc1(x).relu())

    model = TwoLayer()
    out = model(np.ones((5, 4), np.float32)).sum()
    source = viz.draw_graph(out, model=model).source
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert f"<B>{name}</B>" in source
    renamed = viz.draw_graph(out, model=model, names={id(model.fc1.bias): "b1"}).source
    assert "<B>b1</B>" in renamed and "fc1.bias" not in renamed
    bare = viz.draw_graph(out, show_shapes=False).source
    assert "float32" not in bare and "fc1.weight" not in bare


def test_long_chains_are_walked_without_recursion_and_truncated():
    x = tg.Tensor(np.ones(2), requires_grad=True, name="x")
    y = x
    for _ in range(3000):
        y = y * x + x
    full = viz.draw_graph(y, max_nodes=10_000).source
    assert full.count("shape=box") == 1 + 2 * 3000  # x, then a mul and an add output per step

    small = viz.draw_graph(y, max_nodes=10).source
    assert small.count("shape=box") == 10
    assert "more inputs not drawn (max_nodes=10)" in small
    with pytest.raises(ValueError, match="max_nodes"):
        viz.draw_graph(y, max_nodes=0)
    with pytest.raises(TypeError, match="expects a Tensor"):
        viz.draw_graph(np.ones(2))


def test_a_freed_graph_draws_only_its_root():
    _, _, loss = small_graph()
    loss.backward()
    assert viz.draw_graph(loss).source.count("shape=box") == 1


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot not installed")
@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_render_graph_writes_dot_and_image(tmp_path, fmt):
    _, _, loss = small_graph()
    written = viz.render_graph(loss, tmp_path / f"graph.{fmt}", format=fmt)
    assert written == [str(tmp_path / "graph.dot"), str(tmp_path / f"graph.{fmt}")]
    assert (tmp_path / "graph.dot").read_text(encoding="utf-8").startswith("digraph")
    image = (tmp_path / f"graph.{fmt}").read_bytes()
    if fmt == "png":
        assert image.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert b"<svg" in image and "🙂".encode() in image


def test_render_graph_without_dot_writes_the_source_only(tmp_path, monkeypatch):
    _, _, loss = small_graph()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="dot' not found"):
        written = viz.render_graph(loss, tmp_path / "g")
    assert written == [str(tmp_path / "g.dot")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.dot"]
    with pytest.raises(ValueError, match="format must be one of"):
        viz.render_graph(loss, tmp_path / "g", format="jpg")
