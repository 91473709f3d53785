"""Primitive differentiable ops on Tensors.

Each op computes its output on plain ndarrays, states its local derivative in a `backward(g)`
closure returning one gradient per input, and hands both to `record`. Gradients may keep a
broadcast shape: the engine reduces them to each input's shape. The ops are attached to Tensor as
methods and operators at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .tensor import SliceGrad, Tensor, as_tensor, record

# ------------------------------------------------------------------------------ arithmetic


def add(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise a + b with broadcasting."""
    a, b = _pair(a, b)

    def backward(g):
        return g, g

    return record(a.data + b.data, (a, b), backward, "add")


def sub(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise a - b with broadcasting."""
    a, b = _pair(a, b)

    def backward(g):
        return g, -g

    return record(a.data - b.data, (a, b), backward, "sub")


def mul(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise a * b with broadcasting."""
    a, b = _pair(a, b)

    def backward(g):
        return (g * b.data if a.requires_grad else None), (g * a.data if b.requires_grad else None)

    return record(a.data * b.data, (a, b), backward, "mul")


def div(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise a / b with broadcasting."""
    a, b = _pair(a, b)
    out = a.data / b.data

    def backward(g):
        ga = g / b.data if a.requires_grad else None
        gb = -g * out / b.data if b.requires_grad else None
        return ga, gb

    return record(out, (a, b), backward, "div")


def neg(a: Tensor) -> Tensor:
    """Elementwise -a."""

    def backward(g):
        return (-g,)

    return record(-a.data, (a,), backward, "neg")


def power(a: Tensor, p) -> Tensor:
    """Elementwise a ** p for a scalar or tensor exponent p."""
    if not isinstance(p, Tensor):
        p = float(p)
        out = a.data**p

        def backward(g):
            if p == 0.0:
                return (np.zeros_like(g),)
            # NOTE: a ** (p - 1) at a = 0 is 0 for p > 1 and 1 for p == 1, so x**2 at 0 is finite.
            with np.errstate(divide="ignore"):
                return (g * (p * a.data ** (p - 1.0)),)

        return record(out, (a,), backward, "pow")

    a, p = _pair(a, p)
    out = a.data**p.data

    def backward_tensor(g):
        ga = gp = None
        if a.requires_grad:
            with np.errstate(divide="ignore", invalid="ignore"):
                ga = g * np.where(p.data == 0, 0.0, p.data * a.data ** (p.data - 1))
        if p.requires_grad:
            # NOTE: d(a^p)/dp = a^p log a tends to 0 as a -> 0+, so the base-0 gradient is 0.
            with np.errstate(divide="ignore", invalid="ignore"):
                gp = g * np.where(a.data == 0, 0.0, out * np.log(np.abs(a.data)))
        return ga, gp

    return record(out, (a, p), backward_tensor, "pow")


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product as np.matmul: 2-D, batched with broadcast batch dims, or 1-D operands."""
    a, b = _pair(a, b)
    A, B = a.data, b.data
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError(f"matmul needs at least 1-D operands, got shapes {A.shape} and {B.shape}")
    if A.shape[-1] != B.shape[-2 if B.ndim > 1 else 0]:
        raise ValueError(f"matmul shape mismatch: {A.shape} @ {B.shape}")
    out = A @ B

    def backward(g):
        ga = gb = None
        if A.ndim == 1 and B.ndim == 1:  # (k) @ (k) -> ()
            return g * B, g * A
        if A.ndim == 1:  # (k) @ (..., k, n) -> (..., n)
            if a.requires_grad:
                ga = (B @ g[..., None])[..., 0]  # (..., k)
            if b.requires_grad:
                gb = A[:, None] * g[..., None, :]  # (..., k, n)
            return ga, gb
        if B.ndim == 1:  # (..., m, k) @ (k) -> (..., m)
            if a.requires_grad:
                ga = g[..., None] * B  # (..., m, k)
            if b.requires_grad:
                gb = (np.swapaxes(A, -1, -2) @ g[..., None])[..., 0]  # (..., k)
            return ga, gb
        if a.requires_grad:
            ga = g @ np.swapaxes(B, -1, -2)
        if b.requires_grad:
            if B.ndim == 2 and A.ndim > 2:
                # (..., m, k) @ (k, n): fold the batch into rows, one GEMM, not a batch of them
                gb = A.reshape(-1, A.shape[-1]).T @ g.reshape(-1, g.shape[-1])  # (k, n)
            else:
                gb = np.swapaxes(A, -1, -2) @ g
        return ga, gb

    return record(out, (a, b), backward, "matmul")


# ------------------------------------------------------------------------------ elementwise


def exp(a: Tensor) -> Tensor:
    """Elementwise e ** a."""
    out = np.exp(a.data)

    def backward(g):
        return (g * out,)

    return record(out, (a,), backward, "exp")


def log(a: Tensor) -> Tensor:
    """Elementwise natural logarithm."""

    def backward(g):
        return (g / a.data,)

    return record(np.log(a.data), (a,), backward, "log")


def sqrt(a: Tensor) -> Tensor:
    """Elementwise square root."""
    out = np.sqrt(a.data)

    def backward(g):
        return (g * 0.5 / out,)

    return record(out, (a,), backward, "sqrt")


def tanh(a: Tensor) -> Tensor:
    """Elementwise hyperbolic tangent."""
    out = np.tanh(a.data)

    def backward(g):
        return (g * (1 - out * out),)

    return record(out, (a,), backward, "tanh")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # NOTE: exp(-|x|) never overflows; both branches of the logistic are built from it.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid(a: Tensor) -> Tensor:
    """Elementwise logistic function 1 / (1 + e^-a), without overflow for large |a|."""
    out = _sigmoid(a.data)

    def backward(g):
        return (g * out * (1 - out),)

    return record(out, (a,), backward, "sigmoid")


def relu(a: Tensor) -> Tensor:
    """Elementwise max(a, 0)."""
    mask = a.data > 0

    def backward(g):
        # NOTE: the gradient at exactly 0 is taken as 0 (the subgradient that keeps units off).
        return (g * mask,)

    return record(a.data * mask, (a,), backward, "relu")


def abs(a: Tensor) -> Tensor:  # noqa: A001 - mirrors the NumPy name
    """Elementwise |a| (gradient 0 at 0)."""

    def backward(g):
        return (g * np.sign(a.data),)

    return record(np.abs(a.data), (a,), backward, "abs")


def maximum(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max(a, b); at ties each side receives half the gradient."""
    a, b = _pair(a, b)
    wa = (a.data > b.data) + 0.5 * (a.data == b.data)
    wa = wa.astype(np.result_type(a.data, b.data), copy=False)

    def backward(g):
        return g * wa, g * (1 - wa)

    return record(np.maximum(a.data, b.data), (a, b), backward, "maximum")


def where(cond, a: Tensor, b: Tensor) -> Tensor:
    """Elementwise `a` where `cond` is true, else `b` (cond: boolean array, not differentiated)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond)
    if cond.dtype != bool:
        raise TypeError(
            f"where: condition must be a boolean array, got dtype {cond.dtype} "
            "(compare first, e.g. x.data > 0)"
        )
    a, b = _pair(a, b)

    def backward(g):
        return np.where(cond, g, 0), np.where(cond, 0, g)

    return record(np.where(cond, a.data, b.data), (a, b), backward, "where")


# ------------------------------------------------------------------------------ reductions


def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over `axis` (None = all; int or tuple; negative allowed)."""
    axis = _norm_axis(axis, a.ndim, "sum")

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, a.shape),)

    return record(np.sum(a.data, axis=axis, keepdims=keepdims), (a,), backward, "sum")


def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over `axis` (None = all; int or tuple; negative allowed)."""
    axis = _norm_axis(axis, a.ndim, "mean")
    count = int(np.prod([a.shape[i] for i in axis]))

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g / count, a.shape),)

    return record(np.mean(a.data, axis=axis, keepdims=keepdims), (a,), backward, "mean")


