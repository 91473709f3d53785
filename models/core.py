"""The recurrent-core protocol every sequence model here follows, and a generic unroller.

A core has `initial_state(batch_size)`, `step(x_t, state) -> (out_t, new_state)` with x_t
(B, input_size) and out_t (B, output_size), and `output_size`. The state is whatever the core
needs (a tensor or a tuple of tensors); only the core looks inside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorgrad import Tensor
from tensorgrad.nn import Module


def as_input(x, dtype: np.dtype, ndim: int, what: str) -> Tensor:
    """Return `x` as a Tensor of `dtype` with `ndim` axes; arrays are cast, Tensors must match.

    The first axis is the batch and must not be empty.
    """
    if isinstance(x, Tensor):
        if x.dtype != dtype:
            raise TypeError(
                f"{what}: input tensor has dtype {x.dtype} but the model is {dtype}; "
                "cast it before the call"
            )
    else:
        x = Tensor(np.asarray(x, dtype=dtype))
    if x.ndim != ndim:
        raise ValueError(f"{what}: expected a {ndim}-D input, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: needs at least one example, got input shape {x.shape}")
    return x


def as_state(value, dtype: np.dtype, shape: tuple[int, ...], what: str) -> Tensor:
    """Return one part of a recurrent state as a Tensor of `dtype` and `shape`, or raise.

    An ndarray is wrapped as a constant Tensor of the model dtype; a Tensor must already have it.
    """
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        value = Tensor(value.astype(dtype, copy=False))
    elif not isinstance(value, Tensor):
        raise TypeError(f"{what}: expected a Tensor of shape {shape}, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(
            f"{what}: expected dtype {dtype} (the model's), got {value.dtype}; cast it first"
        )
    if value.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {value.shape}")
    return value


def state_parts(state: Any, names: tuple[str, ...], what: str) -> tuple:
    """Unpack a tuple state into len(names) parts, or raise TypeError naming the layout."""
    if not isinstance(state, (tuple, list)) or len(state) != len(names):
        got = f"{len(state)} parts" if isinstance(state, (tuple, list)) else type(state).__name__
        raise TypeError(f"{what}: state must be a tuple ({', '.join(names)}), got {got}")
    return tuple(state)


def check_size(value: Any, name: str, what: str) -> int:
    """Return `value` if it is an int >= 1, else raise ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}: {name} must be an int >= 1, got {value!r}")
    return int(value)


def float_dtype(dtype: Any, what: str) -> np.dtype:
    """Return `dtype` as np.float32 or np.float64, or raise TypeError (no other is supported)."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{what}: dtype must be float32 or float64, got {dt}")
    return dt


class RecurrentCore(Module):
    """Base class of a recurrent core: (B, input_size) per step -> (B, output_size) per step."""

    input_size: int
    output_size: int
    dtype: np.dtype

    def initial_state(self, batch_size: int) -> Any:
        """Return the state before the first step for a batch of `batch_size`."""
        raise NotImplementedError(f"{type(self).__name__} does not define initial_state()")

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Advance one step: x_t (B, input_size) -> (out_t (B, output_size), new state)."""
        raise NotImplementedError(f"{type(self).__name__} does not define step()")

    def unroll(self, x, state: Any = None) -> tuple[list[Tensor], Any]:
        """Run this core over x (B, T, input_size): see `unroll`."""
        return unroll(self, x, state)


def unroll(core, x, state: Any = None) -> tuple[list[Tensor], Any]:
    """Run any core over x (B, T, input_size) -> ([out_t (B, output_size)] * T, final state).

    `core` needs `initial_state`, `step` and `dtype`; gradients flow through every step (full
    backpropagation through time, nothing detached).
    """
    x, state = prepare_sequence(core, x, state)
    steps = x.shape[1]
    outputs = []
    for t in range(steps):
        # NOTE: a constant input is sliced in NumPy, which records nothing.
        x_t = x[:, t] if x.requires_grad else Tensor(x.data[:, t])
        out, state = core.step(x_t, state)
        outputs.append(out)
    return outputs, state


def prepare_sequence(core, x, state: Any = None) -> tuple[Tensor, Any]:
    """Check x (B, T, input_size) against `core`; return it as a Tensor and the starting state.

    A missing state is `core.initial_state(B)`.
    """
    name = type(core).__name__
    x = as_input(x, core.dtype, 3, f"{name}.unroll")
    batch, _, features = x.shape
    expected = getattr(core, "input_size", features)
    if features != expected:
        raise ValueError(
            f"{name}: input feature size {features} != input_size {expected} (x {x.shape})"
        )
    return x, core.initial_state(batch) if state is None else state
