"""Multi-head dot-product attention, with a fused core for speed.

The core softmax(Q Kᵀ / sqrt(d)) V for every head is one recorded op with a hand-written backward
(`attention_core`, and `packed_attention_core` for a packed [Q | K | V] input). Its composite twin
built from primitive tensorgrad ops, `_reference_attention`, is what the tests check it against.

Layout: a model dimension D is split into H heads of d = D / H consecutive features, so head h of
a (B, T, D) tensor is `x[..., h * d:(h + 1) * d]`.
"""

from __future__ import annotations

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import Linear, Module

# ------------------------------------------------------------------------------ checks


def _check_heads(features: int, num_heads: int, what: str) -> int:
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)):
        raise ValueError(f"{what}: num_heads must be an int >= 1, got {num_heads!r}")
    if num_heads < 1:
        raise ValueError(f"{what}: num_heads must be >= 1, got {num_heads}")
    if features % num_heads:
        raise ValueError(
            f"{what}: feature size {features} is not divisible by num_heads={num_heads}"
        )
    return features // num_heads


def _check_mask(mask, full: tuple[int, int, int, int]) -> np.ndarray:
    """Return `mask` as a boolean ndarray broadcastable to `full` = (B, H, Tq, Tk), or raise."""
    m = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if m.dtype != bool:
        raise TypeError(f"attention mask must be boolean (True = may attend), got dtype {m.dtype}")
    try:
        shape = np.broadcast_shapes(m.shape, full)
    except ValueError:
        shape = None
    if shape != full:
        raise ValueError(
            f"attention mask of shape {m.shape} does not broadcast to (B, H, Tq, Tk) = {full}"
        )
    return m


# ------------------------------------------------------------------------------ kernels


