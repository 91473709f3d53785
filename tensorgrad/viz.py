"""Draw the recorded graph above a tensor with Graphviz: a box per tensor, an ellipse per op.

Draw before `backward()` (or after `backward(retain_graph=True)`): backward frees the graph, and
a freed tensor has no parents left to draw. Needs the `graphviz` Python package; rendering to
an image also needs the Graphviz `dot` program.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import unicodedata
import warnings
from collections import deque
from collections.abc import Mapping

from .nn import Module, Parameter
from .tensor import Tensor

FORMATS = ("svg", "png", "pdf")


def _escape(text: str) -> str:
    """Make any string safe inside a Graphviz HTML-like label; newlines become line breaks."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    lines = text.replace("\r\n", "\n").split("\n")
    out = []
    for line in lines:
        line = "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in line)
        out.append(html.escape(line, quote=True))
    return "<BR/>".join(out)


def _tensor_label(t: Tensor, name: str | None, show_shapes: bool) -> str:
    parts = []
    if name:
        parts.append(f"<B>{_escape(name)}</B>")
    if show_shapes:
        shape = "(" + ", ".join(map(str, t.shape)) + ("," if len(t.shape) == 1 else "") + ")"
        parts.append(f'<FONT POINT-SIZE="10">{shape} {t.dtype}</FONT>')
    if not parts:
        parts.append("tensor")
    return "<" + "<BR/>".join(parts) + ">"


def draw_graph(
    tensor: Tensor,
    max_nodes: int = 500,
    show_shapes: bool = True,
    names: Mapping[int, str] | None = None,
    model: Module | None = None,
):
    """Return a graphviz.Digraph of the graph that produced `tensor` (data flows downwards).

    A tensor node shows its name and, if `show_shapes`, its shape and dtype; an op node shows
    `_op`. Names come from `names` ({id(tensor): name}) first, then from `model`'s dotted
    parameter names, then from `tensor.name`. At most `max_nodes` tensors are drawn; the rest
    collapse into one "more" node. The walk is iterative, so deep graphs are fine.
    """
    try:
        import graphviz
    except ImportError as exc:
        raise ImportError("draw_graph needs the graphviz package: pip install graphviz") from exc
    if not isinstance(tensor, Tensor):
        raise TypeError(f"draw_graph expects a Tensor, got {type(tensor).__name__}")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive int, got {max_nodes!r}")

    labels: dict[int, str] = {}
    if model is not None:
        labels.update({id(p): n for n, p in model.named_parameters()})
    if names is not None:
        labels.update(names)

    dot = graphviz.Digraph("tensorgrad", graph_attr={"rankdir": "TB"})
    dot.attr("node", fontname="Helvetica")
    ids: dict[int, str] = {}
    omitted = 0

    def add_tensor(t: Tensor) -> str:
        node_id = f"t{len(ids)}"
        ids[id(t)] = node_id
        name = labels.get(id(t)) or t.name
        if t is tensor:
            style = {"style": "filled,bold", "fillcolor": "lightyellow"}
        elif isinstance(t, Parameter) or (t.requires_grad and not t._parents):
            style = {"style": "filled", "fillcolor": "lightblue"}
        else:
            style = {}
        dot.node(node_id, label=_tensor_label(t, name, show_shapes), shape="box", **style)
        return node_id

    add_tensor(tensor)
    queue = deque([tensor])
    while queue:
        t = queue.popleft()
        if not t._parents:
            continue
        op_id = f"op{ids[id(t)][1:]}"
        dot.node(op_id, label=f"<{_escape(t._op or '?')}>", shape="ellipse", fontsize="10")
        dot.edge(op_id, ids[id(t)])
        for parent in t._parents:
            if id(parent) not in ids:
                if len(ids) >= max_nodes:
                    omitted += 1
                    dot.edge("more", op_id, style="dashed")
                    continue
                add_tensor(parent)
                queue.append(parent)
            dot.edge(ids[id(parent)], op_id)
    if omitted:
        dot.node(
            "more",
            label=f"<... {omitted}+ more inputs not drawn (max_nodes={max_nodes})>",
            shape="note",
        )
    return dot


def render_graph(
    tensor: Tensor, path: str | os.PathLike, format: str = "svg", **kwargs
) -> list[str]:
    """Write `<path>.dot` and, when Graphviz `dot` is installed, `<path>.<format>`.

    `path` is a base name; a trailing ".dot" or ".<format>" is dropped. Keyword arguments go to
    `draw_graph`. Returns the paths written. Without `dot` only the .dot file is written and a
    warning says so.
    """
    if format not in FORMATS:
        raise ValueError(f"render_graph format must be one of {FORMATS}, got {format!r}")
    base = os.fspath(path)
    for ext in (f".{format}", ".dot"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    graph = draw_graph(tensor, **kwargs)

    dot_path = base + ".dot"
    with open(dot_path, "w", encoding="utf-8") as f:
        f.write(graph.source)
    exe = shutil.which("dot")
    if exe is None:
        warnings.warn(f"Graphviz 'dot' not found; wrote {dot_path} only", UserWarning, stacklevel=2)
        return [dot_path]

    out_path = f"{base}.{format}"
    done = subprocess.run(
        [exe, f"-T{format}", "-o", out_path, dot_path], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"dot failed to render {dot_path} as {format}: {done.stderr.strip()}")
    return [dot_path, out_path]


__all__ = ["draw_graph", "render_graph"]
