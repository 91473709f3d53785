"""Every fused op of the models against its composite twin from primitive ops, in float64.

For each op: the outputs agree, the gradients of every input agree for a random upstream
gradient, and the fused backward passes a finite-difference gradcheck.
"""

import numpy as np
import pytest

import tensorgrad as tg
from models._kernels import _reference_concat_linear, _reference_linear, concat_linear, linear
from models.attention import _reference_attention, attention_core, packed_attention_core
from models.lstm import _reference_lstm_step, lstm_cell, lstm_hidden
from models.relational_memory import append_row, gate_inputs, gated_update
from models.relational_rnn import _reference_gated_mix, gated_mix
from tensorgrad import Tensor, gradcheck


def leaf(shape, seed, scale=1.0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape) * scale, requires_grad=True)


def grads_of(fn, inputs, upstream):
    for x in inputs:
        x.grad = None
    out = fn(*inputs)
    out.backward(upstream)
    return out.data, [np.zeros_like(x.data) if x.grad is None else x.grad.copy() for x in inputs]


def check_twin(fused, twin, inputs, seed=99):
    """Fused op == composite twin in value and in every input's gradient; fused passes gradcheck."""
    out_shape = fused(*inputs).shape
    upstream = np.random.default_rng(seed).standard_normal(out_shape)
    out_f, grads_f = grads_of(fused, inputs, upstream)
    out_t, grads_t = grads_of(twin, inputs, upstream)
    np.testing.assert_allclose(out_f, out_t, rtol=1e-10, atol=1e-12)
    for i, (gf, gt) in enumerate(zip(grads_f, grads_t)):
        np.testing.assert_allclose(gf, gt, rtol=1e-9, atol=1e-11, err_msg=f"input {i}")
    gradcheck(fused, inputs)


@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear(x_shape, relu, bias):
    inputs = [leaf(x_shape, 0), leaf((4, 5), 1)] + ([leaf((5,), 2)] if bias else [])
    check_twin(
        lambda *a: linear(*a, relu=relu), lambda *a: _reference_linear(*a, relu=relu), inputs
    )


def test_linear_rejects_mismatched_weight():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        linear(leaf((3, 4), 0), leaf((5, 2), 1))


def test_concat_linear():
    check_twin(
        concat_linear,
        _reference_concat_linear,
        [leaf((3, 2), 0), leaf((3, 4), 1), leaf((6, 5), 2), leaf((5,), 3)],
    )


def test_lstm_step_matches_twin():
    x, h, c, w, b = (
        leaf((3, 2), 0),
        leaf((3, 4), 1),
        leaf((3, 4), 2),
        leaf((6, 16), 3),
        leaf((16,), 4),
    )

    def fused_h(x, h, c, w, b):
        z = concat_linear(x, h, w, b)
        return lstm_hidden(z, lstm_cell(z, c))

    def fused_c(x, h, c, w, b):
        return lstm_cell(concat_linear(x, h, w, b), c)

    check_twin(fused_h, lambda *a: _reference_lstm_step(*a)[0], [x, h, c, w, b])
    check_twin(fused_c, lambda *a: _reference_lstm_step(*a)[1], [x, h, c, w, b])


def test_lstm_cell_and_hidden_alone():
    z, c = leaf((2, 12), 5, scale=2.0), leaf((2, 3), 6)
    gradcheck(lstm_cell, [z, c])
    gradcheck(lstm_hidden, [z, c])


def _mask_cases(b, h, tq, tk):
    rng = np.random.default_rng(7)
    random_mask = rng.random((b, h, tq, tk)) < 0.6
    random_mask[0, 0, 1] = False  # one query with no allowed key at all
    causal = np.tril(np.ones((tq, tk), dtype=bool))
    return [None, random_mask, causal, np.ones((b, 1, 1, tk), dtype=bool)]


