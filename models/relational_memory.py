"""The relational memory core (RMC) of Santoro et al., 2018, "Relational Recurrent Neural Networks".

The memory M holds N slots of F = head_size * num_heads features. One step with input x_t:

    x̂ = x_t W_x + b_x                                  (B, F): the input projected to F
    M⁺ = [M; x̂]                                        (B, N + 1, F): the input as an extra row
    for each block:
        A = MHA(LN(M⁺ W_qkv + b_qkv))                  queries scaled by head_size^-1/2
        M⁺ = LN(M⁺ + A)
        M⁺ = LN(M⁺ + MLP(M⁺))                          the MLP is shared by all blocks
    M̃ = M⁺ without its last row                        (B, N, F)
    [ĩ, f̃] = tanh(M) W_m + b_m + x̂ W_u + b_u          per feature ('unit') or per slot ('memory')
    M' = σ(ĩ + input_bias) ⊙ tanh(M̃) + σ(f̃ + forget_bias) ⊙ M
    output = M' flattened                              (B, N * F)

Without gating (gate_style=None) M' = M̃. With use_residual=False both skip connections go, so
the layer norms see A and MLP(M⁺) alone.

Layout differences from the reference are reparametrisations only: the qkv projection is laid
out [Q | K | V] with heads as consecutive blocks inside each third, instead of per-head [q k v]
groups, which permutes the columns of W_qkv and the features of its layer norm.
"""

from __future__ import annotations

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import MLP, LayerNorm, Linear
from tensorgrad.tensor import outer_grad

from ._kernels import linear, make_rng, truncated_normal_init
from .attention import _reference_attention, packed_attention_core
from .core import RecurrentCore, as_input, as_state, float_dtype
from .lstm import _sigmoid

_GATE_STYLES = ("unit", "memory", None)


# ------------------------------------------------------------------------------ fused ops


def append_row(memory: Tensor, row: Tensor) -> Tensor:
    """Fused [M; x]: memory (B, N, F), row (B, F) -> (B, N + 1, F)."""
    out = np.concatenate([memory.data, row.data[:, None, :]], axis=1)  # (B, N + 1, F)
    n = memory.shape[1]

    # a concatenation: each part takes its own slice of the gradient
    def backward(g):
        return g[:, :n], g[:, n]

    return tg.record(out, (memory, row), backward, "append_row")


def gate_inputs(
    memory: Tensor, x_proj: Tensor, w_mem: Tensor, b_mem: Tensor, w_in: Tensor, b_in: Tensor
) -> Tensor:
    """Fused gate pre-activations tanh(M) W_m + b_m + (x̂ W_u + b_u) per slot.

    memory (B, N, F), x_proj (B, F), w_mem and w_in (F, 2G), biases (2G,) -> (B, N, 2G).
    """
    b, n, f = memory.shape
    tm = np.tanh(memory.data).reshape(b * n, f)  # (B * N, F)
    from_input = x_proj.data @ w_in.data  # (B, 2G)
    from_input += b_in.data
    from_input += b_mem.data
    out = (tm @ w_mem.data).reshape(b, n, -1)  # (B, N, 2G)
    out += from_input[:, None, :]  # (B, 1, 2G) broadcast over slots

    # the input term is broadcast over slots, so its gradient is summed over slots first;
    # dM = (g W_mᵀ) (1 - tanh²M)
    def backward(g):
        g_in = g.sum(axis=1)  # (B, 2G)
        g_rows = g.reshape(b * n, -1)  # (B * N, 2G)
        g_mem = None
        if memory.requires_grad:
            sech2 = tm * tm
            np.subtract(1.0, sech2, out=sech2)
            g_mem = g_rows @ w_mem.data.T  # (B * N, F)
            g_mem *= sech2
            g_mem = g_mem.reshape(b, n, f)  # (B, N, F)
        g_x = g_in @ w_in.data.T if x_proj.requires_grad else None
        g_wm = outer_grad(tm, g_rows)
        g_wi = outer_grad(x_proj.data, g_in)
        g_bm = np.ones(len(g_rows), dtype=g.dtype) @ g_rows  # column sums
        return g_mem, g_x, g_wm, g_bm, g_wi, g_in.sum(axis=0)

    return tg.record(out, (memory, x_proj, w_mem, b_mem, w_in, b_in), backward, "gate_inputs")


