"""Optimisers (SGD, Adam), global-norm gradient clipping and learning-rate schedules.

Updates run in place on `param.data` with preallocated buffers, so a float32 model stays float32
and a step allocates no arrays. Hyperparameters are kept as Python floats: under NumPy's
promotion rules a Python float never widens a float32 array.

A schedule wraps an optimiser and owns `optimizer.lr`; the typical loop is

    opt = Adam(model.parameters(), lr=1e-3)
    sched = WarmupLR(opt, warmup_steps=100, after=CosineLR(opt, total_steps=900))
    for batch in batches:
        opt.zero_grad(); loss = ...; loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        opt.step(); sched.step()
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .tensor import Tensor


def _check_rate(value: float, what: str, low: float = 0.0) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{what} must be a finite number >= {low}, got {value}")
    return value


class Optimizer:
    """Base class: holds distinct parameters, a learning rate `lr`, a step count and buffers.

    Subclasses name their per-parameter state arrays in `_buffer_names`; each is allocated once,
    zero-filled, with the parameter's shape and dtype.
    """

    _buffer_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Tensor], lr: float):
        unique: dict[int, Tensor] = {}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a Tensor")
            if not p.requires_grad:
                raise ValueError(f"parameter {i} (shape {p.shape}) does not require grad")
            unique.setdefault(id(p), p)
        if not unique:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        self.params: list[Tensor] = list(unique.values())
        self.lr = _check_rate(lr, "lr")
        self.step_count = 0
        self.state: dict[str, list[np.ndarray]] = {
            name: [np.zeros_like(p.data) for p in self.params] for name in self._buffer_names
        }
        # NOTE: scratch space for the update arithmetic, not state: never saved.
        self._scratch = [np.empty_like(p.data) for p in self.params]

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to None."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Apply one update to every parameter whose grad is not None; count the step."""
        raise NotImplementedError(f"{type(self).__name__} does not define step()")

    def _grads(self):
        """Yield (index, param, grad) for every parameter that has a gradient."""
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if g.shape != p.data.shape:
                raise ValueError(f"parameter {i}: grad shape {g.shape} != param shape {p.shape}")
            yield i, p, g

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return copies of all state as a flat {key: ndarray} dict (savable with np.savez).

        Keys: "step" (int64 scalar), "lr" (float64 scalar), and "<buffer>.<i>" for buffer
        `<buffer>` of the i-th parameter.
        """
        out = {"step": np.array(self.step_count, dtype=np.int64), "lr": np.array(self.lr)}
        for name, arrays in self.state.items():
            for i, a in enumerate(arrays):
                out[f"{name}.{i}"] = a.copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore state saved by `state_dict`, after checking keys, shapes and dtypes.

        Raises ValueError listing every missing or unexpected key and every mismatch; nothing
        is changed unless every check passes.
        """
        expected = self.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        problems = []
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected: {', '.join(unexpected)}")
        for key, ref in expected.items():
            if key not in state or key in ("step", "lr"):
                continue
            arr = np.asarray(state[key])
            if arr.shape != ref.shape:
                problems.append(f"{key}: shape {arr.shape} in state but {ref.shape} expected")
            elif arr.dtype != ref.dtype:
                problems.append(f"{key}: dtype {arr.dtype} in state but {ref.dtype} expected")
        if "step" in state:
            step = np.asarray(state["step"])
            if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
                problems.append(f"step: expected a non-negative integer scalar, got {step!r}")
        if "lr" in state:
            lr = np.asarray(state["lr"])
            if lr.shape != () or lr.dtype.kind != "f" or not np.isfinite(lr) or lr < 0:
                problems.append(f"lr: expected a non-negative float scalar, got {lr!r}")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))

        self.step_count = int(state["step"])
        self.lr = float(state["lr"])
        for name, arrays in self.state.items():
            for i, a in enumerate(arrays):
                np.copyto(a, state[f"{name}.{i}"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    With g = grad + weight_decay * p:  buf = momentum * buf + g, then
    p -= lr * buf (classical) or p -= lr * (g + momentum * buf) (Nesterov); p -= lr * g
    without momentum.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.momentum = _check_rate(momentum, "momentum")
        self.weight_decay = _check_rate(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True needs momentum > 0")
        self._buffer_names = ("momentum",) if self.momentum else ()
        super().__init__(params, lr)
        self._scratch2 = [np.empty_like(p.data) for p in self.params] if self.nesterov else []

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for i, p, g in self._grads():
            d = self._scratch[i]
            if wd:
                np.multiply(p.data, wd, out=d)
                d += g
                g = d
            if mu:
                buf = self.state["momentum"][i]
                buf *= mu
                buf += g
                if self.nesterov:
                    e = self._scratch2[i]
                    np.multiply(buf, mu, out=e)
                    e += g
                    g = e
                else:
                    g = buf
            np.multiply(g, lr, out=d)
            p.data -= d
        self.step_count += 1


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias-corrected moments and optional L2 weight decay.

    With g = grad + weight_decay * p and t the optimiser's step count after increment:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    """

    _buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"Adam betas must be two numbers in [0, 1), got {betas}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _check_rate(eps, "eps")
        self.weight_decay = _check_rate(weight_decay, "weight_decay")
        super().__init__(params, lr)
        self._scratch2 = [np.empty_like(p.data) for p in self.params] if self.weight_decay else []

    def step(self) -> None:
        """Update every parameter that has a gradient, in place; one shared step counter."""
        self.step_count += 1
        t = self.step_count
        b1, b2 = self.betas
        bc1 = 1.0 - b1**t
        root_bc2 = math.sqrt(1.0 - b2**t)
        # NOTE: m̂ / (sqrt(v̂) + eps) = (m / bc1) sqrt(bc2) / (sqrt(v) + eps sqrt(bc2)): the bias
        # corrections fold into two scalars, saving a pass over v.
        step_size, eps_scaled = self.lr * root_bc2 / bc1, self.eps * root_bc2
        wd = self.weight_decay
        for i, p, g in self._grads():
            m, v, s = self.state["exp_avg"][i], self.state["exp_avg_sq"][i], self._scratch[i]
            if wd:
                e = self._scratch2[i]
                np.multiply(p.data, wd, out=e)
                e += g
                g = e
            m *= b1
            np.multiply(g, 1.0 - b1, out=s)
            m += s
            v *= b2
            np.multiply(g, g, out=s)
            s *= 1.0 - b2
            v += s
            np.sqrt(v, out=s)
            s += eps_scaled
            np.divide(m, s, out=s)
            s *= step_size
            p.data -= s


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> float:
    """Scale all gradients in place so their joint L2 norm is at most `max_norm`.

    Returns the norm before clipping as a float. Parameters without a gradient are ignored; when
    every gradient is zero the norm is 0.0 and nothing changes. A non-finite norm (inf or nan) is
    returned as is and no gradient is touched, so the caller can detect it and skip the step.
    """
    max_norm = float(max_norm)
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be a finite positive number, got {max_norm}")
    grads = [p.grad for p in params if p.grad is not None]
    total = 0.0
    # NOTE: squares summed in float64 so that float32 gradients above ~1e19 do not overflow.
    with np.errstate(over="ignore", invalid="ignore"):
        for g in grads:
            flat = g.reshape(-1)
            if flat.dtype == np.float64:
                total += float(np.dot(flat, flat))
            else:
                total += float(np.square(flat, dtype=np.float64).sum())
    norm = math.sqrt(total)
    if not math.isfinite(norm) or norm <= max_norm:
        return norm
    scale = max_norm / norm
    for g in grads:
        g *= scale
    return norm


class LRSchedule:
    """Base schedule: sets `optimizer.lr = lr_at(k)` for step k, starting with k = 0 at once.

    `base_lr` defaults to the optimiser's lr at construction. Call `step()` after each
    `optimizer.step()`; the first update therefore uses `lr_at(0)`.
    """

    def __init__(self, optimizer: Optimizer, base_lr: float | None = None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"a schedule wraps an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = _check_rate(optimizer.lr if base_lr is None else base_lr, "base_lr")
        self.last_step = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, step: int) -> float:
        """Learning rate for update number `step` (0-based); pure, no side effect."""
        raise NotImplementedError(f"{type(self).__name__} does not define lr_at()")

    def step(self) -> float:
        """Advance one step and set the optimiser's lr for the next update; returns it."""
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)
        return self.optimizer.lr

    def state_dict(self) -> dict:
        """Return the schedule's state as a JSON-serialisable dict."""
        return {"kind": type(self).__name__, "step": self.last_step, "base_lr": self.base_lr}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from `state_dict` and set the optimiser's lr to match it."""
        if state.get("kind") != type(self).__name__:
            raise ValueError(
                f"schedule state of kind {state.get('kind')!r} cannot load into "
                f"{type(self).__name__}"
            )
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"schedule state step must be a non-negative int, got {step!r}")
        self.base_lr = _check_rate(state["base_lr"], "base_lr")
        self.last_step = step
        self.optimizer.lr = self.lr_at(step)

    @staticmethod
    def _check_step(step: int) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"schedule step must be a non-negative int, got {step!r}")
        return int(step)


