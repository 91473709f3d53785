"""LSTM cell and sequence model: hand-computed steps, a NumPy reference, gradients, errors."""

import math

import numpy as np
import pytest

import tensorgrad as tg
from models import LSTM, LSTMCell
from tensorgrad import Tensor, gradcheck


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(x, h, c, w, b):
    """A plain NumPy LSTM over x (B, T, D), gate order (i, f, g, o)."""
    n = h.shape[1]
    outs = []
    for t in range(x.shape[1]):
        z = np.concatenate([x[:, t], h], axis=1) @ w + b
        i, f, g, o = z[:, :n], z[:, n : 2 * n], z[:, 2 * n : 3 * n], z[:, 3 * n :]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), h, c


def test_initialisation_layout():
    cell = LSTMCell(3, 5, rng=0)
    assert cell.weight.shape == (8, 20) and cell.bias.shape == (20,)
    np.testing.assert_array_equal(cell.bias.data[5:10], 1.0)  # forget gate
    np.testing.assert_array_equal(np.delete(cell.bias.data, np.s_[5:10]), 0.0)
    assert np.abs(cell.weight.data).max() <= 1 / math.sqrt(8)
    assert cell.num_parameters() == 8 * 20 + 20
    np.testing.assert_array_equal(LSTMCell(3, 5, rng=0).weight.data, cell.weight.data)
    assert not np.array_equal(LSTMCell(3, 5, rng=1).weight.data, cell.weight.data)


def test_zero_weights_give_gates_at_sigmoid_of_bias():
    cell = LSTMCell(2, 3, dtype=np.float64, rng=0)
    cell.weight.data[:] = 0.0
    c_prev = np.array([[0.5, -1.0, 2.0]])
    h, (h2, c) = cell(np.array([[3.0, -4.0]]), (Tensor(np.zeros((1, 3))), Tensor(c_prev)))
    # i = σ(0) = 1/2, f = σ(1), g = tanh(0) = 0, o = σ(0) = 1/2
    expect_c = c_prev / (1 + math.exp(-1.0))
    np.testing.assert_allclose(c.data, expect_c, rtol=1e-14)
    np.testing.assert_allclose(h.data, 0.5 * np.tanh(expect_c), rtol=1e-14)
    assert h is h2


def test_one_unit_step_by_hand():
    cell = LSTMCell(1, 1, dtype=np.float64, rng=0)
    cell.weight.data[:] = [[0.1, 0.2, 0.3, 0.4], [-0.5, 0.6, -0.7, 0.8]]  # rows: x, h
    cell.bias.data[:] = [0.05, 1.0, -0.1, 0.2]
    x, h0, c0 = 0.5, -1.0, 2.0
    zi = 0.1 * x - 0.5 * h0 + 0.05  # 0.6
    zf = 0.2 * x + 0.6 * h0 + 1.0  # 0.5
    zg = 0.3 * x - 0.7 * h0 - 0.1  # 0.75
    zo = 0.4 * x + 0.8 * h0 + 0.2  # -0.4
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    c1 = s(zf) * c0 + s(zi) * math.tanh(zg)
    h1 = s(zo) * math.tanh(c1)
    h, (_, c) = cell(np.array([[x]]), (Tensor(np.array([[h0]])), Tensor(np.array([[c0]]))))
    assert c.item() == pytest.approx(c1, rel=1e-14)
    assert h.item() == pytest.approx(h1, rel=1e-14)


def test_sequence_matches_numpy_and_state_continues():
    rng = np.random.default_rng(0)
    lstm = LSTM(3, 4, dtype=np.float64, rng=1)
    x = rng.standard_normal((2, 6, 3))
    h0, c0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    out, (h, c) = lstm(x, (Tensor(h0), Tensor(c0)))
    ref_out, ref_h, ref_c = numpy_lstm(x, h0, c0, lstm.cell.weight.data, lstm.cell.bias.data)
    assert out.shape == (2, 6, 4)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h.data, ref_h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c.data, ref_c, rtol=1e-12, atol=1e-14)
    first, state = lstm(x[:, :3], (Tensor(h0), Tensor(c0)))
    second, _ = lstm(x[:, 3:], state)
    np.testing.assert_allclose(np.concatenate([first.data, second.data], 1), out.data)


def test_default_state_is_zero():
    lstm = LSTM(2, 3, dtype=np.float64, rng=0)
    x = np.random.default_rng(1).standard_normal((2, 4, 2))
    out, _ = lstm(x)
    ref, _, _ = numpy_lstm(x, np.zeros((2, 3)), np.zeros((2, 3)), lstm.cell.weight.data,
                           lstm.cell.bias.data)  # fmt: skip
    np.testing.assert_allclose(out.data, ref, rtol=1e-12)