def gated_update(
    gates: Tensor, attended: Tensor, memory: Tensor, input_bias: float, forget_bias: float
) -> Tensor:
    """Fused M' = σ(ĩ + b_i) ⊙ tanh(M̃) + σ(f̃ + b_f) ⊙ M, dropping the input row of M̃.

    gates (B, N, 2G) with G = F ('unit') or 1 ('memory'), attended (B, N + 1, F) (its last row
    is the input row and is dropped), memory (B, N, F) -> (B, N, F).
    """
    n, g_size = memory.shape[1], gates.shape[-1] // 2
    shift = np.empty(2 * g_size, dtype=gates.dtype)  # (2G,) the two gate biases
    shift[:g_size], shift[g_size:] = input_bias, forget_bias
    act = _sigmoid(gates.data + shift)  # (B, N, 2G): [σ(ĩ + b_i) | σ(f̃ + b_f)]
    gi, gf = act[..., :g_size], act[..., g_size:]  # (B, N, G) each
    tm = np.tanh(attended.data[:, :n])  # (B, N, F)
    out = gi * tm
    out += gf * memory.data

    # dĩ = d tanh(M̃) σ'(ĩ), df̃ = d M σ'(f̃) (summed over F when one gate serves a slot);
    # dM̃ = d i (1 - tanh²M̃) on the kept rows, 0 on the input row; dM = d f
    def backward(d):
        slope = 1.0 - act  # σ' = σ (1 - σ) for both gates at once
        slope *= act
        if g_size == 1:
            di = (d * tm).sum(axis=-1, keepdims=True)  # (B, N, 1)
            df = (d * memory.data).sum(axis=-1, keepdims=True)  # (B, N, 1)
            g_gates = np.concatenate([di, df], axis=-1)  # (B, N, 2)
        else:
            g_gates = np.empty_like(act)  # (B, N, 2F)
            np.multiply(d, tm, out=g_gates[..., :g_size])
            np.multiply(d, memory.data, out=g_gates[..., g_size:])
        g_gates *= slope
        g_att = np.empty_like(attended.data)  # (B, N + 1, F)
        g_att[:, n:] = 0.0
        kept = g_att[:, :n]  # (B, N, F)
        np.multiply(tm, tm, out=kept)
        np.subtract(1.0, kept, out=kept)
        kept *= gi
        kept *= d
        return g_gates, g_att, d * gf

    return tg.record(out, (gates, attended, memory), backward, "gated_update")


# ------------------------------------------------------------------------------ the core


