"""Fused neural-network ops: softmax, log-softmax, layer norm, cross-entropy and dropout.

Each is one recorded node with a hand-written backward (fewer nodes, less memory, better
numerics than the same maths spelt out in primitives). The tests check every one against its
composite twin built from primitive ops.
"""

from __future__ import annotations

import numpy as np

from .tensor import Tensor, record


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Softmax along `axis`, same shape in and out; stable for any finite logits."""
    z = np.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = z / z.sum(axis=axis, keepdims=True)

    # d softmax: J^T g = s * (g - <g, s>)
    def backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)

    return record(out, (x,), backward, "softmax")


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    # NOTE: shifting by the max makes the largest term exp(0) = 1, so logits of +-1e8 stay exact.
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Log of the softmax along `axis`, same shape in and out; exact for logits of +-1e8."""
    out = _log_softmax(x.data, axis)

    # d log_softmax: J^T g = g - softmax * sum(g)
    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

    return record(out, (x,), backward, "log_softmax")


def layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Normalise over the last axis to zero mean, unit variance, then scale and shift.

    x (..., F); weight and bias (F,) or None. eps sits inside the square root, so a constant row
    has a finite gradient.
    """
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"layer_norm needs at least one feature on the last axis, got x {x.shape}")
    features = x.shape[-1]
    for label, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (features,):
            raise ValueError(f"layer_norm {label} shape {p.shape} != ({features},) for x {x.shape}")
    dt = x.dtype
    x2 = x.data.reshape(-1, features)  # (rows, F)
    ones = np.ones(features, dtype=dt)
    # NOTE: row sums as a matrix-vector product with ones run 3-4x faster than .sum(axis=-1);
    # the sums of squares and of products go through einsum, which makes no temporary.
    mu = x2 @ ones  # (rows,)
    mu /= features
    xhat = x2 - mu[:, None]  # (rows, F), centred; normalised in place below
    var = np.einsum("ij,ij->i", xhat, xhat)  # (rows,)
    var /= features
    rstd = 1.0 / np.sqrt(var + eps)  # (rows,)
    xhat *= rstd[:, None]
    if weight is None:
        out = xhat if bias is None else xhat + bias.data
    else:
        out = xhat * weight.data
        if bias is not None:
            out += bias.data

    parents = (x,) + tuple(p for p in (weight, bias) if p is not None)

    # dx = rstd * (d - mean(d) - xhat * mean(d * xhat)), with d = g * weight;
    # dweight = sum over rows of g * xhat, dbias = sum over rows of g
    def backward(g):
        g2 = g.reshape(-1, features)  # (rows, F)
        d = g2 * weight.data if weight is not None else g2
        m1 = d @ ones  # (rows,)
        m1 /= features
        m2 = np.einsum("ij,ij->i", d, xhat)  # (rows,)
        m2 /= features
        dx = d - m1[:, None]
        dx -= xhat * m2[:, None]
        dx *= rstd[:, None]
        grads = [dx.reshape(x.shape)]
        if weight is not None:
            grads.append(np.einsum("ij,ij->j", g2, xhat))  # (F,)
        if bias is not None:
            grads.append(np.ones(len(g2), dtype=g2.dtype) @ g2)  # (F,)
        return grads

    out = out.reshape(x.shape)
    return record(out.astype(x.dtype, copy=False), parents, backward, "layer_norm")


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean negative log-likelihood of integer `targets` (...,) under `logits` (..., C).

    Computed from log-softmax, never from a probability, so it stays exact where a probability
    underflows to 0.
    """
    if logits.ndim == 0:
        raise ValueError("cross_entropy: logits must have a class axis (..., C), got a 0-d tensor")
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if t.dtype.kind not in "iu":
        if t.dtype.kind == "f" and np.all(t == np.round(t)):
            t = t.astype(np.int64)
        else:
            raise TypeError(f"cross_entropy targets must be integer class ids, got {t.dtype}")
    if logits.shape[:-1] != t.shape:
        raise ValueError(
            f"cross_entropy: logits {logits.shape} need targets of shape {logits.shape[:-1]}, "
            f"got {t.shape}"
        )
    classes = logits.shape[-1]
    if t.size and (t.min() < 0 or t.max() >= classes):
        bad = t[(t < 0) | (t >= classes)][0]
        raise ValueError(f"cross_entropy: target {bad} outside [0, {classes}) classes")
    if t.size == 0:
        raise ValueError("cross_entropy of an empty batch")

    logp = _log_softmax(logits.data, -1)
    picked = np.take_along_axis(logp, t[..., None], axis=-1)
    count = t.size
    out = np.asarray(-picked.sum() / count, dtype=logits.dtype)

    # d CE / d logits = (softmax - onehot) / count
    def backward(g):
        grad = np.exp(logp)
        np.put_along_axis(grad, t[..., None], np.take_along_axis(grad, t[..., None], -1) - 1, -1)
        return (grad * (g / count),)

    return record(out, (logits,), backward, "cross_entropy")


def dropout(x: Tensor, p: float, training: bool, rng: np.random.Generator) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity in eval."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    mask = (rng.random(x.shape) >= p).astype(x.dtype) / x.dtype.type(1.0 - p)

    def backward(g):
        return (g * mask,)

    return record(x.data * mask, (x,), backward, "dropout")


__all__ = ["softmax", "log_softmax", "layer_norm", "cross_entropy", "dropout"]
