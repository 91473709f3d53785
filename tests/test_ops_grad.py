"""Every differentiable op against central finite differences, in float64."""

import warnings

import numpy as np
import pytest

import tensorgrad as tg
from tensorgrad import Tensor, gradcheck


def T(shape, seed=0, low=-2.0, high=2.0, away_from=None):
    """A float64 leaf with values in [low, high), moved at least 0.1 away from `away_from`."""
    x = np.random.default_rng(seed).uniform(low, high, size=shape)
    if away_from is not None:
        near = np.abs(x - away_from) < 0.1
        x[near] += 0.2
    return Tensor(x, requires_grad=True)


BINARY_SHAPES = [
    ((), ()),
    ((3,), ()),
    ((3, 4), (4,)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (3, 1)),
    ((1,), (5,)),
    ((2, 1, 4), (1, 3, 1)),
]


@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum"])
def test_binary(op, sa, sb):
    a = T(sa, 1, 0.5, 2.0) if op == "pow" else T(sa, 1)
    b = T(sb, 2, 0.5, 2.0) if op in ("div", "pow") else T(sb, 2)
    fn = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b,
        "pow": lambda a, b: a**b,
        "maximum": tg.maximum,
    }[op]
    gradcheck(fn, [a, b])


@pytest.mark.parametrize("shape", [(), (1,), (5,), (3, 4), (2, 1, 3)])
@pytest.mark.parametrize(
    "op",
    [
        "neg",
        "exp",
        "log",
        "sqrt",
        "tanh",
        "sigmoid",
        "relu",
        "abs",
        "pow2",
        "pow_half",
        "rsub",
        "rdiv",
    ],
)
def test_unary(op, shape):
    positive = op in ("log", "sqrt", "pow_half", "rdiv")
    x = T(shape, 3, 0.3, 3.0) if positive else T(shape, 3, away_from=0.0)
    fn = {
        "neg": lambda x: -x,
        "exp": lambda x: x.exp(),
        "log": lambda x: x.log(),
        "sqrt": lambda x: x.sqrt(),
        "tanh": lambda x: x.tanh(),
        "sigmoid": lambda x: x.sigmoid(),
        "relu": lambda x: x.relu(),
        "abs": lambda x: x.abs(),
        "pow2": lambda x: x**2,
        "pow_half": lambda x: x**0.5,
        "rsub": lambda x: 1.5 - x,
        "rdiv": lambda x: 2.0 / x,
    }[op]
    gradcheck(fn, [x])


MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),  # batched with a 2-D operand
    ((4, 3), (2, 3, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),  # broadcast batch dims
    ((4,), (4, 3)),  # 1-D operands as in NumPy
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul(sa, sb):
    gradcheck(lambda a, b: a @ b, [T(sa, 4), T(sb, 5)])


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (-1, -3)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(op, axis, keepdims):
    x = T((2, 3, 4), 6)
    gradcheck(lambda x: getattr(x, op)(axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("op", ["max", "min"])
def test_extremum_ties_share_gradient(op):
    x = Tensor(np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]]), requires_grad=True)
    getattr(x, op)(axis=1).sum().backward()
    if op == "max":
        expected = [[0, 0.5, 0.5, 0], [0.25] * 4]
    else:
        expected = [[0, 0, 0, 1], [0.25] * 4]
    np.testing.assert_allclose(x.grad, expected)


def test_maximum_tie_splits_gradient():
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([1.0, 5.0, 0.0]), requires_grad=True)
    tg.maximum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad, [0.5, 0, 1])
    np.testing.assert_allclose(b.grad, [0.5, 1, 0])


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.reshape(4, 6),
        lambda x: x.reshape(-1),
        lambda x: x.transpose(2, 0, 1),
        lambda x: x.transpose(),
        lambda x: x.T,
        lambda x: x.swapaxes(0, -1),
        lambda x: x[:, 1:3],
        lambda x: x[1, ..., ::2],
        lambda x: x[:, None, 0],
        lambda x: x[np.array([0, 1, 1, 0])],  # repeated indices accumulate
        lambda x: x[:, np.array([2, 2, 0])],
        lambda x: x[np.array([[True, False, True], [False, False, True]])],
        lambda x: x[..., :1].broadcast_to((2, 3, 4)),
        lambda x: tg.concat([x, x[:, :1] * 2.0], axis=1),
        lambda x: tg.stack([x, x.exp()], axis=-1),
        lambda x: tg.split(x, 2, axis=2)[1] * tg.split(x, [1], axis=0)[0][..., :2],
        lambda x: tg.where(x.data > 0, x, x * x),
    ],
)
def test_shape_ops(fn):
    gradcheck(fn, [T((2, 3, 4), 7)])


