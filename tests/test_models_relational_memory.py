"""Relational memory core: initial memory, a hand-computed step, its composite twin, gradients."""

import math

import numpy as np
import pytest

import tensorgrad as tg
from models import RelationalMemory
from models.relational_memory import _reference_rmc_step
from tensorgrad import Tensor, gradcheck


def np_layer_norm(x, eps=1e-5):
    xc = x - x.mean(-1, keepdims=True)
    return xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps)


def rmc64(**kw):
    args = dict(input_size=3, mem_slots=2, head_size=2, num_heads=2, dtype=np.float64, rng=0)
    args.update(kw)
    return RelationalMemory(**args)


@pytest.mark.parametrize("slots,head,heads", [(2, 2, 2), (5, 2, 2), (4, 4, 1)])
def test_initial_state_is_padded_or_truncated_identity(slots, head, heads):
    core = RelationalMemory(3, slots, head, heads)
    m = core.initial_state(3)
    f = head * heads
    assert m.shape == (3, slots, f) and m.dtype == np.float32 and not m.requires_grad
    for b in range(3):
        np.testing.assert_array_equal(m.data[b], np.eye(slots, f))
    if slots > f:
        assert np.all(m.data[:, f:] == 0)  # truncation leaves the extra slots empty


def test_parameter_shapes_and_count():
    core = RelationalMemory(16, 4, 16, 4)
    f = 64
    shapes = {name: p.shape for name, p in core.named_parameters()}
    assert shapes["input_proj.weight"] == (16, f)
    assert shapes["qkv.0.weight"] == (f, 3 * f) and shapes["qkv_norm.0.weight"] == (3 * f,)
    assert shapes["gate_memory.weight"] == (f, 2 * f) and shapes["gate_input.weight"] == (f, 2 * f)
    assert shapes["mlp.layers.1.weight"] == (f, f) and "mlp.layers.2.weight" not in shapes
    expected = (16 * f + f) + (f * 3 * f + 3 * f) + 2 * 3 * f + 2 * 2 * f
    expected += 2 * (f * f + f) + 2 * (f * 2 * f + 2 * f)
    assert core.num_parameters() == expected == 39168
    memory_style = RelationalMemory(16, 4, 16, 4, gate_style="memory")
    assert memory_style.gate_memory.weight.shape == (f, 2)
    assert not hasattr(RelationalMemory(16, 4, 16, 4, gate_style=None), "gate_memory")
    two_blocks = RelationalMemory(16, 4, 16, 4, num_blocks=2)
    per_block = f * 3 * f + 3 * f + 2 * 3 * f + 2 * 2 * f  # qkv and its norm, two norms
    assert two_blocks.num_parameters() == 39168 + per_block  # the MLP is shared


@pytest.mark.parametrize("gate_style", ["unit", "memory", None])
def test_one_step_by_hand_with_zero_weights(gate_style):
    """With every Linear at zero, q = k = v = 0, attention adds 0 and the MLP adds 0.

    Each identity row e_j is then layer-normed twice, the input row stays 0, and the gates sit
    at σ(input_bias) and σ(forget_bias).
    """
    core = rmc64(gate_style=gate_style, input_bias=0.3, forget_bias=-0.7)
    for name, p in core.named_parameters():
        if "norm" not in name:
            p.data[:] = 0.0
    x = np.random.default_rng(0).standard_normal((2, 3))
    out, m = core(x)
    e = np.eye(2, 4)
    attended = np_layer_norm(np_layer_norm(e))
    if gate_style is None:
        expect = attended
    else:
        expect = np.tanh(attended) / (1 + math.exp(-0.3)) + e / (1 + math.exp(0.7))
    np.testing.assert_allclose(m.data, np.broadcast_to(expect, (2, 2, 4)), rtol=1e-12)
    np.testing.assert_array_equal(out.data, m.data.reshape(2, 8))


def test_zero_queries_and_keys_attend_uniformly():
    """Zero scale and shift on the Q and K thirds of the qkv layer norm make q = k = 0, so every
    query weights the N + 1 rows equally, 1 / (N + 1)."""
    core = rmc64(mem_slots=3)
    core.record_attention = True
    core.qkv_norm[0].weight.data[:8] = 0.0  # features [Q | K | V], F = 4 each
    core.qkv_norm[0].bias.data[:8] = 0.0
    core(np.ones((2, 3)))
    (w,) = core.last_attention
    assert w.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(w, 0.25, rtol=1e-12)


