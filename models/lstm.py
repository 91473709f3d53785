"""Long short-term memory: a fused cell and a sequence wrapper.

Gate order along the 4H pre-activation axis is (i, f, g, o):

    z = [x_t, h_{t-1}] W + b                    W (D + H, 4H), one matmul for all gates
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

A step records three nodes: the gate matmul (`concat_linear`), the cell update (`lstm_cell`)
and the output (`lstm_hidden`). `_reference_lstm_step` is their composite twin from primitive ops.
Over a whole sequence, `unroll` records one node instead (`lstm_sequence`), whose twin is the
same steps in a loop.
"""

from __future__ import annotations

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import Parameter

from ._kernels import concat_linear, make_rng
from .core import (
    RecurrentCore,
    as_input,
    as_state,
    check_size,
    float_dtype,
    prepare_sequence,
    state_parts,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # NOTE: σ(x) = (1 + tanh(x / 2)) / 2 cannot overflow and keeps the dtype of x.
    s = x * 0.5
    np.tanh(s, out=s)
    s *= 0.5
    s += 0.5
    return s


def _sigmoid_inplace(x: np.ndarray) -> None:
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5


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


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Fused LSTM over a whole sequence: x (B, T, D), h0 and c0 (B, H) -> (B, T + 1, H).

    Rows 0..T-1 of the output are h_1..h_T and row T is c_T. One node for the sequence:
    backpropagation through time runs inside one closure, and the weight gradient is one
    product over all steps.
    """
    b, steps, d = x.shape
    n = h0.shape[1]
    dt = x.dtype
    w = weight.data  # (D + H, 4H)
    # NOTE: the step works on transposed, feature-major arrays: each gate is then a contiguous
    # block of rows, and NumPy's elementwise loops run about twice as fast as on column slices.
    xh = np.empty((steps + 1, d + n, b), dtype=dt)  # [x_t; h_t] per step, (D + H, B)
    xh[:steps, :d] = x.data.transpose(1, 2, 0)  # (T, D, B)
    xh[0, d:] = h0.data.T
    acts = np.empty((steps, 4 * n, b), dtype=dt)  # gate activations [i; f; g; o] per step
    cs = np.empty((steps + 1, n, b), dtype=dt)  # c_0 .. c_T
    tcs = np.empty((steps, n, b), dtype=dt)  # tanh(c_1) .. tanh(c_T)
    cs[0] = c0.data.T
    bias_col = bias.data[:, None]  # (4H, 1)
    for t in range(steps):
        a = acts[t]  # (4H, B)
        np.matmul(w.T, xh[t], out=a)
        a += bias_col
        _sigmoid_inplace(a[: 2 * n])
        np.tanh(a[2 * n : 3 * n], out=a[2 * n : 3 * n])
        _sigmoid_inplace(a[3 * n :])
        i, f, g, o = a[:n], a[n : 2 * n], a[2 * n : 3 * n], a[3 * n :]
        np.multiply(f, cs[t], out=cs[t + 1])
        cs[t + 1] += i * g
        np.tanh(cs[t + 1], out=tcs[t])
        np.multiply(o, tcs[t], out=xh[t + 1, d:])
    out = np.empty((b, steps + 1, n), dtype=dt)
    out[:, :steps] = xh[1:, d:].transpose(2, 0, 1)  # (B, T, H)
    out[:, steps] = cs[steps].T

    # Per step, from dh (output and next step) and dc (next step): dz_o = dh tanh(c) σ'(z_o);
    # dc += dh o (1 - tanh²c); dz_i = dc g σ'(z_i); dz_f = dc c_prev σ'(z_f);
    # dz_g = dc i (1 - g²); then dc_prev = dc f and dh_prev = Wh dz. dW = Σ [x; h_prev] dzᵀ.
    def backward(gout):
        gh = gout[:, :steps].transpose(1, 2, 0)  # (T, H, B)
        dc = gout[:, steps].T.copy()  # (H, B), a private copy: updated in place below
        dz = np.empty_like(acts)  # (T, 4H, B)
        tmp = np.empty((n, b), dtype=dt)
        dh_next = None
        for t in range(steps - 1, -1, -1):
            a, dzt = acts[t], dz[t]
            i, f, g, o = a[:n], a[n : 2 * n], a[2 * n : 3 * n], a[3 * n :]
            zi, zf, zg, zo = dzt[:n], dzt[n : 2 * n], dzt[2 * n : 3 * n], dzt[3 * n :]
            dh = np.ascontiguousarray(gh[t]) if dh_next is None else gh[t] + dh_next
            np.multiply(tcs[t], tcs[t], out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp
            np.subtract(1.0, o, out=zo)
            zo *= o
            zo *= tcs[t]
            zo *= dh
            np.subtract(1.0, i, out=zi)
            zi *= i
            zi *= g
            zi *= dc
            np.subtract(1.0, f, out=zf)
            zf *= f
            zf *= cs[t]
            zf *= dc
            np.multiply(g, g, out=zg)
            np.subtract(1.0, zg, out=zg)
            zg *= i
            zg *= dc
            dc *= f
            if t > 0 or h0.requires_grad:
                dh_next = w[d:] @ dzt  # (H, B)
        gx = gw = gb = None
        if x.requires_grad:
            gx = (w[:d] @ dz).transpose(2, 0, 1)  # (T, D, B) -> (B, T, D)
        rows = dz.transpose(1, 0, 2).reshape(4 * n, steps * b)  # (4H, T * B)
        if weight.requires_grad:
            cols = xh[:steps].transpose(1, 0, 2).reshape(d + n, steps * b)  # (D + H, T * B)
            gw = cols @ rows.T  # (D + H, 4H)
        if bias.requires_grad:
            gb = rows @ np.ones(steps * b, dtype=dt)  # row sums
        gh0 = dh_next.T if h0.requires_grad else None
        gc0 = dc.T if c0.requires_grad else None
        return gx, gh0, gc0, gw, gb

    return tg.record(out, (x, h0, c0, weight, bias), backward, "lstm_sequence")


def _reference_lstm_sequence(
    x: Tensor, h0: Tensor, c0: Tensor, weight: Tensor, bias: Tensor
) -> Tensor:
    """Composite twin of `lstm_sequence` from primitive ops: -> (B, T + 1, H)."""
    h, c, rows = h0, c0, []
    for t in range(x.shape[1]):
        h, c = _reference_lstm_step(x[:, t], h, c, weight, bias)
        rows.append(h)
    return tg.stack([*rows, c], axis=1)


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
        check_size(input_size, "input_size", "LSTMCell")
        check_size(hidden_size, "hidden_size", "LSTMCell")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.dtype = float_dtype(dtype, "LSTMCell")
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
        b = self._batch_of(x_t)
        h, c = self._check_state(state, b)
        z = concat_linear(x_t, h, self.weight, self.bias)  # (B, 4H)
        c = lstm_cell(z, c)
        h = lstm_hidden(z, c)
        return h, (h, c)

    def _batch_of(self, x_t: Tensor) -> int:
        """Check one step's input x_t (B, input_size) with B >= 1; return B."""
        if not isinstance(x_t, Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            got = x_t.shape if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(f"LSTMCell: x_t must be a Tensor (B, {self.input_size}), got {got}")
        if x_t.shape[0] == 0:
            raise ValueError(f"LSTMCell: needs at least one example, got x_t {x_t.shape}")
        return x_t.shape[0]

    def _check_state(self, state, batch: int) -> tuple[Tensor, Tensor]:
        """Check (h, c), each (batch, H) of the model dtype; ndarrays are wrapped."""
        h, c = state_parts(state, ("h", "c"), "LSTMCell")
        shape = (batch, self.hidden_size)
        return as_state(h, self.dtype, shape, "LSTMCell state h"), as_state(
            c, self.dtype, shape, "LSTMCell state c"
        )

    def run_sequence(self, x, state: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The fused sequence: x (B, T, input_size) -> (B, T + 1, H), rows h_1..h_T then c_T."""
        x, state = prepare_sequence(self, x, state)
        h, c = self._check_state(state, x.shape[0])
        return lstm_sequence(x, h, c, self.weight, self.bias)

    def unroll(self, x, state: tuple[Tensor, Tensor] | None = None) -> tuple[list[Tensor], tuple]:
        """Run over x (B, T, input_size) -> ([h_t (B, H)] * T, (h_T, c_T)), as one fused node."""
        seq = self.run_sequence(x, state)
        steps = seq.shape[1] - 1
        if steps == 0:
            x, state = prepare_sequence(self, x, state)
            return [], self._check_state(state, x.shape[0])
        outputs = [seq[:, t] for t in range(steps)]
        return outputs, (outputs[-1], seq[:, steps])

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

    def unroll(self, x, state: tuple[Tensor, Tensor] | None = None) -> tuple[list[Tensor], tuple]:
        """Run over x (B, T, input_size) -> ([h_t (B, H)] * T, (h_T, c_T)), as one fused node."""
        return self.cell.unroll(x, state)

    def forward(self, x, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple]:
        """x (B, T, input_size) -> (outputs (B, T, H), (h_T, c_T)); no step is detached."""
        seq = self.cell.run_sequence(x, state)
        steps = seq.shape[1] - 1
        if steps == 0:
            raise ValueError(f"LSTM: the input sequence has no steps (x {x.shape})")
        return seq[:, :steps], (seq[:, steps - 1], seq[:, steps])

    def extra_repr(self) -> str:
        return f"{self.input_size} -> {self.hidden_size}"
