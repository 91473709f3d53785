"""The fused whole-sequence LSTM against its step-by-step twin; slice gradients in the engine."""

import numpy as np
import pytest

import tensorgrad as tg
from models import LSTM, SequenceClassifier
from models.core import unroll as unroll_step_by_step
from models.lstm import _reference_lstm_sequence, lstm_sequence
from models.relational_memory import RelationalMemory
from tensorgrad import Tensor, gradcheck
from tensorgrad.tensor import SliceGrad


def leaf(shape, seed, scale=1.0, requires_grad=True):
    data = np.random.default_rng(seed).standard_normal(shape) * scale
    return Tensor(data, requires_grad=requires_grad)


def grads_of(fn, inputs, upstream):
    for x in inputs:
        x.grad = None
    out = fn(*inputs)
    out.backward(upstream)
    return out.data, [None if x.grad is None else x.grad.copy() for x in inputs]


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("state_grad", [False, True])
def test_lstm_sequence_matches_its_twin(steps, state_grad):
    b, d, n = 3, 2, 4
    inputs = [
        leaf((b, steps, d), 0),
        leaf((b, n), 1, requires_grad=state_grad),
        leaf((b, n), 2, requires_grad=state_grad),
        leaf((d + n, 4 * n), 3, scale=0.7),
        leaf((4 * n,), 4),
    ]
    upstream = np.random.default_rng(5).standard_normal((b, steps + 1, n))
    out_f, grads_f = grads_of(lstm_sequence, inputs, upstream)
    out_t, grads_t = grads_of(_reference_lstm_sequence, inputs, upstream)
    np.testing.assert_allclose(out_f, out_t, rtol=1e-12, atol=1e-14)
    for i, (gf, gt) in enumerate(zip(grads_f, grads_t)):
        assert (gf is None) == (gt is None), f"input {i}"
        if gf is not None:
            np.testing.assert_allclose(gf, gt, rtol=1e-10, atol=1e-12, err_msg=f"input {i}")
    gradcheck(lstm_sequence, inputs)


def test_lstm_sequence_backward_skips_inputs_without_grad():
    x, h0, c0 = leaf((2, 3, 2), 0, requires_grad=False), leaf((2, 3), 1), leaf((2, 3), 2)
    w, b = leaf((5, 12), 3, requires_grad=False), leaf((12,), 4)
    lstm_sequence(x, h0, c0, w, b).sum().backward()
    assert x.grad is None and w.grad is None
    assert h0.grad.shape == (2, 3) and c0.grad.shape == (2, 3) and b.grad.shape == (12,)


def test_unroll_and_step_by_step_agree_in_float32():
    lstm = LSTM(3, 5, rng=0)
    x = np.random.default_rng(1).standard_normal((4, 6, 3)).astype(np.float32)
    fused, (h, c) = lstm.unroll(x)
    state = lstm.initial_state(4)
    for t in range(6):
        out, state = lstm.step(Tensor(x[:, t]), state)
        np.testing.assert_allclose(fused[t].data, out.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.data, state[1].data, rtol=1e-5, atol=1e-6)
    assert fused[-1] is h and h.dtype == c.dtype == np.float32


def test_classifier_gradients_through_the_fused_lstm_match_the_steps():
    net = SequenceClassifier(LSTM(3, 4, dtype=np.float64, rng=0), 2, (5,), rng=1)
    x = np.random.default_rng(2).standard_normal((3, 5, 3))
    targets = np.array([0, 1, 1])
    tg.cross_entropy(net(x), targets).backward()
    fused = [p.grad.copy() for p in net.parameters()]
    net.zero_grad()
    outputs, _ = unroll_step_by_step(net.core, x)  # core.step at every step
    tg.cross_entropy(net._head(outputs[-1]), targets).backward()
    for a, b in zip(fused, (p.grad for p in net.parameters())):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_other_cores_still_unroll_step_by_step():
    core = RelationalMemory(3, 2, 2, 2, dtype=np.float64, rng=0)
    outputs, _ = core.unroll(np.ones((2, 3, 3)))
    assert len(outputs) == 3 and outputs[0]._op == "reshape"


def test_lstm_rejects_state_of_the_wrong_batch():
    lstm = LSTM(3, 4)
    h = Tensor(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"state h: expected shape \(1, 4\), got \(2, 4\)"):
        lstm.unroll(np.ones((1, 5, 3), np.float32), (h, h))
    with pytest.raises(ValueError, match="no steps"):
        lstm(np.ones((1, 0, 3), np.float32))


def test_slices_of_one_tensor_share_one_gradient_array():
    x = leaf((3, 4, 2), 6)
    w = np.random.default_rng(7).standard_normal((4, 2))

    def fn(x):
        total = (x * 2.0).sum()  # a full-size gradient mixed with the slices
        for t in range(4):
            total = total + (x[:, t] * w[t]).sum()
        return total + x[1:, :2].sum()  # slices that overlap the ones above

    fn(x).backward()
    expected = 2.0 + np.broadcast_to(w, (3, 4, 2)).copy()
    expected[1:, :2] += 1.0
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)
    gradcheck(fn, [x])


def test_slice_grad_materialises_its_parts():
    g = SliceGrad((2, 3), (slice(None), 0), np.array([1.0, 2.0]))
    g.extend(SliceGrad((2, 3), (0, slice(1, 3)), np.array([5.0, 6.0])))
    g.extend(SliceGrad((2, 3), (slice(None), 0), np.array([10.0, 20.0])))
    np.testing.assert_array_equal(g.materialise(), [[11.0, 5.0, 6.0], [22.0, 0.0, 0.0]])
