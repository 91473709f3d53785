"""An LSTM cell that writes to and reads from a relational memory.

With x_t (B, D), state (h, c, M), hidden size H and memory M (B, N, F), F = head_size * num_heads:

    z = [x_t, h_{t-1}] W + b,  gates (i, f, g, o)           (B, 4H), one matmul
    c_t = σ(z_f) ⊙ c_{t-1} + σ(z_i) ⊙ tanh(z_g)
    u_t = σ(z_o) ⊙ tanh(c_t)                                 the LSTM path, (B, H)
    M_t = RMC(u_t, M_{t-1})                                  write: u_t is the memory's input row
    r_t = MHA(u_t W_q; M_t W_k, M_t W_v) W_r + b_r           read: each head attends over slots
    α_t = σ([u_t, r_t] W_α + b_α)                            per-unit mixing gate, (B, H)
    h_t = α_t ⊙ u_t + (1 - α_t) ⊙ r_t

The output is h_t and the new state (h_t, c_t, M_t). RMC is `RelationalMemory` with the same
gating and block options; MHA scales scores by head_size^-1/2.
"""

from __future__ import annotations

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import Linear

from ._kernels import concat_linear, linear, make_rng
from .attention import attention_core
from .core import RecurrentCore, as_input, as_state, float_dtype, state_parts
from .lstm import LSTMCell, _sigmoid, lstm_cell, lstm_hidden
from .relational_memory import RelationalMemory


def gated_mix(a: Tensor, u: Tensor, r: Tensor) -> Tensor:
    """Fused σ(a) ⊙ u + (1 - σ(a)) ⊙ r: three (B, H) tensors -> (B, H)."""
    alpha = _sigmoid(a.data)
    diff = u.data - r.data
    out = r.data + alpha * diff

    # out = r + α (u - r): da = d (u - r) α (1 - α), du = d α, dr = d (1 - α)
    def backward(d):
        return d * diff * alpha * (1 - alpha), d * alpha, d * (1 - alpha)

    return tg.record(out, (a, u, r), backward, "gated_mix")


def _reference_gated_mix(a: Tensor, u: Tensor, r: Tensor) -> Tensor:
    """Composite twin of `gated_mix` from primitive ops."""
    alpha = a.sigmoid()
    return alpha * u + (1 - alpha) * r


class RelationalRNNCell(RecurrentCore):
    """LSTM step with a relational-memory read/write: x_t (B, D), (h, c, M) -> (h', (h', c', M')).

    Parameters: `lstm` (an LSTMCell), `memory` (a RelationalMemory whose input is the LSTM
    output), the read projections `read_query` (H -> F), `read_key`, `read_value` (F -> F),
    `read_out` (F -> H) and the mixing gate `mix` ([u, r] -> H). The last read's attention
    weights (B, heads, 1, N) are kept in `last_read_weights`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mem_slots: int,
        head_size: int,
        num_heads: int,
        num_blocks: int = 1,
        attention_mlp_layers: int = 2,
        gate_style: str | None = "unit",
        forget_bias: float = 1.0,
        input_bias: float = 0.0,
        use_residual: bool = True,
        dtype=np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        gen = make_rng(rng)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.dtype = float_dtype(dtype, "RelationalRNNCell")
        self.lstm = LSTMCell(input_size, hidden_size, dtype=dtype, rng=gen)
        self.memory = RelationalMemory(
            hidden_size,
            mem_slots,
            head_size,
            num_heads,
            num_blocks=num_blocks,
            attention_mlp_layers=attention_mlp_layers,
            gate_style=gate_style,
            forget_bias=forget_bias,
            input_bias=input_bias,
            use_residual=use_residual,
            dtype=dtype,
            rng=gen,
        )
        f = self.memory.mem_size
        self.read_query = Linear(hidden_size, f, bias=False, dtype=dtype, rng=gen)
        self.read_key = Linear(f, f, bias=False, dtype=dtype, rng=gen)
        self.read_value = Linear(f, f, bias=False, dtype=dtype, rng=gen)
        self.read_out = Linear(f, hidden_size, dtype=dtype, rng=gen)
        self.mix = Linear(2 * hidden_size, hidden_size, dtype=dtype, rng=gen)
        self.last_read_weights: np.ndarray | None = None

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """Return (h, c) zeros (B, H) and the memory's identity initial state (B, N, F)."""
        h, c = self.lstm.initial_state(batch_size)
        return h, c, self.memory.initial_state(batch_size)

    def step(self, x_t: Tensor, state: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """x_t (B, input_size), (h, c, M) -> (h' (B, H), (h', c', M'))."""
        if not isinstance(x_t, Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            got = x_t.shape if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(
                f"RelationalRNNCell: x_t must be a Tensor (B, {self.input_size}), got {got}"
            )
        b = x_t.shape[0]
        if b == 0:
            raise ValueError(f"RelationalRNNCell: needs at least one example, got x_t {x_t.shape}")
        h, c, memory = state_parts(state, ("h", "c", "memory"), "RelationalRNNCell")
        hidden = (b, self.hidden_size)
        h = as_state(h, self.dtype, hidden, "RelationalRNNCell state h")
        c = as_state(c, self.dtype, hidden, "RelationalRNNCell state c")
        mem_shape = (b, self.memory.mem_slots, self.memory.mem_size)
        memory = as_state(memory, self.dtype, mem_shape, "RelationalRNNCell state memory")
        z = concat_linear(x_t, h, self.lstm.weight, self.lstm.bias)  # (B, 4H)
        c = lstm_cell(z, c)
        u = lstm_hidden(z, c)  # (B, H)

        _, memory = self.memory.step(u, memory)  # (B, N, F)
        q = linear(u.reshape(b, 1, self.hidden_size), self.read_query.weight)  # (B, 1, F)
        k = linear(memory, self.read_key.weight)  # (B, N, F)
        v = linear(memory, self.read_value.weight)  # (B, N, F)
        scale = self.memory.head_size**-0.5
        read, self.last_read_weights = attention_core(q, k, v, self.memory.num_heads, scale)
        r = linear(read, self.read_out.weight, self.read_out.bias).reshape(b, -1)  # (B, H)

        h = gated_mix(concat_linear(u, r, self.mix.weight, self.mix.bias), u, r)
        return h, (h, c, memory)

    def forward(self, x_t, state: tuple[Tensor, Tensor, Tensor] | None = None):
        """One step from x_t (B, input_size); a missing state starts at `initial_state`."""
        x_t = as_input(x_t, self.dtype, 2, "RelationalRNNCell")
        return self.step(x_t, self.initial_state(x_t.shape[0]) if state is None else state)

    def extra_repr(self) -> str:
        return f"{self.input_size} -> {self.hidden_size}"