def test_gradcheck_through_time_inputs_state_and_parameters():
    lstm = LSTM(2, 3, dtype=np.float64, rng=2)
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 4, 2)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    c0 = Tensor(rng.standard_normal((2, 3)), requires_grad=True)

    def fn(x, h0, c0, *_params):
        out, (h, c) = lstm(x, (h0, c0))
        return tg.concat([out.reshape(2, -1), c], axis=1)

    gradcheck(fn, [x, h0, c0, *lstm.parameters()])


def test_first_input_reaches_last_output():
    """Nothing is detached: the last output's gradient reaches the first time step's input."""
    lstm = LSTM(2, 3, dtype=np.float64, rng=0)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 8, 2)), requires_grad=True)
    out, _ = lstm(x)
    out[:, -1].sum().backward()
    assert np.abs(x.grad[:, 0]).sum() > 1e-8


def test_float32_stays_float32():
    lstm = LSTM(3, 4, rng=0)
    out, (h, c) = lstm(np.ones((2, 5, 3)))  # a float64 array is cast to the model's dtype
    (out.sum() + c.sum()).backward()
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in lstm.parameters())


def test_errors():
    lstm = LSTM(3, 4)
    with pytest.raises(ValueError, match=r"input feature size 2 != input_size 3 \(x \(1, 5, 2\)"):
        lstm(np.ones((1, 5, 2)))
    with pytest.raises(ValueError, match=r"3-D input, got shape \(5, 3\)"):
        lstm(np.ones((5, 3)))
    with pytest.raises(TypeError, match="float64.*float32"):
        lstm(Tensor(np.ones((1, 5, 3))))
    with pytest.raises(ValueError, match=r"state c: expected shape \(2, 4\), got \(1, 4\)"):
        lstm.cell.step(Tensor(np.ones((2, 3), np.float32)),
                       (Tensor(np.zeros((2, 4), np.float32)),
                        Tensor(np.zeros((1, 4), np.float32))))  # fmt: skip


def test_sequence_backward_at_batch_one_leaves_the_incoming_gradient_alone():
    # At B=1 a transpose of the incoming gradient is already contiguous; the backward must not
    # update it in place (it may be shared with another consumer of the same output).
    lstm = LSTM(3, 4, dtype=np.float64, rng=0)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 5, 3)))
    seq = lstm.cell.run_sequence(x)
    g = np.random.default_rng(1).standard_normal(seq.shape)
    before = g.copy()
    seq.backward(grad=g)
    np.testing.assert_array_equal(g, before)


def test_lstm_state_checks_name_expected_and_got():
    cell = LSTMCell(3, 4, dtype=np.float32, rng=0)
    x = Tensor(np.ones((2, 3), dtype=np.float32))
    h, c = cell.initial_state(2)
    with pytest.raises(ValueError, match=r"state c: expected shape \(2, 4\), got \(2, 5\)"):
        cell.step(x, (h, Tensor(np.zeros((2, 5), dtype=np.float32))))
    with pytest.raises(TypeError, match="state h: expected dtype float32.*got float64"):
        cell.step(x, (Tensor(np.zeros((2, 4))), c))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h, c\), got Tensor"):
        cell.step(x, h)
    with pytest.raises(TypeError, match="expected a Tensor.*got list"):
        cell.step(x, ([0.0] * 4, c))
    with pytest.raises(ValueError, match=r"state h: expected shape \(2, 4\), got \(3, 4\)"):
        LSTM(3, 4)(np.ones((2, 5, 3), dtype=np.float32), cell.initial_state(3))
    # an ndarray state is taken as a constant of the model dtype
    out, (h2, c2) = cell.step(x, (np.zeros((2, 4)), np.zeros((2, 4))))
    ref, _ = cell.step(x, (h, c))
    assert out.dtype == np.float32 and c2.dtype == np.float32
    np.testing.assert_array_equal(out.data, ref.data)


def test_lstm_constructor_rejects_non_integer_sizes_and_unsupported_dtypes():
    with pytest.raises(ValueError, match="hidden_size must be an int >= 1, got 2.5"):
        LSTM(6, 2.5)
    with pytest.raises(ValueError, match="input_size must be an int >= 1, got '6'"):
        LSTMCell("6", 2)
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        LSTM(6, 4, dtype=np.float16)
