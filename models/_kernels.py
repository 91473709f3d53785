"""Fused ops shared by the models, each one recorded node with a hand-written backward.

`tensorgrad.nn.Linear` spells y = x W + b as two nodes (matmul, add). In a recurrent step those
nodes are paid for at every time step, so the models call `linear` here on the same Parameters.
Each fused op has a composite twin from primitive ops (`_reference_*`) that the tests check it
against in float64.
"""

from __future__ import annotations

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import _resolve_rng
from tensorgrad.tensor import outer_grad


def make_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Return a Generator: `rng` itself, one seeded by an int, or tensorgrad.nn's default one."""
    return _resolve_rng(rng)


def truncated_normal_init(layer, rng: np.random.Generator) -> None:
    """Re-draw a Linear's weight (in, out) as N(0, 1/in) truncated at 2σ, and zero its bias.

    This is the default initialisation of the reference RMC's linear layers.
    """
    w = rng.standard_normal(layer.weight.shape)
    while (far := np.abs(w) > 2.0).any():
        w[far] = rng.standard_normal(int(far.sum()))
    layer.weight.data[...] = w / np.sqrt(layer.weight.shape[0])
    if layer.bias is not None:
        layer.bias.data[...] = 0.0


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """Fused affine map, optionally followed by ReLU: (..., in) -> (..., out).

    y = x @ weight + bias with weight (in, out) and bias (out,); with relu=True, max(y, 0).
    """
    if x.shape[-1] != weight.shape[0]:
        raise ValueError(f"linear: input {x.shape} does not match weight {weight.shape}")
    x2 = x.data.reshape(-1, x.shape[-1])  # (rows, in): one GEMM whatever the leading axes
    out = x2 @ weight.data
    if bias is not None:
        out += bias.data
    if relu:
        np.maximum(out, 0, out=out)
    parents = (x, weight) if bias is None else (x, weight, bias)

    # dx = g Wᵀ, dW = xᵀ g over all rows, db = sum of g over rows; relu passes g where y > 0
    def backward(g):
        g2 = g.reshape(-1, g.shape[-1])  # (rows, out)
        if relu:
            g2 = g2 * (out > 0)
        gx = (g2 @ weight.data.T).reshape(x.shape) if x.requires_grad else None  # (..., in)
        gw = outer_grad(x2, g2) if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, np.ones(len(g2), dtype=g2.dtype) @ g2  # column sums

    out_nd = out.reshape(*x.shape[:-1], weight.shape[1])  # (..., out)
    return tg.record(out_nd, parents, backward, "linear_relu" if relu else "linear")


def _reference_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False
) -> Tensor:
    """Composite twin of `linear` from primitive ops."""
    y = x @ weight
    if bias is not None:
        y = y + bias
    return y.relu() if relu else y


def concat_linear(a: Tensor, b: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Fused [a, b] W + bias as one matmul: a (B, Da), b (B, Db), W (Da + Db, out) -> (B, out)."""
    if a.shape[0] != b.shape[0] or a.shape[1] + b.shape[1] != weight.shape[0]:
        raise ValueError(
            f"concat_linear: [a {a.shape}, b {b.shape}] does not match weight {weight.shape}"
        )
    da = a.shape[1]
    ab = np.concatenate([a.data, b.data], axis=1)  # (B, Da + Db)
    out = ab @ weight.data
    out += bias.data

    # d[a, b] = g Wᵀ split at Da; dW = [a, b]ᵀ g; dbias = column sums of g
    def backward(g):
        w = weight.data
        ga = g @ w[:da].T if a.requires_grad else None  # (B, Da)
        gb = g @ w[da:].T if b.requires_grad else None  # (B, Db)
        return ga, gb, outer_grad(ab, g), np.ones(len(g), dtype=g.dtype) @ g

    return tg.record(out, (a, b, weight, bias), backward, "concat_linear")


def _reference_concat_linear(a: Tensor, b: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Composite twin of `concat_linear` from primitive ops."""
    return tg.concat([a, b], axis=1) @ weight + bias
