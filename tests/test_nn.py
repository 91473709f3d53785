"""Modules: registration, naming, state dicts, modes, summaries and the built-in layers."""

import numpy as np
import pytest

import tensorgrad as tg
from tensorgrad import nn


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3, dtype=np.float32))
        self.enc = nn.Linear(3, 4, rng=1)
        self.layers = [nn.Linear(4, 4, rng=2), nn.Linear(4, 2, rng=3)]
        self.norm = nn.LayerNorm(2)

    def forward(self, x):
        h = self.enc(x * self.scale).relu()
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


def test_registration_order_and_dotted_names():
    m = Mixed()
    names = [n for n, _ in m.named_parameters()]
    assert names == [
        "scale",
        "enc.weight",
        "enc.bias",
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
        "norm.weight",
        "norm.bias",
    ]
    shapes = [(3,), (3, 4), (4,), (4, 4), (4,), (4, 2), (2,), (2,), (2,)]
    assert [p.shape for p in m.parameters()] == shapes
    modules = ["", "enc", "layers", "layers.0", "layers.1", "norm"]
    assert [n for n, _ in m.named_modules()] == modules
    assert m.num_parameters() == 3 + 12 + 4 + 16 + 4 + 8 + 2 + 2 + 2


def test_plain_attributes_and_reassignment_are_tracked():
    m = TwoLayer()
    m.note = "text"
    m.buffer = tg.Tensor(np.zeros(5))  # a plain Tensor is not a parameter
    assert m.num_parameters() == 4 * 8 + 8 + 8 * 2 + 2
    m.fc2 = nn.Linear(8, 3)
    assert [p.shape for p in m.parameters()][-2:] == [(8, 3), (3,)]
    m.fc2 = None
    assert [n for n, _ in m.named_parameters()] == ["fc1.weight", "fc1.bias"]
    del m.fc1
    assert m.parameters() == []


def test_shared_parameter_and_module_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.b.weight = self.a.weight
            self.again = self.a

    m = Tied()
    named = m.named_parameters()
    assert [n for n, _ in named] == ["a.weight", "a.bias", "b.bias"]
    assert len(m.parameters()) == 3
    assert m.num_parameters() == 9 + 3 + 3
    assert [n for n, _ in m.named_modules()] == ["", "a", "b"]
    assert list(m.state_dict()) == ["a.weight", "a.bias", "b.bias"]
    text = repr(m)
    assert "shared with a.weight" in text
    assert "again: Linear (shared with a)" in text
    assert "total: 15 parameters" in text


def test_lists_of_modules():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = (nn.Linear(2, 2), nn.Linear(2, 2))

    s = Stack()
    assert isinstance(s.blocks, nn.ModuleList)
    assert len(s.blocks) == 2
    s.blocks.append(nn.Linear(2, 5))
    assert [n for n, _ in s.named_parameters()][-2:] == ["blocks.2.weight", "blocks.2.bias"]
    assert s.blocks[-1].out_features == 5
    assert [m.out_features for m in s.blocks] == [2, 2, 5]

    with pytest.raises(TypeError, match="item 1"):
        s.bad = [nn.Linear(2, 2), "not a module"]
    with pytest.raises(TypeError, match="list of Parameters"):
        s.bad = [nn.Parameter(np.zeros(2))]