def _extremum(a: Tensor, axis, keepdims: bool, fn, op: str) -> Tensor:
    axis = _norm_axis(axis, a.ndim, op)
    if a.size == 0:
        raise ValueError(f"{op}() of an empty tensor of shape {a.shape}")
    kept = fn(a.data, axis=axis, keepdims=True)
    mask = a.data == kept
    # NOTE: tied extremes share the gradient equally, so the result is a valid subgradient.
    share = mask / mask.sum(axis=axis, keepdims=True)

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axis)
        return (g * share,)

    out = kept if keepdims else np.squeeze(kept, axis=axis)
    return record(out, (a,), backward, op)


def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over `axis`; ties share the gradient equally."""
    return _extremum(a, axis, keepdims, np.max, "max")


def min(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over `axis`; ties share the gradient equally."""
    return _extremum(a, axis, keepdims, np.min, "min")


# ------------------------------------------------------------------------------ shape


def reshape(a: Tensor, *shape) -> Tensor:
    """Return the same elements in a new shape (one dimension may be -1)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ValueError(f"cannot reshape tensor of shape {a.shape} into {shape}") from None

    def backward(g):
        return (g.reshape(a.shape),)

    return record(out, (a,), backward, "reshape")


def transpose(a: Tensor, *axes) -> Tensor:
    """Permute axes (none given: reverse them), as ndarray.transpose."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(range(a.ndim))[::-1] if not axes else tuple(int(x) % a.ndim for x in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"transpose axes {axes} are not a permutation for shape {a.shape}")
    inverse = tuple(np.argsort(axes))

    def backward(g):
        return (g.transpose(inverse),)

    return record(a.data.transpose(axes), (a,), backward, "transpose")


