"""Long short-term memory: a fused cell and a sequence wrapper.

Gate order along the 4H pre-activation axis is (i, f, g, o):

    z = [x_t, h_{t-1}] W + b                    W (D + H, 4H), one matmul for all gates
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

A step records three nodes: the gate matmul (`concat_linear`), the cell update (`lstm_cell`)
and the output (`lstm_hidden`). `_reference_lstm_step` is their composite twin from primitive ops.
"""

from __future__ import annotations

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import Parameter

from ._kernels import concat_linear, make_rng
from .core import RecurrentCore, as_input


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # NOTE: σ(x) = (1 + tanh(x / 2)) / 2 cannot overflow and keeps the dtype of x.
    s = x * 0.5
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


def lstm_cell(z: Tensor, c: Tensor) -> Tensor:
    """Fused cell update c' = σ(z_i) ⊙ tanh(z_g) + σ(z_f) ⊙ c: z (B, 4H), c (B, H) -> (B, H)."""
    n = c.shape[-1]
    zd = z.data
    gates = _sigmoid(zd[:, : 2 * n])  # (B, 2H): [i | f]
    i, f = gates[:, :n], gates[:, n:]
    g_ = np.tanh(zd[:, 2 * n : 3 * n])
    c_new = f * c.data
    c_new += i * g_

    # dz_i = d g σ'(z_i), dz_f = d c σ'(z_f), dz_g = d i (1 - g²), dz_o = 0; dc = d f
    def backward(d):
        gz = np.empty_like(zd)
        slope = 1.0 - gates  # σ' = σ (1 - σ), for both gates at once
        slope *= gates
        np.multiply(d * g_, slope[:, :n], out=gz[:, :n])
        np.multiply(d * c.data, slope[:, n:], out=gz[:, n : 2 * n])
        dg = g_ * g_
        np.subtract(1.0, dg, out=dg)
        dg *= i
        np.multiply(d, dg, out=gz[:, 2 * n : 3 * n])
        gz[:, 3 * n :] = 0.0
        return gz, d * f

    return tg.record(c_new, (z, c), backward, "lstm_cell")


def lstm_hidden(z: Tensor, c: Tensor) -> Tensor:
    """Fused output h = σ(z_o) ⊙ tanh(c): z (B, 4H), c (B, H) -> (B, H)."""
    n = c.shape[-1]
    o = _sigmoid(z.data[:, 3 * n :])
    tc = np.tanh(c.data)

    # dz_o = d tanh(c) σ'(z_o), other gates 0; dc = d o (1 - tanh²(c))
    def backward(d):
        gz = np.zeros_like(z.data)
        do = d * tc
        do *= o
        np.multiply(do, 1.0 - o, out=gz[:, 3 * n :])
        dc = tc * tc
        np.subtract(1.0, dc, out=dc)
        dc *= o
        dc *= d
        return gz, dc

    return tg.record(o * tc, (z, c), backward, "lstm_hidden")


def _reference_lstm_step(
    x: Tensor, h: Tensor, c: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """Composite twin of one fused step from primitive ops: -> (h', c'), each (B, H)."""
    n = c.shape[-1]
    z = tg.concat([x, h], axis=1) @ weight + bias  # (B, 4H)
    i, f, g, o = z[:, :n], z[:, n : 2 * n], z[:, 2 * n : 3 * n], z[:, 3 * n :]
    c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c_new.tanh(), c_new


class LSTMCell(RecurrentCore):
    """One LSTM step: x_t (B, input_size), state (h, c) each (B, H) -> (h', (h', c')).

    Parameters: `weight` (input_size + H, 4H) acting on [x_t, h], gate order (i, f, g, o), and
    `bias` (4H,). Weights start uniform in ±1/sqrt(input_size + H); biases start at 0 except the
    forget gate's, at `forget_bias` (1 by default) so the cell remembers early in training.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        forget_bias: float = 1.0,
        dtype=np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"LSTMCell sizes must be >= 1, got input_size={input_size}, "
                f"hidden_size={hidden_size}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.dtype = np.dtype(dtype)
        gen = make_rng(rng)
        bound = 1.0 / np.sqrt(input_size + hidden_size)
        shape = (input_size + hidden_size, 4 * hidden_size)
        self.weight = Parameter(gen.uniform(-bound, bound, shape).astype(self.dtype))
        bias = np.zeros(4 * hidden_size, dtype=self.dtype)
        bias[hidden_size : 2 * hidden_size] = forget_bias
        self.bias = Parameter(bias)

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Return zero (h, c), each (batch_size, hidden_size)."""
        zeros = np.zeros((batch_size, self.hidden_size), dtype=self.dtype)
        return Tensor(zeros), Tensor(zeros.copy())

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """x_t (B, input_size), (h, c) each (B, H) -> (h', (h', c'))."""
        h, c = state
        if x_t.shape[-1] != self.input_size or h.shape != c.shape or h.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"LSTMCell({self.input_size}, {self.hidden_size}): got x_t "
                f"{x_t.shape}, h {h.shape}, c {c.shape}"
            )
        z = concat_linear(x_t, h, self.weight, self.bias)  # (B, 4H)
        c = lstm_cell(z, c)
        h = lstm_hidden(z, c)
        return h, (h, c)

    def forward(self, x_t, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple]:
        """One step from a (B, input_size) input; a missing state starts at zeros."""
        x_t = as_input(x_t, self.dtype, 2, "LSTMCell")
        return self.step(x_t, self.initial_state(x_t.shape[0]) if state is None else state)

    def extra_repr(self) -> str:
        return f"{self.input_size} -> {self.hidden_size}"


class LSTM(RecurrentCore):
    """An LSTM over a sequence: x (B, T, input_size) -> (outputs (B, T, H), (h_T, c_T)).

    Wraps one `LSTMCell` (parameters `cell.weight`, `cell.bias`) and also follows the core
    protocol itself, so a runner may step it directly.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        forget_bias: float = 1.0,
        dtype=np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        self.cell = LSTMCell(input_size, hidden_size, forget_bias, dtype, rng)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.dtype = self.cell.dtype

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Return zero (h, c), each (batch_size, hidden_size)."""
        return self.cell.initial_state(batch_size)

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """x_t (B, input_size), (h, c) -> (h', (h', c'))."""
        return self.cell.step(x_t, state)

    def forward(self, x, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple]:
        """x (B, T, input_size) -> (outputs (B, T, H), (h_T, c_T)); no step is detached."""
        outputs, state = self.unroll(x, state)
        return tg.stack(outputs, axis=1), state

    def extra_repr(self) -> str:
        return f"{self.input_size} -> {self.hidden_size}"