class ConstantLR(LRSchedule):
    """lr_at(k) = base_lr for every step k."""

    def lr_at(self, step: int) -> float:
        """Learning rate for update number `step`: always base_lr."""
        self._check_step(step)
        return self.base_lr


class StepLR(LRSchedule):
    """lr_at(k) = base_lr * gamma ** (k // step_size): decay by gamma every step_size steps."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size <= 0:
            raise ValueError(f"StepLR step_size must be a positive int, got {step_size!r}")
        self.step_size = step_size
        self.gamma = _check_rate(gamma, "StepLR gamma")
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        """Learning rate for update number `step`."""
        return self.base_lr * self.gamma ** (self._check_step(step) // self.step_size)


class CosineLR(LRSchedule):
    """Half-cosine from base_lr at step 0 to min_lr at total_steps, then min_lr:

    lr_at(k) = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(k, T) / T)) / 2.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, min_lr: float = 0.0):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"CosineLR total_steps must be a positive int, got {total_steps!r}")
        self.total_steps = total_steps
        self.min_lr = _check_rate(min_lr, "CosineLR min_lr")
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        """Learning rate for update number `step`."""
        frac = min(self._check_step(step), self.total_steps) / self.total_steps
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


class WarmupLR(LRSchedule):
    """Linear warm-up over `warmup_steps`, then `after` (or a constant base_lr).

    lr_at(k) = base_lr * (k + 1) / warmup_steps for k < warmup_steps, so the first update is
    already non-zero and step warmup_steps - 1 reaches base_lr; afterwards
    lr_at(k) = after.lr_at(k - warmup_steps). `after` must wrap the same optimiser and is used
    only through `lr_at`: call `step()` on the WarmupLR alone.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, after: LRSchedule | None = None):
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps <= 0:
            raise ValueError(f"WarmupLR warmup_steps must be a positive int, got {warmup_steps!r}")
        if after is not None and after.optimizer is not optimizer:
            raise ValueError("WarmupLR and its `after` schedule must wrap the same optimizer")
        self.warmup_steps = warmup_steps
        self.after = after
        super().__init__(optimizer, base_lr=None if after is None else after.base_lr)

    def lr_at(self, step: int) -> float:
        """Learning rate for update number `step`."""
        step = self._check_step(step)
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.after is None:
            return self.base_lr
        return self.after.lr_at(step - self.warmup_steps)

    def state_dict(self) -> dict:
        """Return this schedule's state and that of `after` as a JSON-serialisable dict."""
        state = super().state_dict()
        state["after"] = None if self.after is None else self.after.state_dict()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state from `state_dict` (including `after`) and set the optimiser's lr."""
        inner = state.get("after")
        if (inner is None) != (self.after is None):
            raise ValueError("WarmupLR state and this schedule disagree on having an `after`")
        if self.after is not None:
            self.after.load_state_dict(inner)
        super().load_state_dict(state)


__all__ = [
    "SGD",
    "Adam",
    "ConstantLR",
    "CosineLR",
    "LRSchedule",
    "Optimizer",
    "StepLR",
    "WarmupLR",
    "clip_grad_norm",
]
