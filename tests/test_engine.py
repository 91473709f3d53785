"""The engine: dtypes, accumulation, long chains, freeing the graph, no_grad, retain_grad."""

import gc
import weakref

import numpy as np
import pytest

import tensorgrad as tg
from tensorgrad import Tensor


def test_dtypes_are_kept_or_promoted_to_float64():
    assert Tensor(np.ones(2, dtype=np.float32)).dtype == np.float32
    assert Tensor(np.ones(2)).dtype == np.float64
    assert Tensor(np.arange(3)).dtype == np.float64
    assert Tensor(np.array([True, False])).dtype == np.float64
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (x * 2.5 + 1) / 3 - 0.5
    y = (y**2).exp().log().tanh().sigmoid()
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    with pytest.raises(TypeError, match="numeric"):
        Tensor(np.array(["a"]))


def test_integer_tensor_gets_a_real_gradient():
    x = Tensor(np.array([1, 2, 3]), requires_grad=True)
    (x * 0.5).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.5, 0.5, 0.5])


def test_basic_attributes():
    x = Tensor(np.arange(6.0).reshape(2, 3), name="x")
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6
    assert Tensor(np.array([4.0])).item() == 4.0 and isinstance(x.sum().item(), float)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        x.item()
    assert x.numpy() is x.data
    d = Tensor(x.data, requires_grad=True).detach()
    assert not d.requires_grad and d.data is x.data
    assert "name='x'" in repr(x)


def test_reused_node_accumulates():
    x = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    y = x * x  # x used twice in one op
    z = y + y * x  # y used twice
    z.sum().backward()
    # z = x^2 + x^3 -> dz/dx = 2x + 3x^2
    np.testing.assert_allclose(x.grad, 2 * x.data + 3 * x.data**2)


def test_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [3 + 2, 3 + 4])


def test_broadcasting_is_undone_once_in_the_engine():
    a = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones((1, 4)), requires_grad=True)
    c = Tensor(np.ones(4), requires_grad=True)
    (a * b + c).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad, np.full((1, 4), 3.0))
    np.testing.assert_array_equal(c.grad, np.full(4, 3.0))


def test_ten_thousand_op_chain_needs_no_recursion():
    x = Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**10_000)


def test_graph_is_freed_after_backward_unless_retained():
    x = Tensor(np.ones(3), requires_grad=True)
    mid = x.exp()
    ref = weakref.ref(mid)
    loss = (mid * 2.0).sum()
    del mid
    gc.collect()
    assert ref() is not None  # held by the graph
    loss.backward()
    gc.collect()
    assert ref() is None  # released with the graph
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data)


def test_no_grad_records_nothing():
    x = Tensor(np.ones(2), requires_grad=True)
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = x * 2.0
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y._parents == ()

    @tg.no_grad()
    def f(t):
        return t * 3.0

    assert not f(x).requires_grad


def test_retain_grad_keeps_intermediate_gradient():
    x = Tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=True)
    w = tg.softmax(x).retain_grad()
    (w * Tensor(np.array([1.0, 0.0, 0.0]))).sum().backward()
    np.testing.assert_array_equal(w.grad, [[1.0, 0.0, 0.0]])
    s = w.data[0]
    np.testing.assert_allclose(x.grad[0], s[0] * (np.eye(3)[0] - s))


def test_backward_argument_errors():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(ValueError, match=r"one-element.*\(2, 2\)"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 2\)"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_shape_errors_name_the_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\) @ \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(7,\)"):
        a.reshape(7)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        tg.concat([a, b], axis=0)
    with pytest.raises(ValueError, match="axis 2"):
        a.sum(axis=2)


def test_a_tensor_index_must_hold_whole_numbers():
    a = Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    np.testing.assert_array_equal(a[Tensor(np.array([2.0, 0.0]))].data, a.data[[2, 0]])
    with pytest.raises(IndexError, match="non-integer value 1.7"):
        a[Tensor(np.array([1.7]))]
    with pytest.raises(IndexError, match="non-integer value nan"):
        a[:, Tensor(np.array([0.0, np.nan]))]
    mask = np.array([True, False, True])  # a boolean mask works as an ndarray
    np.testing.assert_array_equal(a[mask].data, a.data[[0, 2]])


def test_small_op_argument_errors_name_the_argument():
    a = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="split: axis 5 is out of range"):
        tg.split(a, 3, axis=5)
    assert [p.shape for p in tg.split(a, 3, axis=-1)] == [(2, 1)] * 3
    with pytest.raises(TypeError, match="sum: axis must be an int.*got 1.0"):
        a.sum(axis=1.0)
    with pytest.raises(TypeError, match=r"mean: axis must be an int.*got \(0, 1.5\)"):
        a.mean(axis=(0, 1.5))
    with pytest.raises(ValueError, match="0-d"):
        tg.cross_entropy(Tensor(np.float64(1.0)), 0)
    with pytest.raises(ValueError, match=r"layer_norm.*\(2, 0\)"):
        tg.layer_norm(Tensor(np.ones((2, 0))))
    with pytest.raises(ValueError, match=r"layer_norm.*\(\)"):
        tg.layer_norm(Tensor(np.float64(1.0)))
    with pytest.raises(TypeError, match="where: condition must be a boolean array.*float64"):
        tg.where(np.array([0.5, 0.0, 1.0]), a, a)
    np.testing.assert_array_equal(
        tg.where(np.array([True, False, True]), a, a * 0).data, [[1, 0, 1]] * 2
    )
