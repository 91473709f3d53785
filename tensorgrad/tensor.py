"""The Tensor and the reverse-mode engine.

A Tensor wraps an ndarray. Every differentiable op builds its output with `record`, handing it the
parents and a `backward(g)` closure that maps the output's gradient to one gradient per parent.
`Tensor.backward` sorts the graph iteratively, runs those closures in reverse order, undoes
broadcasting in one place (`_unbroadcast`), accumulates gradients of reused tensors, and frees the
graph afterwards unless asked to keep it.

Two kinds of gradient are summed lazily: a weight's per-step products aᵀ g (`OuterSum`, made by
`outer_grad`) become one matrix product over all steps, and the gradients of slices of one array
(`SliceGrad`, made by getitem) are written into one array instead of adding full-size zeros.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np

Backward = Callable[[np.ndarray], Sequence["np.ndarray | None"]]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_grad_enabled = True


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed arrays for reuse (process-wide); True when it took.

    A training step allocates and frees the same arrays every time. By default glibc serves
    arrays above 128 KiB with fresh mmaps and returns a freed heap top to the kernel, so every
    step faults its pages in anew (in the paper-width RMC about a third of the step's time).
    Arrays up to 32 MiB now come from the heap, which is no longer trimmed: a process keeps the
    peak of its step, and memory stays flat from step to step. It is a choice for a training
    process, so importing tensorgrad does not make it: `experiments.training.fit` and the
    benchmark call this. TENSORGRAD_KEEP_MEMORY=0 turns it into a no-op.
    """
    if os.environ.get("TENSORGRAD_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    trim = mallopt(m_trim_threshold, 2**30)
    mmap = mallopt(m_mmap_threshold, 32 * 2**20)
    return bool(trim and mmap)


def is_grad_enabled() -> bool:
    """Return True when new ops are recorded for backpropagation."""
    return _grad_enabled


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) under which no op is recorded."""

    def __enter__(self) -> no_grad:
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc) -> None:
        global _grad_enabled
        _grad_enabled = self._prev


def _as_float_array(data) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype not in _FLOAT_DTYPES:
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Tensor data must be numeric, got dtype {arr.dtype}")
        # NOTE: integers and bools become float64 so that their gradients are never truncated.
        arr = arr.astype(np.float64)
    return arr


def _freed_backward(g):
    raise RuntimeError(
        "backward through a graph that has already been freed; "
        "pass retain_graph=True to the first backward() to go through it twice"
    )


class Tensor:
    """An n-dimensional array that records the ops applied to it for reverse-mode autodiff."""

    __slots__ = (
        "data",
        "grad",
        "requires_grad",
        "name",
        "_parents",
        "_backward",
        "_op",
        "_retain",
        "__weakref__",
    )
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_float_array(data)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Backward | None = None
        self._op: str | None = None
        self._retain = False

    # ----------------------------------------------------------------------------- properties

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def item(self) -> float:
        """Return the value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.data.reshape(()))

    def numpy(self) -> np.ndarray:
        """Return the underlying ndarray (shared, not copied)."""
        return self.data

    def detach(self) -> Tensor:
        """Return a tensor sharing this data that is cut off from the graph."""
        return Tensor(self.data, name=self.name)

    def retain_grad(self) -> Tensor:
        """Keep this intermediate tensor's gradient in `.grad` after backward."""
        self._retain = True
        return self

    def __repr__(self) -> str:
        extra = f", name={self.name!r}" if self.name else ""
        extra += f", op={self._op}" if self._op else ""
        extra += ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{extra})"

    # ----------------------------------------------------------------------------- backward

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad.

        `grad` defaults to 1 for a one-element tensor; other shapes must pass it explicitly.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    f"backward() without a gradient needs a one-element tensor, got shape "
                    f"{self.shape}; pass grad= of that shape"
                )
            grad = np.ones(self.shape, dtype=self.dtype)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward(): grad shape {grad.shape} != tensor shape {self.shape}"
                )

        order = _topological_order(self)
        grads: dict[int, np.ndarray | OuterSum | SliceGrad] = {id(self): grad}
        owned: set[int] = set()  # ids of sums the engine made itself: safe to add into in place
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if type(g) in _LAZY:
                g, fresh = g.materialise(), True
            else:
                fresh = id(g) in owned
                owned.discard(id(g))
            if node._backward is None:  # a leaf
                _accumulate(node, g, fresh)
                continue
            if node._retain:
                _accumulate(node, g, False)
            parent_grads = node._backward(g)
            for parent, pg in zip(node._parents, parent_grads):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.data.shape:
                    pg = _unbroadcast(pg, parent.data.shape)
                key = id(parent)
                prev = grads.get(key)
                grads[key] = pg if prev is None else _add(prev, pg, owned)
            if not retain_graph:
                node._parents = ()
                node._backward = _freed_backward


class OuterSum:
    """A gradient Σᵢ aᵢᵀ gᵢ of a weight, kept as its factors and summed by one matrix product.

    A weight used at every step of an unrolled sequence receives one aₜᵀ gₜ per step, each a
    product over the batch rows only. Stacking the factors gives one product over T times as
    many rows, which BLAS runs faster than T thin ones plus T - 1 additions. Kernels create it
    through `outer_grad`; the engine alone adds and materialises it.
    """

    __slots__ = ("lefts", "rights", "shape")

    def __init__(self, a: np.ndarray, g: np.ndarray):
        self.lefts = [a]
        self.rights = [g]
        self.shape = (a.shape[1], g.shape[1])

    def extend(self, other: OuterSum) -> OuterSum:
        """Add another sum's terms to this one; returns self."""
        self.lefts += other.lefts
        self.rights += other.rights
        return self

    def materialise(self) -> np.ndarray:
        """Return Σᵢ aᵢᵀ gᵢ as a new array (in, out)."""
        if len(self.lefts) == 1:
            return self.lefts[0].T @ self.rights[0]
        return np.concatenate(self.lefts).T @ np.concatenate(self.rights)

    def add_into(self, full: np.ndarray) -> np.ndarray:
        """Add the sum into `full` (in, out) in place; returns it."""
        full += self.materialise()
        return full


