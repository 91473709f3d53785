"""How the engine sums gradients: deferred weight products, in-place sums, no aliased .grad."""

import numpy as np
import pytest

import tensorgrad as tg
from models._kernels import linear
from tensorgrad import Tensor, gradcheck
from tensorgrad.tensor import OuterSum, outer_grad


def leaf(shape, seed):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_outer_grad_defers_thin_products_and_computes_wide_ones():
    rng = np.random.default_rng(0)
    thin, wide = rng.standard_normal((3, 4)), rng.standard_normal((300, 4))
    deferred = outer_grad(thin, rng.standard_normal((3, 2)))
    assert isinstance(deferred, OuterSum) and deferred.shape == (4, 2)
    g = rng.standard_normal((300, 2))
    np.testing.assert_allclose(outer_grad(wide, g), wide.T @ g)


def test_outer_sum_materialises_the_sum_of_its_products():
    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal((n, 3)), rng.standard_normal((n, 5))) for n in (2, 4, 1)]
    total = OuterSum(*pairs[0]).extend(OuterSum(*pairs[1])).extend(OuterSum(*pairs[2]))
    np.testing.assert_allclose(total.materialise(), sum(a.T @ g for a, g in pairs), rtol=1e-12)


@pytest.mark.parametrize("rows", [4, 300])  # deferred, and computed at once
def test_weight_shared_over_steps_matches_the_primitive_graph(rows):
    w, b = leaf((3, 3), 2), leaf((3,), 3)
    x0 = np.random.default_rng(4).standard_normal((rows, 3))

    def unrolled(w, b, fused):
        h = Tensor(x0)
        for _ in range(4):  # the same weight at every step, like an unrolled recurrence
            h = linear(h, w, b).tanh() if fused else (h @ w + b).tanh()
        # a last use of w through a primitive matmul mixes an array into the deferred sum
        return ((h @ w) * h).sum()

    unrolled(w, b, True).backward()
    fused = w.grad.copy(), b.grad.copy()
    w.grad = b.grad = None
    unrolled(w, b, False).backward()
    np.testing.assert_allclose(fused[0], w.grad, rtol=1e-10)
    np.testing.assert_allclose(fused[1], b.grad, rtol=1e-10)
    if rows == 4:
        gradcheck(lambda w, b: unrolled(w, b, True), [w, b])


def test_one_gradient_handed_to_two_leaves_is_not_aliased():
    a, b = leaf((2, 3), 5), leaf((2, 3), 6)
    (a + b).sum().backward()  # add hands the same gradient array to both parents
    assert a.grad is not b.grad and not np.shares_memory(a.grad, b.grad)
    a.grad *= 10.0  # an optimiser edits .grad in place
    np.testing.assert_array_equal(b.grad, np.ones((2, 3)))


def test_sums_made_in_place_do_not_leak_into_other_branches():
    # m receives two gradients (the engine sums them), then hands that sum to u and v through
    # an add; u and v each receive more, which must not be added into the shared sum.
    x, y = leaf((3,), 7), leaf((3,), 8)
    u, v = x * 2.0, y * 3.0
    m = u + v
    loss = (m * m).sum() + (m * 5.0).sum() + (u * u).sum() + (v * 7.0).sum()
    loss.backward()
    dm = 2 * m.data + 5.0
    np.testing.assert_allclose(x.grad, 2.0 * (dm + 2 * u.data), rtol=1e-12)
    np.testing.assert_allclose(y.grad, 3.0 * (dm + 7.0), rtol=1e-12)
    gradcheck(lambda x, y: _branches(x, y), [x, y])


def _branches(x, y):
    u, v = x * 2.0, y * 3.0
    m = u + v
    return (m * m).sum() + (m * 5.0).sum() + (u * u).sum() + (v * 7.0).sum()


def test_retained_gradient_is_a_copy_of_the_summed_one():
    x = leaf((2,), 9)
    h = (x * 3.0).retain_grad()
    (h * h + h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data + 1, rtol=1e-12)
    np.testing.assert_allclose(x.grad, 3 * (2 * h.data + 1), rtol=1e-12)
    h.grad *= 0.0
    np.testing.assert_allclose(x.grad, 3 * (2 * h.data + 1), rtol=1e-12)


def test_float32_weight_gradient_keeps_its_dtype_through_a_deferred_sum():
    w = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    h = Tensor(np.ones((3, 2), dtype=np.float32))
    for _ in range(3):
        h = linear(h, w)
    tg.cross_entropy(h, np.array([0, 1, 0])).backward()
    assert w.grad.dtype == np.float32 and w.grad.shape == (2, 2)