def swapaxes(a: Tensor, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""

    def backward(g):
        return (np.swapaxes(g, axis1, axis2),)

    return record(np.swapaxes(a.data, axis1, axis2), (a,), backward, "swapaxes")


def broadcast_to(a: Tensor, shape: Sequence[int]) -> Tensor:
    """Broadcast to `shape` (a read-only view); the engine sums the gradient back."""
    try:
        out = np.broadcast_to(a.data, tuple(shape))
    except ValueError:
        raise ValueError(f"cannot broadcast shape {a.shape} to {tuple(shape)}") from None

    def backward(g):
        return (g,)

    return record(out, (a,), backward, "broadcast_to")


def getitem(a: Tensor, index) -> Tensor:
    """Index like NumPy: slices, ints, None, Ellipsis, integer or boolean arrays.

    A Tensor index must hold whole numbers (its float values are read as integer positions).
    Boolean masks must be ndarrays: a Tensor stores floats, so a mask in one would be read as
    positions 0 and 1.
    """
    if isinstance(index, Tensor):
        index = _positions(index)
    elif isinstance(index, np.ndarray) and index.dtype == bool:
        index = np.nonzero(index)
    elif isinstance(index, tuple):
        index = tuple(_positions(i) if isinstance(i, Tensor) else i for i in index)
    out = a.data[index]
    basic = _is_basic_index(index)

    def backward(g):
        if basic:  # the engine writes the slices of every such gradient into one array
            return (SliceGrad(a.shape, index, g),)
        full = np.zeros(a.shape, dtype=g.dtype)
        np.add.at(full, index, g)  # repeated indices accumulate
        return (full,)

    return record(out, (a,), backward, "getitem")


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    tensors = _many(tensors, "concat")
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError as e:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"concat along axis {axis} of shapes {shapes}: {e}") from None
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, bounds, axis=axis))

    return record(out, tuple(tensors), backward, "concat")


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    tensors = _many(tensors, "stack")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack needs tensors of one shape, got {[t.shape for t in tensors]}")
    out = np.stack([t.data for t in tensors], axis=axis)
    ax = axis % out.ndim

    def backward(g):
        return tuple(np.moveaxis(g, ax, 0))

    return record(out, tuple(tensors), backward, "stack")


def split(a: Tensor, indices_or_sections, axis: int = 0) -> list[Tensor]:
    """Split along `axis` into equal sections or at the given indices, as np.split."""
    (axis,) = _norm_axis(axis, a.ndim, "split")
    n = a.shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ValueError(f"cannot split axis {axis} of size {n} into {indices_or_sections}")
        step = n // indices_or_sections
        cuts = list(range(step, n, step))
    else:
        cuts = list(indices_or_sections)
    edges = [0, *cuts, n]
    lead = (slice(None),) * (axis % a.ndim)
    return [getitem(a, lead + (slice(lo, hi),)) for lo, hi in zip(edges[:-1], edges[1:])]


# ------------------------------------------------------------------------------ helpers


def _pair(a, b) -> tuple[Tensor, Tensor]:
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    return as_tensor(a, like=b), b


def _many(tensors, op: str) -> list[Tensor]:
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op} needs at least one tensor")
    return [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]


def _positions(index: Tensor) -> np.ndarray:
    """The whole-number values of a Tensor index as an intp array, or IndexError."""
    values = index.data
    whole = np.isfinite(values) & (values == np.round(values))
    if not whole.all():
        raise IndexError(
            f"index tensor holds non-integer value {values[~whole].flat[0]}; index with whole "
            "numbers, or pass a boolean mask as an ndarray"
        )
    return values.astype(np.intp)


def _norm_axis(axis, ndim: int, op: str = "reduction") -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise TypeError(f"{op}: axis must be an int, a tuple of ints or None, got {axis!r}")
    out = []
    for ax in axes:
        if not isinstance(ax, (int, np.integer)) or isinstance(ax, bool):
            raise TypeError(f"{op}: axis must be an int, a tuple of ints or None, got {axis!r}")
        if not -ndim <= ax < ndim:
            raise ValueError(f"{op}: axis {ax} is out of range for a tensor with {ndim} dimensions")
        out.append(int(ax) % ndim)
    return tuple(out)


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, np.integer)) or i is None or i is Ellipsis for i in items)


# ------------------------------------------------------------------------------ Tensor methods


def _reflect(fn):
    return lambda self, other: fn(as_tensor(other, like=self), self)


Tensor.__add__ = add
Tensor.__radd__ = _reflect(add)
Tensor.__sub__ = sub
Tensor.__rsub__ = _reflect(sub)
Tensor.__mul__ = mul
Tensor.__rmul__ = _reflect(mul)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = _reflect(div)
Tensor.__pow__ = power
Tensor.__rpow__ = _reflect(power)
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = _reflect(matmul)
Tensor.__neg__ = neg
Tensor.__getitem__ = getitem
Tensor.exp = exp
Tensor.log = log
Tensor.sqrt = sqrt
Tensor.tanh = tanh
Tensor.sigmoid = sigmoid
Tensor.relu = relu
Tensor.abs = abs
Tensor.sum = sum
Tensor.mean = mean
Tensor.max = max
Tensor.min = min
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.swapaxes = swapaxes
Tensor.broadcast_to = broadcast_to
Tensor.T = property(lambda self: transpose(self))
