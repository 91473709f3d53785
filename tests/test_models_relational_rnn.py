"""Relational RNN cell: its docstring equations as a composite twin, gradients, shapes."""

import numpy as np
import pytest

import tensorgrad as tg
from models import RelationalRNNCell
from models.attention import _reference_attention
from models.lstm import _reference_lstm_step
from models.relational_memory import _reference_rmc_step
from tensorgrad import Tensor, gradcheck


def cell64(**kw):
    args = dict(input_size=3, hidden_size=5, mem_slots=2, head_size=2, num_heads=2, rng=0)
    args.update(kw)
    return RelationalRNNCell(**args, dtype=np.float64)


def twin_step(cell, x, state):
    """The equations of the RelationalRNNCell docstring, spelt out in primitive ops."""
    h, c, m = state
    b = x.shape[0]
    u, c = _reference_lstm_step(x, h, c, cell.lstm.weight, cell.lstm.bias)
    m = _reference_rmc_step(cell.memory, u, m)
    q = u.reshape(b, 1, -1) @ cell.read_query.weight  # (B, 1, F)
    k = m @ cell.read_key.weight
    v = m @ cell.read_value.weight
    read = _reference_attention(q, k, v, cell.memory.num_heads, cell.memory.head_size**-0.5)
    r = (read @ cell.read_out.weight + cell.read_out.bias).reshape(b, -1)
    alpha = (tg.concat([u, r], axis=1) @ cell.mix.weight + cell.mix.bias).sigmoid()
    h = alpha * u + (1 - alpha) * r
    return h, c, m


@pytest.mark.parametrize("config", [dict(), dict(gate_style="memory", num_blocks=2)], ids=str)
def test_step_matches_docstring_equations(config):
    cell = cell64(**config)
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    state = tuple(
        Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 5), (2, 5), (2, 2, 4)]
    )
    leaves = [x, *state, *cell.parameters()]
    up = [rng.standard_normal(s) for s in [(2, 5), (2, 5), (2, 2, 4)]]

    def total(outs):
        return sum(((o * u).sum() for o, u in zip(outs, up)), Tensor(np.zeros(())))

    h, (_, c, m) = cell.step(x, state)
    total([h, c, m]).backward()
    fused_grads = [p.grad.copy() for p in leaves]
    for p in leaves:
        p.grad = None
    twin = twin_step(cell, x, state)
    total(twin).backward()
    for fused, ref in zip((h, c, m), twin):
        np.testing.assert_allclose(fused.data, ref.data, rtol=1e-12, atol=1e-13)
    for p, g in zip(leaves, fused_grads):
        np.testing.assert_allclose(g, p.grad, rtol=1e-9, atol=1e-12)


def test_gradcheck_over_three_steps():
    cell = cell64(rng=2)
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 3, 3)), requires_grad=True)
    h0 = Tensor(0.5 * rng.standard_normal((2, 5)), requires_grad=True)

    def fn(x, h0, *_params):
        _, c0, m0 = cell.initial_state(2)
        outputs, (_, c, m) = cell.unroll(x, (h0, c0, m0))
        return tg.concat([tg.stack(outputs, axis=1).reshape(2, -1), c, m.reshape(2, -1)], 1)

    gradcheck(fn, [x, h0, *cell.parameters()])


def test_shapes_state_and_read_weights():
    cell = RelationalRNNCell(4, 6, mem_slots=3, head_size=4, num_heads=2, rng=0)
    h, c, m = cell.initial_state(5)
    assert h.shape == c.shape == (5, 6) and m.shape == (5, 3, 8)
    np.testing.assert_array_equal(m.data[0], np.eye(3, 8))
    out, (h, c, m) = cell(np.ones((5, 4)))
    assert out is h and out.shape == (5, 6) and m.shape == (5, 3, 8)
    assert out.dtype == c.dtype == m.dtype == np.float32
    assert cell.last_read_weights.shape == (5, 2, 1, 3)
    np.testing.assert_allclose(cell.last_read_weights.sum(-1), 1.0, rtol=1e-5)
    assert cell.output_size == 6


def test_every_parameter_gets_a_gradient():
    cell = RelationalRNNCell(4, 6, mem_slots=3, head_size=4, num_heads=2, rng=0)
    x = np.random.default_rng(0).standard_normal((3, 4, 4)).astype(np.float32)
    outputs, _ = cell.unroll(x)
    (outputs[-1] ** 2).sum().backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and np.abs(p.grad).max() > 0, name


def test_errors():
    cell = RelationalRNNCell(4, 6, mem_slots=3, head_size=4, num_heads=2)
    with pytest.raises(ValueError, match=r"x_t must be a Tensor \(B, 4\), got \(2, 5\)"):
        cell(np.ones((2, 5)))
    with pytest.raises(ValueError, match="gate_style"):
        RelationalRNNCell(4, 6, mem_slots=3, head_size=4, num_heads=2, gate_style="x")


def test_step_checks_every_part_of_the_state():
    cell = RelationalRNNCell(6, 8, 2, 4, 2, rng=0)
    x = Tensor(np.ones((2, 6), dtype=np.float32))
    h, c, mem = cell.initial_state(2)
    with pytest.raises(ValueError, match=r"state c: expected shape \(2, 8\), got \(2, 5\)"):
        cell.step(x, (h, Tensor(np.zeros((2, 5), dtype=np.float32)), mem))
    with pytest.raises(
        ValueError, match=r"state memory: expected shape \(2, 2, 8\), got \(2, 3, 8\)"
    ):
        cell.step(x, (h, c, Tensor(np.zeros((2, 3, 8), dtype=np.float32))))
    with pytest.raises(TypeError, match="state memory: expected dtype float32.*got float64"):
        cell.step(x, (h, c, Tensor(mem.data.astype(np.float64))))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c, memory\), got 2 parts"):
        cell.step(x, (h, c))
    with pytest.raises(ValueError, match=r"at least one example.*\(0, 6\)"):
        cell(np.zeros((0, 6), dtype=np.float32))
