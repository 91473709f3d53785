"""Sequence classifier over every core: shapes, parameter budgets, gradients, a small task."""

import numpy as np
import pytest

import tensorgrad as tg
from models import (
    LSTM,
    RelationalMemory,
    RelationalRNNCell,
    SequenceClassifier,
    matching_lstm_hidden,
)
from models.classifier import head_parameters, lstm_classifier_parameters
from tensorgrad import Tensor, gradcheck
from tensorgrad.optim import Adam
from tensorgrad.tensor import iter_graph


def make_core(kind, dtype=np.float32, rng=0):
    if kind == "lstm":
        return LSTM(3, 4, dtype=dtype, rng=rng)
    if kind == "rmc":
        return RelationalMemory(3, 2, 2, 2, dtype=dtype, rng=rng)
    return RelationalRNNCell(3, 4, mem_slots=2, head_size=2, num_heads=2, dtype=dtype, rng=rng)


KINDS = ["lstm", "rmc", "rrnn"]


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_per_step(kind):
    x = np.random.default_rng(0).standard_normal((5, 4, 3))
    last = SequenceClassifier(make_core(kind), 7, mlp_hidden=(8, 8), rng=1)
    every = SequenceClassifier(make_core(kind), 7, mlp_hidden=(8, 8), per_step=True, rng=1)
    logits, all_logits = last(x), every(x)
    assert logits.shape == (5, 7) and all_logits.shape == (5, 4, 7)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(all_logits.data[:, -1], logits.data, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_end_to_end(kind):
    model = SequenceClassifier(make_core(kind, np.float64, rng=2), 3, mlp_hidden=(5,), rng=3)
    x = Tensor(np.random.default_rng(4).standard_normal((2, 3, 3)), requires_grad=True)
    gradcheck(lambda x, *_: model(x), [x, *model.parameters()])


@pytest.mark.parametrize("kind", KINDS)
def test_float32_training_step_keeps_float32(kind):
    model = SequenceClassifier(make_core(kind), 3, mlp_hidden=(8,))
    loss = tg.cross_entropy(model(np.ones((2, 3, 3))), np.array([0, 2]))
    for node in iter_graph(loss):  # no float64 anywhere in the recorded graph
        assert node.dtype == np.float32, node._op
    loss.backward()
    for name, p in model.named_parameters():
        assert p.data.dtype == p.grad.dtype == np.float32, name
        assert np.all(np.isfinite(p.grad)), name


def test_parameter_counts_and_lstm_budget_matching():
    rmc = SequenceClassifier(RelationalMemory(16, 4, 16, 4), 8, mlp_hidden=(128, 128))
    head = head_parameters(256, (128, 128), 8)
    assert head == 256 * 128 + 128 + 128 * 128 + 128 + 128 * 8 + 8
    assert rmc.num_parameters() == 39168 + head
    hidden = matching_lstm_hidden(rmc.num_parameters(), 16, 8, (128, 128))
    lstm = SequenceClassifier(LSTM(16, hidden), 8, mlp_hidden=(128, 128))
    assert lstm.num_parameters() == lstm_classifier_parameters(hidden, 16, 8, (128, 128))
    assert abs(lstm.num_parameters() / rmc.num_parameters() - 1) < 0.1
    for h in (hidden - 1, hidden + 1):  # the neighbours are no closer
        n = lstm_classifier_parameters(h, 16, 8, (128, 128))
        assert abs(n - rmc.num_parameters()) >= abs(lstm.num_parameters() - rmc.num_parameters())


def test_paper_default_head():
    model = SequenceClassifier(LSTM(2, 3), 4)
    assert [layer.weight.shape for layer in model.head.layers] == [
        (3, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 4),
    ]


def first_sign_task(rng, n, steps=5):
    """Label = whether the first step's first feature is positive; later steps are noise."""
    x = rng.standard_normal((n, steps, 3)).astype(np.float32)
    return x, (x[:, 0, 0] > 0).astype(np.int64)


@pytest.mark.parametrize("kind", ["lstm", "rmc"])
def test_learns_to_remember_the_first_step(kind):
    rng = np.random.default_rng(0)
    model = SequenceClassifier(make_core(kind, rng=1), 2, mlp_hidden=(16,), rng=2)
    opt = Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        x, y = first_sign_task(rng, 32)
        opt.zero_grad()
        tg.cross_entropy(model(x), y).backward()
        opt.step()
    x, y = first_sign_task(np.random.default_rng(99), 500)
    with tg.no_grad():
        accuracy = np.mean(model(x).data.argmax(-1) == y)
    assert accuracy > 0.85  # chance is 0.5


def test_errors():
    with pytest.raises(TypeError, match="has no 'initial_state'"):
        SequenceClassifier(tg.nn.Linear(3, 4), 2)
    with pytest.raises(TypeError, match="float64 != core dtype float32"):
        SequenceClassifier(LSTM(3, 4), 2, dtype=np.float64)
    model = SequenceClassifier(LSTM(3, 4), 2, mlp_hidden=(4,))
    with pytest.raises(ValueError, match=r"input feature size 5 != input_size 3"):
        model(np.ones((2, 6, 5)))
    with pytest.raises(ValueError, match="budget"):
        matching_lstm_hidden(0, 3, 2, ())


@pytest.mark.parametrize("kind", ["lstm", "rmc", "rrnn"])
def test_empty_sequences_and_batches_are_rejected_naming_the_shape(kind):
    model = SequenceClassifier(make_core(kind), 3, mlp_hidden=(4,))
    d = model.core.input_size
    with pytest.raises(ValueError, match=rf"at least one time step.*\(2, 0, {d}\)"):
        model(np.zeros((2, 0, d), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"at least one example.*\(0, 3, {d}\)"):
        model(np.zeros((0, 3, d), dtype=np.float32))
    with pytest.raises(ValueError, match=rf"at least one example.*\(0, {d}\)"):
        model.core.step(Tensor(np.zeros((0, d), dtype=np.float32)), model.core.initial_state(0))