def test_repeated_index_gradient_counts_each_use():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


def test_where_broadcasts_condition_and_branches():
    a = T((3, 1), 1)
    b = T((1, 4), 2)
    cond = np.random.default_rng(0).random((3, 4)) > 0.5
    gradcheck(lambda a, b: tg.where(cond, a, b), [a, b])


# --------------------------------------------------------------------------- fused NN ops


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1)])
def test_softmax_and_log_softmax(shape, axis):
    x = T(shape, 8)
    gradcheck(lambda x: tg.softmax(x, axis=axis), [x])
    gradcheck(lambda x: tg.log_softmax(x, axis=axis), [x])


def composite_log_softmax(x, axis=-1):
    shifted = x - Tensor(x.data.max(axis=axis, keepdims=True))
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def composite_softmax(x, axis=-1):
    e = (x - Tensor(x.data.max(axis=axis, keepdims=True))).exp()
    return e / e.sum(axis=axis, keepdims=True)


def composite_layer_norm(x, w, b, eps=1e-5):
    xc = x - x.mean(axis=-1, keepdims=True)
    return xc / ((xc * xc).mean(axis=-1, keepdims=True) + eps).sqrt() * w + b


def composite_cross_entropy(logits, targets):
    logp = composite_log_softmax(logits)
    n = targets.size
    onehot = np.eye(logits.shape[-1])[targets]
    return -(logp * Tensor(onehot)).sum() / n


@pytest.mark.parametrize("axis", [-1, 0])
def test_fused_softmaxes_match_composite_twins(axis):
    x = T((4, 5), 9, -5, 5)
    g = np.random.default_rng(1).standard_normal((4, 5))
    for fused, twin in [(tg.softmax, composite_softmax), (tg.log_softmax, composite_log_softmax)]:
        xa, xb = Tensor(x.data, requires_grad=True), Tensor(x.data, requires_grad=True)
        ya, yb = fused(xa, axis=axis), twin(xb, axis=axis)
        np.testing.assert_allclose(ya.data, yb.data, rtol=1e-12, atol=1e-14)
        ya.backward(g)
        yb.backward(g)
        np.testing.assert_allclose(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)


def test_log_softmax_is_exact_for_huge_logits():
    x = Tensor(np.array([[1e8, -1e8, 0.0], [1e8, 1e8, -1e8]]), requires_grad=True)
    out = tg.log_softmax(x)
    np.testing.assert_array_equal(out.data[0], [0.0, -2e8, -1e8])
    np.testing.assert_allclose(out.data[1], [-np.log(2), -np.log(2), -2e8 - np.log(2)])
    out.backward(np.ones((2, 3)))
    assert np.all(np.isfinite(x.grad))
    np.testing.assert_allclose(x.grad[0], [1 - 3, 1, 1])  # g - softmax * sum(g)


def test_cross_entropy_exact_where_probability_underflows():
    logits = Tensor(np.array([[0.0, 1000.0, -1000.0]]), requires_grad=True)
    loss = tg.cross_entropy(logits, np.array([2]))
    assert loss.item() == pytest.approx(2000.0)
    loss.backward()
    np.testing.assert_allclose(logits.grad, [[0.0, 1.0, -1.0]], atol=1e-300)


@pytest.mark.parametrize("shape", [(1, 3), (4, 5), (2, 3, 4)])
def test_cross_entropy(shape):
    targets = np.random.default_rng(2).integers(0, shape[-1], size=shape[:-1])
    x = T(shape, 10, -3, 3)
    gradcheck(lambda x: tg.cross_entropy(x, targets), [x])
    np.testing.assert_allclose(
        tg.cross_entropy(x, targets).data, composite_cross_entropy(x, targets).data, rtol=1e-12
    )
    xa, xb = Tensor(x.data, requires_grad=True), Tensor(x.data, requires_grad=True)
    tg.cross_entropy(xa, targets).backward()
    composite_cross_entropy(xb, targets).backward()
    np.testing.assert_allclose(xa.grad, xb.grad, rtol=1e-10, atol=1e-14)