def _row_softmax(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, overwriting `s` (..., T) and returning it."""
    t = s.shape[-1]
    rows = s.reshape(-1, t)  # (R, T), a view: s is C-contiguous
    # NOTE: attention rows are short (T = a few slots), where NumPy's per-row reductions cost
    # far more than the arithmetic; T column-wise maxima and one matrix-vector product with
    # ones give the same shift and the same sums 5-10x faster.
    top = rows[:, 0].copy()  # (R,)
    for j in range(1, t):
        np.maximum(top, rows[:, j], out=top)
    rows -= top[:, None]
    np.exp(rows, out=rows)
    total = rows @ np.ones(t, dtype=rows.dtype)  # (R,)
    rows /= total[:, None]
    return s


def _masked_softmax(s: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Softmax over the last axis of the scores; masked keys get weight 0, empty rows all 0."""
    if mask is None:
        return _row_softmax(np.ascontiguousarray(s))
    s = np.where(mask, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    # NOTE: a fully masked row has max -inf; shifting it by 0 keeps exp(-inf) = 0 and avoids
    # inf - inf = nan, and dividing by 1 instead of 0 leaves the whole row at exactly 0.
    e = np.exp(s - np.where(np.isfinite(top), top, 0))
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1)


def _attend(qh: np.ndarray, kh: np.ndarray, vh: np.ndarray, scale, mask: np.ndarray | None):
    """Per-head attention on (B, H, T, d) arrays; returns output, weights and a VJP closure.

    The VJP maps the output's gradient (B, H, Tq, d) to those of qh, kh and vh, writing them into
    `out` arrays when given (views of one packed gradient), else into new arrays.
    """
    s = qh @ kh.swapaxes(-1, -2)  # (B, H, Tq, Tk)
    s *= scale
    w = _masked_softmax(s, mask)  # (B, H, Tq, Tk)
    out = w @ vh  # (B, H, Tq, d)

    # dS = W * (dW - rowsum(dW * W)) is the softmax VJP; masked entries have W = 0, so dS = 0 there.
    def vjp(go: np.ndarray, outs=(None, None, None)):
        gw = go @ vh.swapaxes(-1, -2)  # (B, H, Tq, Tk)
        dot = np.einsum("...k,...k->...", gw, w)[..., None]  # (B, H, Tq, 1)
        gw -= dot
        gw *= w
        gw *= scale  # now dS
        gq = np.matmul(gw, kh, out=outs[0])  # (B, H, Tq, d)
        gk = np.matmul(gw.swapaxes(-1, -2), qh, out=outs[1])  # (B, H, Tk, d)
        gv = np.matmul(w.swapaxes(-1, -2), go, out=outs[2])  # (B, H, Tk, d)
        return gq, gk, gv

    return out, w, vjp


def _split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    b, t, f = x.shape
    return x.reshape(b, t, num_heads, f // num_heads).transpose(0, 2, 1, 3)  # (B, H, T, d)


def _head_view(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(B, T, D) array, possibly a strided slice -> a (B, H, T, d) view of it, never a copy."""
    b, t, f = x.shape
    sb, st, sf = x.strides
    d = f // num_heads
    shape, strides = (b, num_heads, t, d), (sb, d * sf, st, sf)
    return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=True)  # (B, H, T, d)


def _merge_heads(x: np.ndarray) -> np.ndarray:
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)  # (B, T, H*d)


def attention_core(
    q: Tensor, k: Tensor, v: Tensor, num_heads: int, scale: float, mask=None
) -> tuple[Tensor, np.ndarray]:
    """Fused softmax(q kᵀ · scale) v per head: q (B, Tq, D), k, v (B, Tk, D) -> (B, Tq, D).

    Returns the output tensor and the attention weights (B, H, Tq, Tk) as a plain ndarray. No
    argument checking: `multi_head_attention` is the checked entry point.
    """
    qh = _split_heads(q.data, num_heads)  # (B, H, Tq, d)
    kh = _split_heads(k.data, num_heads)  # (B, H, Tk, d)
    vh = _split_heads(v.data, num_heads)  # (B, H, Tk, d)
    oh, w, vjp = _attend(qh, kh, vh, q.dtype.type(scale), mask)

    # heads are merged and split by pure reshapes, so their VJPs are the inverse reshapes
    def backward(g):
        gq, gk, gv = vjp(_split_heads(g, num_heads))
        return _merge_heads(gq), _merge_heads(gk), _merge_heads(gv)

    return tg.record(_merge_heads(oh), (q, k, v), backward, "attention"), w


def packed_attention_core(
    qkv: Tensor, num_heads: int, scale: float, mask=None
) -> tuple[Tensor, np.ndarray]:
    """Fused self-attention from a packed [Q | K | V] tensor: qkv (B, T, 3D) -> (B, T, D).

    Same maths as `attention_core` on the three thirds of the last axis, without three slicing
    ops; returns the output and the weights (B, H, T, T) as an ndarray.
    """
    d_model = qkv.shape[-1] // 3
    x = qkv.data
    qh = _split_heads(x[..., :d_model], num_heads)  # (B, H, T, d)
    kh = _split_heads(x[..., d_model : 2 * d_model], num_heads)  # (B, H, T, d)
    vh = _split_heads(x[..., 2 * d_model :], num_heads)  # (B, H, T, d)
    oh, w, vjp = _attend(qh, kh, vh, qkv.dtype.type(scale), mask)

    # the three thirds are disjoint slices: their gradients are written straight into them
    def backward(g):
        grad = np.empty_like(x)  # (B, T, 3D)
        thirds = [grad[..., i * d_model : (i + 1) * d_model] for i in range(3)]  # (B, T, D)
        vjp(_split_heads(g, num_heads), [_head_view(t, num_heads) for t in thirds])
        return (grad,)

    return tg.record(_merge_heads(oh), (qkv,), backward, "attention"), w


def _reference_attention(
    q: Tensor, k: Tensor, v: Tensor, num_heads: int, scale: float, mask=None
) -> Tensor:
    """Composite twin of `attention_core` from primitive ops: q (B, Tq, D), k, v -> (B, Tq, D)."""
    (b, tq, f), tk = q.shape, k.shape[1]
    d = f // num_heads
    qh = q.reshape(b, tq, num_heads, d).transpose(0, 2, 1, 3)  # (B, H, Tq, d)
    kh = k.reshape(b, tk, num_heads, d).transpose(0, 2, 1, 3)  # (B, H, Tk, d)
    vh = v.reshape(b, tk, num_heads, d).transpose(0, 2, 1, 3)  # (B, H, Tk, d)
    s = (qh @ kh.swapaxes(-1, -2)) * scale  # (B, H, Tq, Tk)
    if mask is None:
        w = tg.softmax(s, axis=-1)
    else:
        keep = np.broadcast_to(mask, s.shape)
        low = tg.Tensor(np.full(s.shape, -1e9, dtype=s.dtype))
        # masked scores are pushed far down, then zeroed exactly (this also empties a full row)
        w = tg.softmax(tg.where(keep, s, low), axis=-1) * keep
    return (w @ vh).transpose(0, 2, 1, 3).reshape(b, tq, f)  # (B, Tq, D)


# ------------------------------------------------------------------------------ public API


def multi_head_attention(
    Q: Tensor, K: Tensor, V: Tensor, num_heads: int, mask=None, return_weights: bool = False
):
    """Scaled dot-product attention with H heads: Q (B, Tq, D), K, V (B, Tk, D) -> (B, Tq, D).

    Heads split D into H blocks of d = D / H features; scores are scaled by 1/sqrt(d). `mask` is a
    boolean array broadcastable to (B, H, Tq, Tk), True where a query may attend to a key; a query
    with no allowed key returns zeros (and zero gradients). With `return_weights=True` the
    attention weights (B, H, Tq, Tk) are also returned, as an ndarray outside the graph.
    """
    for name, t in (("Q", Q), ("K", K), ("V", V)):
        if not isinstance(t, Tensor) or t.ndim != 3:
            shape = getattr(t, "shape", type(t).__name__)
            raise ValueError(
                f"multi_head_attention: {name} must be a 3-D Tensor (B, T, D), got {shape}"
            )
    if (
        not (Q.shape[0] == K.shape[0] == V.shape[0])
        or K.shape[1] != V.shape[1]
        or not (Q.shape[2] == K.shape[2] == V.shape[2])
    ):
        raise ValueError(
            f"multi_head_attention: need Q (B, Tq, D), K and V (B, Tk, D); got Q {Q.shape}, "
            f"K {K.shape}, V {V.shape}"
        )
    if not (Q.dtype == K.dtype == V.dtype):
        raise TypeError(
            f"multi_head_attention: Q, K, V dtypes differ ({Q.dtype}, {K.dtype}, {V.dtype})"
        )
    d = _check_heads(Q.shape[2], num_heads, "multi_head_attention")
    if mask is not None:
        mask = _check_mask(mask, (Q.shape[0], num_heads, Q.shape[1], K.shape[1]))

    out, w = attention_core(Q, K, V, num_heads, d**-0.5, mask)
    return (out, w) if return_weights else out


class MultiHeadAttention(Module):
    """Multi-head attention with learned projections: (B, Tq, D) [, (B, Tk, D)] -> (B, Tq, D).

    y = MHA(x_q W_q, x_k W_k, x_v W_v) W_o (+ biases). Keys and values default to the query input
    (self-attention). The weights of the last call are kept in `last_weights` (B, H, Tq, Tk).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        bias: bool = True,
        dtype=np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, (int, np.integer)) or d_model < 1:
            raise ValueError(f"MultiHeadAttention: d_model must be an int >= 1, got {d_model!r}")
        self.head_size = _check_heads(d_model, num_heads, "MultiHeadAttention")
        self.d_model = d_model
        self.num_heads = num_heads
        rng = np.random.default_rng(rng)
        self.q_proj = Linear(d_model, d_model, bias=bias, dtype=dtype, rng=rng)
        self.k_proj = Linear(d_model, d_model, bias=bias, dtype=dtype, rng=rng)
        self.v_proj = Linear(d_model, d_model, bias=bias, dtype=dtype, rng=rng)
        self.out_proj = Linear(d_model, d_model, bias=bias, dtype=dtype, rng=rng)
        self.last_weights: np.ndarray | None = None

    def forward(
        self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, mask=None
    ) -> Tensor:
        """Attend from `query` (B, Tq, D) over `key`/`value` (B, Tk, D) -> (B, Tq, D)."""
        if query.ndim != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"MultiHeadAttention({self.d_model}): query must be (B, Tq, "
                f"{self.d_model}), got {query.shape}"
            )
        key = query if key is None else key
        value = key if value is None else value
        out, self.last_weights = multi_head_attention(
            self.q_proj(query),
            self.k_proj(key),
            self.v_proj(value),
            self.num_heads,
            mask,
            return_weights=True,
        )
        return self.out_proj(out)