class SliceGrad:
    """The gradient of basic slices of an array: zero but for a few parts, built when needed.

    `x[:, t]` for every t of a sequence would otherwise each send back a full-size array of
    zeros, and the engine would add T of them. Here the parts are kept and written into one
    array. The getitem op creates it; the engine alone adds and materialises it.
    """

    __slots__ = ("shape", "dtype", "parts")

    def __init__(self, shape: tuple[int, ...], index, value: np.ndarray):
        self.shape = shape
        self.dtype = value.dtype
        self.parts = [(index, value)]

    def extend(self, other: SliceGrad) -> SliceGrad:
        """Add another slice gradient's parts to this one; returns self."""
        self.parts += other.parts
        return self

    def add_into(self, full: np.ndarray) -> np.ndarray:
        """Add every part into `full` at its index, in place; returns it."""
        for index, value in self.parts:
            full[index] += value
        return full

    def materialise(self) -> np.ndarray:
        """Return the full-size gradient as a new array."""
        return self.add_into(np.zeros(self.shape, dtype=self.dtype))


_LAZY = (OuterSum, SliceGrad)


# Below this many rows a weight gradient aᵀ g is deferred; above it one product is efficient.
_DEFER_ROWS = 256


def outer_grad(a: np.ndarray, g: np.ndarray) -> np.ndarray | OuterSum:
    """Weight gradient aᵀ g for a (rows, in) and g (rows, out), as (in, out) or deferred.

    A backward closure returns it in place of an array; products over few rows are deferred so
    that the engine can sum those of every step of a sequence in one product.
    """
    if a.shape[0] >= _DEFER_ROWS:
        return a.T @ g
    return OuterSum(a, g)


def _add(prev, pg, owned: set[int]):
    """prev + pg for gradients that are arrays or lazy sums, reusing engine-made sums in place."""
    lazy_prev, lazy_pg = type(prev) in _LAZY, type(pg) in _LAZY
    if lazy_prev or lazy_pg:
        if type(prev) is type(pg):
            return prev.extend(pg)
        if lazy_prev:
            prev, pg = pg, prev
        # now pg is lazy; prev is an array or a lazy sum of the other kind
        if type(prev) in _LAZY:
            prev = prev.materialise()
        elif id(prev) not in owned:
            if type(pg) is OuterSum:  # a new array anyway: add the other one into it
                prev, pg = pg.materialise(), prev
                prev += pg
                owned.add(id(prev))
                return prev
            prev = np.array(prev, dtype=np.result_type(prev.dtype, pg.dtype), copy=True)
        owned.add(id(prev))
        return pg.add_into(prev)
    if id(prev) in owned and prev.dtype == np.result_type(prev, pg):
        prev += pg
        return prev
    total = prev + pg
    owned.discard(id(prev))  # prev is dropped here; its id may be reused by another array
    owned.add(id(total))
    return total


def _topological_order(root: Tensor) -> list[Tensor]:
    """Post-order of the graph above `root` (parents before children), without recursion."""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def _accumulate(node: Tensor, g: np.ndarray, fresh: bool) -> None:
    # NOTE: a gradient that may be shared is copied, so that no two tensors' .grad alias one
    # array that an optimiser edits in place; a fresh sum made by the engine is taken as it is.
    if node.grad is not None:
        node.grad += g
    elif fresh and g.dtype == node.data.dtype:
        node.grad = g
    else:
        node.grad = np.array(g, dtype=node.data.dtype, copy=True)


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `g` over the axes along which an array of `shape` was broadcast to g's shape."""
    extra = g.ndim - len(shape)
    if extra < 0:
        raise RuntimeError(f"gradient of shape {g.shape} cannot reduce to shape {shape}")
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if g.shape != shape:
        raise RuntimeError(f"gradient of shape {g.shape} does not match shape {shape}")
    return g


def record(out: np.ndarray, parents: tuple[Tensor, ...], backward: Backward, op: str) -> Tensor:
    """Wrap `out` as the result of op `op` on `parents`; `backward(g)` gives one grad per parent.

    This is the one way a differentiable primitive is defined. When recording is off, or no parent
    requires grad, the result is a plain constant tensor and `backward` is dropped.
    """
    t = Tensor.__new__(Tensor)
    t.data = out
    t.grad = None
    t.name = None
    t._retain = False
    t._op = op
    if _grad_enabled:
        for p in parents:
            if p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._backward = backward
                return t
    t.requires_grad = False
    t._parents = ()
    t._backward = None
    return t


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Return `x` as a Tensor; a non-tensor takes the dtype of `like` (no float64 creep)."""
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return Tensor(np.asarray(x, dtype=like.data.dtype))
    return Tensor(x)


def iter_graph(root: Tensor) -> Iterator[Tensor]:
    """Yield every tensor in the recorded graph above `root` (including leaves), each once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(node._parents)
