"""Finite-difference checking of analytic gradients."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central finite differences."""


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    max_elementwise: int = 256,
    n_directions: int = 6,
    seed: int = 0,
) -> bool:
    """Check the gradients of `fn(*inputs)` against central differences; True or GradcheckError.

    The output (any shape) is reduced to a scalar by a fixed random projection. An input with at
    most `max_elementwise` elements is checked element by element; a larger one along
    `n_directions` random directions (one directional derivative per direction). Only inputs with
    requires_grad are checked; all must be float64.
    """
    inputs = list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"gradcheck input {i} is a {type(x).__name__}, expected a Tensor")
        if x.requires_grad and x.dtype != np.float64:
            label = f"{i} ({x.name!r})" if x.name else str(i)
            raise TypeError(
                f"gradcheck input {label} has dtype {x.dtype}; finite differences need float64"
            )
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")

    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    projection = rng.standard_normal(out.shape)

    def scalar() -> float:
        with no_grad():
            return float(np.sum(fn(*inputs).data * projection))

    for i in checked:
        inputs[i].grad = None
    if out.requires_grad:
        (out * projection).sum().backward()

    for i in checked:
        x = inputs[i]
        analytic = np.zeros_like(x.data) if x.grad is None else x.grad
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input
        if x.size <= max_elementwise:
            numeric = np.empty(x.size)
            for j in range(x.size):
                numeric[j] = _central(flat, j, eps, scalar)
            _compare(
                analytic.reshape(-1),
                numeric,
                atol,
                rtol,
                i,
                x,
                unit="element",
                index=lambda j, shape=x.shape: tuple(int(i) for i in np.unravel_index(j, shape)),
            )
        else:
            directions = rng.standard_normal((n_directions, x.size))
            numeric = np.array([_directional(flat, v, eps, scalar) for v in directions])
            _compare(
                directions @ analytic.reshape(-1),
                numeric,
                atol,
                rtol,
                i,
                x,
                unit="random direction",
                index=lambda j: j,
            )
    return True


def _central(flat: np.ndarray, j: int, eps: float, scalar) -> float:
    orig = flat[j]
    flat[j] = orig + eps
    plus = scalar()
    flat[j] = orig - eps
    minus = scalar()
    flat[j] = orig
    return (plus - minus) / (2 * eps)


def _directional(flat: np.ndarray, v: np.ndarray, eps: float, scalar) -> float:
    orig = flat.copy()
    flat += eps * v
    plus = scalar()
    flat[:] = orig - eps * v
    minus = scalar()
    flat[:] = orig
    return (plus - minus) / (2 * eps)


def _compare(analytic, numeric, atol, rtol, i, x, unit, index) -> None:
    err = np.abs(analytic - numeric)
    bad = ~(err <= atol + rtol * np.abs(numeric))  # also catches NaN
    if bad.any():
        worst = int(np.argmax(np.where(np.isnan(err), np.inf, err)))
        label = f"input {i}" + (f" ({x.name!r})" if x.name else "") + f" of shape {x.shape}"
        raise GradcheckError(
            f"gradcheck failed for {label}: {int(bad.sum())} of {bad.size} {unit}s off; worst "
            f"{unit} {index(worst)}: analytic {analytic[worst]:.10g}, numeric "
            f"{numeric[worst]:.10g} (atol {atol}, rtol {rtol})"
        )