CONFIGS = [
    dict(),
    dict(gate_style="memory"),
    dict(gate_style=None),
    dict(num_blocks=2),
    dict(num_blocks=3, gate_style="memory", attention_mlp_layers=3),
    dict(use_residual=False),
    dict(attention_mlp_layers=1, mem_slots=5),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_step_matches_composite_twin_in_value_and_gradient(config):
    core = rmc64(**config)
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    mem = Tensor(rng.standard_normal((2, core.mem_slots, 4)), requires_grad=True)
    upstream = rng.standard_normal((2, core.mem_slots, 4))
    params = [x, mem, *core.parameters()]

    _, fused = core.step(x, mem)
    fused.backward(upstream)
    fused_grads = [p.grad.copy() for p in params]
    for p in params:
        p.grad = None
    twin = _reference_rmc_step(core, x, mem)
    twin.backward(upstream)
    np.testing.assert_allclose(fused.data, twin.data, rtol=1e-12, atol=1e-13)
    for p, g in zip(params, fused_grads):
        np.testing.assert_allclose(g, p.grad, rtol=1e-9, atol=1e-12)


def test_output_shapes():
    for config in CONFIGS:
        core = RelationalMemory(5, 3, 4, 2, **{k: v for k, v in config.items() if k != "mem_slots"})
        out, m = core(np.ones((4, 5)))
        assert out.shape == (4, 24) and m.shape == (4, 3, 8)
        assert out.dtype == m.dtype == np.float32
        np.testing.assert_array_equal(out.data, m.data.reshape(4, 24))


def test_residual_ablation_changes_the_result():
    x = np.random.default_rng(0).standard_normal((2, 3))
    with_res = rmc64(rng=5)(x)[1].data
    without = rmc64(rng=5, use_residual=False)(x)[1].data
    assert not np.allclose(with_res, without)


@pytest.mark.parametrize(
    "config",
    [dict(), dict(gate_style="memory", num_blocks=2), dict(gate_style=None, use_residual=False)],
    ids=str,
)
def test_gradcheck_over_three_steps(config):
    core = rmc64(rng=3, **config)
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((2, 3, 3)), requires_grad=True)
    mem0 = Tensor(core.initial_state(2).data + 0.1 * rng.standard_normal((2, 2, 4)),
                  requires_grad=True)  # fmt: skip

    def fn(x, mem0, *_params):
        outputs, _ = core.unroll(x, mem0)
        return tg.stack(outputs, axis=1)  # (B, T, N*F)

    gradcheck(fn, [x, mem0, *core.parameters()])


def test_every_parameter_gets_a_gradient_over_a_short_sequence():
    core = RelationalMemory(5, 3, 4, 2, num_blocks=2, rng=0)
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    outputs, _ = core.unroll(x)
    target = np.random.default_rng(1).standard_normal(outputs[-1].shape).astype(np.float32)
    ((outputs[-1] - target) ** 2).sum().backward()
    for name, p in core.named_parameters():
        assert p.grad is not None and np.abs(p.grad).max() > 0, name
        assert p.grad.dtype == np.float32, name


def test_record_attention_flag():
    core = RelationalMemory(5, 3, 4, 2, num_blocks=2, rng=0)
    core(np.ones((2, 5)))
    assert core.last_attention == []
    core.record_attention = True
    core(np.ones((2, 5)))
    assert len(core.last_attention) == 2
    for w in core.last_attention:
        assert w.shape == (2, 2, 4, 4)
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="gate_style"):
        RelationalMemory(3, 2, 2, 2, gate_style="slot")
    with pytest.raises(ValueError, match="num_blocks must be an int >= 1, got 0"):
        RelationalMemory(3, 2, 2, 2, num_blocks=0)
    with pytest.raises(ValueError, match="attention_mlp_layers"):
        RelationalMemory(3, 2, 2, 2, attention_mlp_layers=0)
    core = RelationalMemory(3, 2, 2, 2)
    with pytest.raises(ValueError, match=r"input must be a Tensor \(B, 3\), got \(2, 4\)"):
        core(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"memory: expected shape \(2, 2, 4\), got \(2, 3, 4\)"):
        core(np.ones((2, 3)), Tensor(np.zeros((2, 3, 4), np.float32)))


def test_initialisation_is_truncated_normal_and_reproducible():
    core = RelationalMemory(16, 4, 16, 4, rng=7)
    for name, p in core.named_parameters():
        if "norm" in name:
            expect = 1.0 if name.endswith("weight") else 0.0
            np.testing.assert_array_equal(p.data, expect, err_msg=name)
        elif name.endswith("bias"):
            np.testing.assert_array_equal(p.data, 0.0, err_msg=name)
        else:
            scaled = p.data * math.sqrt(p.shape[0])  # N(0, 1) truncated at 2
            assert np.abs(scaled).max() <= 2.0, name
            if p.size > 1000:  # truncated at 2σ the variance is about 0.774
                assert 0.7 < scaled.var() < 0.85, name
    again = RelationalMemory(16, 4, 16, 4, rng=7)
    other = RelationalMemory(16, 4, 16, 4, rng=8)
    for (name, p), q, r in zip(core.named_parameters(), again.parameters(), other.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
        if "weight" in name and "norm" not in name:
            assert not np.array_equal(p.data, r.data), name


def test_step_rejects_a_memory_of_the_wrong_dtype_or_shape():
    core = RelationalMemory(6, 3, 4, 2, dtype=np.float32, rng=0)
    x = Tensor(np.ones((2, 6), dtype=np.float32))
    mem = core.initial_state(2)
    with pytest.raises(TypeError, match="memory: expected dtype float32.*got float64"):
        core.step(x, Tensor(mem.data.astype(np.float64)))
    with pytest.raises(ValueError, match=r"memory: expected shape \(2, 3, 8\), got \(2, 4, 8\)"):
        core.step(x, Tensor(np.zeros((2, 4, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"at least one example.*\(0, 6\)"):
        core(np.zeros((0, 6), dtype=np.float32))
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        RelationalMemory(6, 3, 4, 2, dtype=np.float16)
    out, new = core.step(x, mem.data.astype(np.float64))  # an ndarray is cast to the model dtype
    np.testing.assert_array_equal(new.data, core.step(x, mem)[1].data)
    assert out.dtype == new.dtype == np.float32