class RelationalMemory(RecurrentCore):
    """Relational memory core: x_t (B, input_size), M (B, N, F) -> (output (B, N*F), M').

    F = head_size * num_heads. Parameters: `input_proj` (input_size -> F); per block
    `qkv[k]` (F -> 3F) with `qkv_norm[k]`, `attn_norm[k]` and `mlp_norm[k]`; one `mlp` of
    `attention_mlp_layers` Linear(F, F) layers shared by all blocks; with gating, `gate_memory`
    and `gate_input` (F -> 2G). Linear weights start as N(0, 1/fan_in) truncated at 2σ and biases
    at 0, as in the reference; layer norms start at scale 1, shift 0. Set
    `record_attention = True` to keep each step's attention weights in `last_attention` (one
    (B, H, N + 1, N + 1) array per block).
    """

    def __init__(
        self,
        input_size: int,
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
        for name, value in (
            ("input_size", input_size),
            ("mem_slots", mem_slots),
            ("head_size", head_size),
            ("num_heads", num_heads),
            ("num_blocks", num_blocks),
            ("attention_mlp_layers", attention_mlp_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"RelationalMemory: {name} must be an int >= 1, got {value!r}")
        if gate_style not in _GATE_STYLES:
            raise ValueError(
                f"RelationalMemory: gate_style must be one of {_GATE_STYLES}, got {gate_style!r}"
            )
        self.input_size = input_size
        self.mem_slots = mem_slots
        self.head_size = head_size
        self.num_heads = num_heads
        self.mem_size = head_size * num_heads
        self.num_blocks = num_blocks
        self.gate_style = gate_style
        self.forget_bias = float(forget_bias)
        self.input_bias = float(input_bias)
        self.use_residual = use_residual
        self.output_size = mem_slots * self.mem_size
        self.dtype = float_dtype(dtype, "RelationalMemory")
        self.record_attention = False
        self.last_attention: list[np.ndarray] = []

        f, gen = self.mem_size, make_rng(rng)
        self.input_proj = Linear(input_size, f, dtype=dtype, rng=gen)
        self.qkv = [Linear(f, 3 * f, dtype=dtype, rng=gen) for _ in range(num_blocks)]
        self.qkv_norm = [LayerNorm(3 * f, dtype=dtype) for _ in range(num_blocks)]
        self.attn_norm = [LayerNorm(f, dtype=dtype) for _ in range(num_blocks)]
        self.mlp_norm = [LayerNorm(f, dtype=dtype) for _ in range(num_blocks)]
        self.mlp = MLP(f, [f] * (attention_mlp_layers - 1), f, dtype=dtype, rng=gen)
        if gate_style is not None:
            gates = 2 * (f if gate_style == "unit" else 1)
            self.gate_memory = Linear(f, gates, dtype=dtype, rng=gen)
            self.gate_input = Linear(f, gates, dtype=dtype, rng=gen)
        for module in self.modules():
            if isinstance(module, Linear):
                truncated_normal_init(module, gen)

    def initial_state(self, batch_size: int) -> Tensor:
        """Identity memory per batch element, zero-padded or truncated to F columns: (B, N, F)."""
        eye = np.eye(self.mem_slots, self.mem_size, dtype=self.dtype)  # (N, F)
        return Tensor(np.broadcast_to(eye, (batch_size, *eye.shape)).copy())  # (B, N, F)

    def _mlp(self, x: Tensor) -> Tensor:
        layers = list(self.mlp.layers)
        for layer in layers[:-1]:
            x = linear(x, layer.weight, layer.bias, relu=True)
        return linear(x, layers[-1].weight, layers[-1].bias)

    def _attend_over_memory(self, mem: Tensor) -> Tensor:
        """Apply the attention blocks to M⁺ (B, N + 1, F) -> (B, N + 1, F)."""
        scale = self.head_size**-0.5
        weights = []
        for qkv, qkv_norm, attn_norm, mlp_norm in zip(
            self.qkv, self.qkv_norm, self.attn_norm, self.mlp_norm
        ):
            h = linear(mem, qkv.weight, qkv.bias)  # (B, N + 1, 3F)
            h = tg.layer_norm(h, qkv_norm.weight, qkv_norm.bias, qkv_norm.eps)
            attended, w = packed_attention_core(h, self.num_heads, scale)  # (B, N + 1, F)
            weights.append(w)
            h = mem + attended if self.use_residual else attended
            mem = tg.layer_norm(h, attn_norm.weight, attn_norm.bias, attn_norm.eps)
            h = self._mlp(mem)
            h = mem + h if self.use_residual else h
            mem = tg.layer_norm(h, mlp_norm.weight, mlp_norm.bias, mlp_norm.eps)
        if self.record_attention:
            self.last_attention = weights
        return mem

    def step(self, x_t: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """x_t (B, input_size), memory (B, N, F) -> (output (B, N*F), new memory (B, N, F))."""
        if not isinstance(x_t, Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            got = x_t.shape if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ValueError(
                f"RelationalMemory: input must be a Tensor (B, {self.input_size}), got {got}"
            )
        b = x_t.shape[0]
        if b == 0:
            raise ValueError(f"RelationalMemory: needs at least one example, got input {x_t.shape}")
        if x_t.dtype != self.dtype:
            raise TypeError(f"RelationalMemory: input dtype {x_t.dtype} != model {self.dtype}")
        shape = (b, self.mem_slots, self.mem_size)
        memory = as_state(memory, self.dtype, shape, "RelationalMemory memory")
        x_proj = linear(x_t, self.input_proj.weight, self.input_proj.bias)  # (B, F)
        attended = self._attend_over_memory(append_row(memory, x_proj))  # (B, N + 1, F)
        if self.gate_style is None:
            new_memory = attended[:, : self.mem_slots]  # (B, N, F)
        else:
            gm, gi = self.gate_memory, self.gate_input
            gates = gate_inputs(memory, x_proj, gm.weight, gm.bias, gi.weight, gi.bias)
            new_memory = gated_update(gates, attended, memory, self.input_bias, self.forget_bias)
        return new_memory.reshape(b, self.output_size), new_memory  # (B, N*F), (B, N, F)

    def forward(self, input, memory: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: input (B, input_size), memory (B, N, F) or None (initial) -> (out, M')."""
        x_t = as_input(input, self.dtype, 2, "RelationalMemory")
        if memory is None:
            memory = self.initial_state(x_t.shape[0])
        return self.step(x_t, memory)

    def extra_repr(self) -> str:
        return (
            f"input={self.input_size}, slots={self.mem_slots}, heads={self.num_heads}x"
            f"{self.head_size}, blocks={self.num_blocks}, gate={self.gate_style}"
        )


def _reference_rmc_step(core: RelationalMemory, x_t: Tensor, memory: Tensor) -> Tensor:
    """Composite twin of `RelationalMemory.step` from primitive ops: -> new memory (B, N, F)."""
    b, n, f = memory.shape
    x_proj = core.input_proj(x_t)  # (B, F)
    mem = tg.concat([memory, x_proj.reshape(b, 1, f)], axis=1)  # (B, N + 1, F)
    for qkv, qkv_norm, attn_norm, mlp_norm in zip(
        core.qkv, core.qkv_norm, core.attn_norm, core.mlp_norm
    ):
        h = qkv_norm(qkv(mem))  # (B, N + 1, 3F)
        q, k, v = h[..., :f], h[..., f : 2 * f], h[..., 2 * f :]
        attended = _reference_attention(q, k, v, core.num_heads, core.head_size**-0.5)
        mem = attn_norm(mem + attended if core.use_residual else attended)
        h = core.mlp(mem)
        mem = mlp_norm(mem + h if core.use_residual else h)
    attended = mem[:, :n]  # (B, N, F)
    if core.gate_style is None:
        return attended
    from_input = core.gate_input(x_proj).reshape(b, 1, -1)  # (B, 1, 2G)
    gates = core.gate_memory(memory.tanh()) + from_input  # (B, N, 2G)
    g = gates.shape[-1] // 2
    i = (gates[..., :g] + core.input_bias).sigmoid()  # (B, N, G)
    fg = (gates[..., g:] + core.forget_bias).sigmoid()  # (B, N, G)
    return i * attended.tanh() + fg * memory