@pytest.mark.parametrize("case", range(4))
def test_attention_core(case):
    mask = _mask_cases(2, 2, 3, 3)[case]
    q, k, v = leaf((2, 3, 4), 0), leaf((2, 3, 4), 1), leaf((2, 3, 4), 2)
    check_twin(
        lambda q, k, v: attention_core(q, k, v, 2, 0.7, mask)[0],
        lambda q, k, v: _reference_attention(q, k, v, 2, 0.7, mask),
        [q, k, v],
    )


def test_attention_core_cross_lengths():
    q, k, v = leaf((2, 1, 6), 0), leaf((2, 4, 6), 1), leaf((2, 4, 6), 2)
    check_twin(
        lambda q, k, v: attention_core(q, k, v, 3, 0.5)[0],
        lambda q, k, v: _reference_attention(q, k, v, 3, 0.5),
        [q, k, v],
    )


@pytest.mark.parametrize("case", range(4))
def test_packed_attention_core(case):
    mask = _mask_cases(2, 2, 3, 3)[case]

    def twin(qkv):
        q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
        return _reference_attention(q, k, v, 2, 0.7, mask)

    check_twin(lambda qkv: packed_attention_core(qkv, 2, 0.7, mask)[0], twin, [leaf((2, 3, 12), 3)])


def test_append_row():
    check_twin(
        append_row,
        lambda m, r: tg.concat([m, r.reshape(2, 1, 4)], axis=1),
        [leaf((2, 3, 4), 0), leaf((2, 4), 1)],
    )


@pytest.mark.parametrize("gates", [8, 2])  # 'unit' (2F) and 'memory' (2) styles, F = 4
def test_gate_inputs(gates):
    def twin(m, x, wm, bm, wi, bi):
        return m.tanh() @ wm + bm + (x @ wi + bi).reshape(2, 1, gates)

    inputs = [
        leaf((2, 3, 4), 0),
        leaf((2, 4), 1),
        leaf((4, gates), 2),
        leaf((gates,), 3),
        leaf((4, gates), 4),
        leaf((gates,), 5),
    ]
    check_twin(gate_inputs, twin, inputs)


@pytest.mark.parametrize("gates", [8, 2])
def test_gated_update(gates):
    g = gates // 2

    def twin(z, att, m):
        i = (z[..., :g] + 0.3).sigmoid()
        f = (z[..., g:] - 0.8).sigmoid()
        return i * att[:, :3].tanh() + f * m

    inputs = [leaf((2, 3, gates), 0), leaf((2, 4, 4), 1), leaf((2, 3, 4), 2)]
    check_twin(lambda z, a, m: gated_update(z, a, m, 0.3, -0.8), twin, inputs)


def test_gated_mix():
    check_twin(gated_mix, _reference_gated_mix, [leaf((3, 4), 0), leaf((3, 4), 1), leaf((3, 4), 2)])


def test_twin_check_catches_a_wrong_backward():
    """The harness above must fail when a fused backward is off (here by a factor 1.01)."""

    def broken(x, w):
        out = linear(x, w)
        good = out._backward

        def backward(g):
            gx, gw = good(g)
            return gx * 1.01, gw

        out._backward = backward
        return out

    with pytest.raises(AssertionError):
        check_twin(broken, _reference_linear, [leaf((3, 4), 0), leaf((4, 2), 1)])


def test_fused_ops_keep_float32():
    x = Tensor(np.ones((2, 3, 4), np.float32), requires_grad=True)
    w = Tensor(np.ones((4, 8), np.float32), requires_grad=True)
    out = linear(x, w, relu=True)
    qkv = linear(x, Tensor(np.full((4, 12), 0.1, np.float32), requires_grad=True))
    att, weights = packed_attention_core(qkv, 2, 0.5)
    z = gate_inputs(x, x[:, 0], w, w[0], w, w[0])
    m = gated_update(z, append_row(x, x[:, 0]), x, 0.0, 1.0)
    for t in (out, att, z, m):
        assert t.dtype == np.float32, t._op
    assert weights.dtype == np.float32
    (att.sum() + m.sum()).backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32