def test_cross_entropy_rejects_bad_targets():
    logits = Tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"target 3 outside \[0, 3\)"):
        tg.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2,\)"):
        tg.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integer"):
        tg.cross_entropy(logits, np.array([0.5, 1.0]))


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (3, 1)])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm(shape, affine):
    x = T(shape, 11)
    if affine:
        w, b = T(shape[-1:], 12), T(shape[-1:], 13)
        gradcheck(lambda x, w, b: tg.layer_norm(x, w, b), [x, w, b])
        twin = composite_layer_norm(x, w, b)
        np.testing.assert_allclose(tg.layer_norm(x, w, b).data, twin.data, rtol=1e-10, atol=1e-12)
    else:
        gradcheck(lambda x: tg.layer_norm(x), [x])


def test_layer_norm_backward_matches_composite_twin():
    x, w, b = T((3, 6), 14), T((6,), 15), T((6,), 16)
    g = np.random.default_rng(3).standard_normal((3, 6))
    twins = [(Tensor(t.data, requires_grad=True)) for t in (x, w, b, x, w, b)]
    tg.layer_norm(*twins[:3]).backward(g)
    composite_layer_norm(*twins[3:]).backward(g)
    for fused, twin in zip(twins[:3], twins[3:]):
        np.testing.assert_allclose(fused.grad, twin.grad, rtol=1e-9, atol=1e-12)


def test_layer_norm_constant_rows_have_finite_gradients():
    x = Tensor(np.full((2, 4), 3.0), requires_grad=True)
    w, b = T((4,), 1), T((4,), 2)
    out = tg.layer_norm(x, w, b)
    np.testing.assert_allclose(out.data, np.broadcast_to(b.data, (2, 4)))
    gradcheck(lambda x, w, b: tg.layer_norm(x, w, b), [x, w, b])
    assert np.all(np.isfinite(x.grad))


def test_dropout_scales_and_masks_consistently():
    x = T((200, 50), 17)
    out = tg.dropout(x, 0.3, True, np.random.default_rng(0))
    kept = out.data != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(out.data[kept], x.data[kept] / 0.7)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.7)
    gradcheck(lambda x: tg.dropout(x, 0.5, True, np.random.default_rng(5)), [T((3, 4), 1)])
    assert tg.dropout(x, 0.3, False, np.random.default_rng(0)) is x
    with pytest.raises(ValueError, match="1.0"):
        tg.dropout(x, 1.0, True, np.random.default_rng(0))


def test_sigmoid_and_tanh_saturate_without_warnings():
    x = Tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = x.sigmoid()
        y.sum().backward()
        np.testing.assert_allclose(y.data, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0])
        assert np.all(np.isfinite(x.grad))
        xf = Tensor(np.array([-1000.0, 1000.0], dtype=np.float32), requires_grad=True)
        yf = xf.sigmoid()
        assert yf.dtype == np.float32
        np.testing.assert_array_equal(yf.data, [0.0, 1.0])


def test_pow_has_finite_gradient_at_zero_base_where_defined():
    x = Tensor(np.array([0.0, 1.0, -2.0]), requires_grad=True)
    (x**2 + x**1 + x**0).sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 3.0, -3.0])
    base = Tensor(np.array([0.0, 2.0]), requires_grad=True)
    expo = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    (base**expo).sum().backward()
    np.testing.assert_allclose(base.grad, [0.0, 12.0])
    np.testing.assert_allclose(expo.grad, [0.0, 8 * np.log(2)])


# --------------------------------------------------------------------------- the checker itself


def test_gradcheck_catches_a_broken_backward():
    def bad_square(x):
        def backward(g):
            return (g * 2.001 * x.data,)  # off by 0.05 %: must be caught

        return tg.record(x.data**2, (x,), backward, "bad_square")

    x = T((3, 2), 1, 0.5, 2.0)
    with pytest.raises(tg.GradcheckError, match=r"input 0.*worst element.*analytic.*numeric"):
        gradcheck(bad_square, [x])
    big = T((30, 20), 2, 0.5, 2.0)  # the random-direction path
    with pytest.raises(tg.GradcheckError, match="random direction"):
        gradcheck(bad_square, [big])


def test_gradcheck_passes_large_inputs_via_random_directions():
    gradcheck(lambda a, b: (a @ b).tanh(), [T((20, 30), 1), T((30, 10), 2)])


def test_gradcheck_refuses_float32():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True, name="weights")
    with pytest.raises(TypeError, match="'weights'.*float32"):
        gradcheck(lambda x: x * 2.0, [x])


def test_gradcheck_reports_a_missing_gradient():
    def detached(x):
        return tg.record(x.data * 3.0, (x,), lambda g: (None,), "forgets_grad")

    with pytest.raises(tg.GradcheckError, match="analytic 0"):
        gradcheck(detached, [T((2,), 1)])