def test_assignment_before_init_is_an_error():
    class Forgot(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Forgot()


def test_state_dict_round_trip_gives_identical_outputs():
    x = np.random.default_rng(5).standard_normal((6, 3)).astype(np.float32)
    a, b = Mixed(), Mixed()
    b.enc.weight.data += 1.0  # make sure the two differ before loading
    assert not np.array_equal(a(x).data, b(x).data)

    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    result = b.load_state_dict(state)
    assert result == ([], [])
    assert np.array_equal(a(x).data, b(x).data)

    state["enc.weight"][...] = 7.0  # the dict holds copies, not the live arrays
    assert not np.any(a.enc.weight.data == 7.0)
    weight = b.enc.weight.data
    b.load_state_dict(state)
    assert b.enc.weight.data is weight  # loaded in place: optimisers keep their references
    assert np.all(weight == 7.0)


def test_load_state_dict_reports_names_shapes_and_dtypes():
    m = TwoLayer()
    good = m.state_dict()
    before = {k: v.copy() for k, v in good.items()}

    bad = dict(good)
    del bad["fc2.bias"]
    bad["fc3.weight"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError) as err:
        m.load_state_dict(bad)
    assert "missing: fc2.bias" in str(err.value)
    assert "unexpected: fc3.weight" in str(err.value)

    bad = dict(good)
    bad["fc1.weight"] = np.zeros((4, 9), np.float32)
    bad["fc1.bias"] = np.ones(8, np.float32)  # valid, yet must not be written
    with pytest.raises(ValueError, match=r"fc1\.weight: shape \(4, 9\) in state_dict but \(4, 8\)"):
        m.load_state_dict(bad)

    bad = dict(good)
    bad["fc2.weight"] = good["fc2.weight"].astype(np.float64)
    with pytest.raises(ValueError, match="fc2.weight: dtype float64 in state_dict but float32"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), f"{k} changed by a failed load"

    partial = {"fc1.bias": np.full(8, 2.0, np.float32), "extra": np.zeros(1)}
    result = m.load_state_dict(partial, strict=False)
    assert result.missing == ["fc1.weight", "fc2.weight", "fc2.bias"]
    assert result.unexpected == ["extra"]
    assert np.all(m.fc1.bias.data == 2.0)


def test_train_eval_propagates_to_every_module():
    m = Mixed()
    assert all(sub.training for sub in m.modules())
    assert m.eval() is m
    assert [sub.training for sub in m.modules()] == [False] * 6
    m.train()
    assert all(sub.training for sub in m.modules())
    m.layers.eval()
    assert m.training and m.enc.training
    assert not m.layers.training and not m.layers[0].training and not m.layers[1].training


def test_zero_grad_sets_grads_to_none():
    m = TwoLayer()
    m(np.ones((2, 4), np.float32)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_repr_is_a_tree_with_shapes_and_counts():
    text = repr(TwoLayer())
    lines = text.splitlines()
    assert lines[0] == "TwoLayer()  [58 parameters]"
    assert lines[1] == "  fc1: Linear(4 -> 8)  [40 parameters]"
    assert lines[2] == "    weight: (4, 8) float32 (32)"
    assert lines[3] == "    bias: (8,) float32 (8)"
    assert lines[4] == "  fc2: Linear(8 -> 2)  [18 parameters]"
    assert lines[-1] == "total: 58 parameters"
    assert "total: 1,300 parameters" in repr(nn.Linear(99, 13))


def test_forward_not_defined_names_the_class():
    class Empty(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match="Empty"):
        Empty()(np.zeros(2))


def test_linear_matches_numpy_and_keeps_dtype():
    rng = np.random.default_rng(0)
    lin = nn.Linear(4, 3, rng=0)
    assert lin.weight.shape == (4, 3) and lin.bias.shape == (3,)
    assert lin.weight.dtype == np.float32 and lin.bias.dtype == np.float32
    assert np.all(np.abs(lin.weight.data) <= 0.5) and np.all(np.abs(lin.bias.data) <= 0.5)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    y = lin(x)
    assert y.dtype == np.float32 and y.shape == (2, 5, 3)
    np.testing.assert_allclose(y.data, x @ lin.weight.data + lin.bias.data, rtol=1e-6)

    no_bias = nn.Linear(4, 3, bias=False, dtype=np.float64, rng=0)
    assert no_bias.bias is None and len(no_bias.parameters()) == 1
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(no_bias(x64).data, x64 @ no_bias.weight.data)

    with pytest.raises(ValueError, match=r"\(\.\.\., 4\), got \(2, 5\)"):
        lin(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Linear(2, 2, dtype=np.int32)


def test_linear_gradients_match_finite_differences():
    lin = nn.Linear(3, 2, dtype=np.float64, rng=4)
    x = tg.Tensor(np.random.default_rng(1).standard_normal((5, 3)), requires_grad=True)
    assert tg.gradcheck(lambda x, w, b: lin(x), [x, lin.weight, lin.bias])


def test_initialisation_is_reproducible():
    a = nn.Linear(5, 4, rng=11)
    b = nn.Linear(5, 4, rng=np.random.default_rng(11))
    assert np.array_equal(a.weight.data, b.weight.data)
    assert np.array_equal(a.bias.data, b.bias.data)

    nn.manual_seed(3)
    first = nn.MLP(3, [4], 2).state_dict()
    second = nn.MLP(3, [4], 2).state_dict()  # continues the stream: a different draw
    nn.manual_seed(3)
    again = nn.MLP(3, [4], 2).state_dict()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["layers.0.weight"], second["layers.0.weight"])
    # layers inside one model draw different weights from the shared generator
    m = nn.MLP(4, [4], 4, rng=0)
    assert not np.array_equal(m.layers[0].weight.data, m.layers[1].weight.data)


def test_mlp_shapes_and_values():
    mlp = nn.MLP(5, [7, 6], 3, rng=0)
    assert [p.shape for p in mlp.parameters()] == [(5, 7), (7,), (7, 6), (6,), (6, 3), (3,)]
    assert [n for n, _ in mlp.named_parameters()][:2] == ["layers.0.weight", "layers.0.bias"]
    x = np.random.default_rng(2).standard_normal((4, 2, 5)).astype(np.float32)
    y = mlp(x)
    assert y.shape == (4, 2, 3)

    h = x
    for i, layer in enumerate(mlp.layers):
        h = h @ layer.weight.data + layer.bias.data
        if i < 2:
            h = np.maximum(h, 0)
    np.testing.assert_allclose(y.data, h, rtol=1e-5, atol=1e-6)
    assert y.data.min() < 0  # no activation after the output layer

    features = nn.MLP(5, [7, 6], activation="tanh", rng=0)
    z = features(x)
    assert z.shape == (4, 2, 6)
    (w0, b0), (w1, b1) = [(layer.weight.data, layer.bias.data) for layer in features.layers]
    np.testing.assert_allclose(
        z.data, np.tanh(np.tanh(x @ w0 + b0) @ w1 + b1), rtol=1e-5, atol=1e-6
    )
    assert len(nn.MLP(5, [], 2).layers) == 1
    with pytest.raises(ValueError, match="activation"):
        nn.MLP(2, [3], activation="gelu")
    with pytest.raises(ValueError, match="hidden size or an out_features"):
        nn.MLP(2, [])


def test_layer_norm_module():
    ln = nn.LayerNorm(4)
    assert np.array_equal(ln.weight.data, np.ones(4, np.float32))
    assert np.array_equal(ln.bias.data, np.zeros(4, np.float32))
    ln.weight.data[:] = [1.0, 2.0, 3.0, 4.0]
    ln.bias.data[:] = 0.5
    x = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 1.0, -1.0]], np.float32)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-5) * ln.weight.data + 0.5
    np.testing.assert_allclose(ln(x).data, expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        ln(np.zeros((2, 3), np.float32))


def test_embedding_gathers_rows_and_accumulates_repeated_ids():
    emb = nn.Embedding(5, 3, rng=0)
    ids = np.array([[1, 1], [4, 0]])
    out = emb(ids)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.data, emb.weight.data[ids])
    out.sum().backward()
    expected = np.zeros((5, 3), np.float32)
    expected[[0, 1, 4]] = np.array([1.0, 2.0, 1.0])[:, None]
    np.testing.assert_array_equal(emb.weight.grad, expected)
    with pytest.raises(IndexError, match=r"id 5 outside \[0, 5\)"):
        emb(np.array([0, 5]))
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([0.0, 1.0]))


def test_sequential_and_activation_modules():
    seq = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1), nn.ReLU())
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    a, c = seq[0], seq[2]
    h = np.maximum(np.tanh(x @ a.weight.data + a.bias.data) @ c.weight.data + c.bias.data, 0)
    np.testing.assert_allclose(seq(x).data, h, rtol=1e-5, atol=1e-7)
    s = nn.Sigmoid()(tg.Tensor(np.array([0.0, 2.0])))
    np.testing.assert_allclose(s.data, 1 / (1 + np.exp(-np.array([0.0, 2.0]))))


def test_parameter_keeps_float_dtype_and_requires_grad():
    p32 = nn.Parameter(np.zeros(3, np.float32))
    p64 = nn.Parameter(np.zeros(3))
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    assert p32.requires_grad and p64.requires_grad
    assert nn.Parameter([1, 2]).dtype == np.float64
