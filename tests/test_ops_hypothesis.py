"""Gradchecks over shapes drawn by hypothesis: broadcast pairs, reductions, batched matmul."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensorgrad as tg
from tensorgrad import Tensor, gradcheck

SETTINGS = settings(max_examples=25, deadline=None)


def leaf(shape, seed, positive=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2.0, size=shape) if positive else rng.uniform(-2, 2, size=shape)
    return Tensor(x, requires_grad=True)


@SETTINGS
@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    op=st.sampled_from(["add", "sub", "mul", "div", "maximum"]),
    seed=st.integers(0, 1000),
)
def test_binary_ops_broadcast(shapes, op, seed):
    a = leaf(shapes.input_shapes[0], seed)
    b = leaf(shapes.input_shapes[1], seed + 1, positive=op == "div")
    fn = {
        "add": tg.Tensor.__add__,
        "sub": tg.Tensor.__sub__,
        "mul": tg.Tensor.__mul__,
        "div": tg.Tensor.__truediv__,
        "maximum": tg.maximum,
    }[op]
    out = fn(a, b)
    assert out.shape == shapes.result_shape
    gradcheck(fn, [a, b])


@SETTINGS
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
    op=st.sampled_from(["sum", "mean", "max", "min"]),
    keepdims=st.booleans(),
    data=st.data(),
)
def test_reductions_any_axes(shape, op, keepdims, data):
    axes = data.draw(
        st.lists(
            st.integers(-len(shape), len(shape) - 1),
            unique_by=lambda a: a % len(shape),
            max_size=len(shape),
        )
    )
    axis = None if not axes else tuple(axes)
    x = leaf(shape, data.draw(st.integers(0, 1000)))
    out = getattr(x, op)(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.data, getattr(np, op)(x.data, axis=axis, keepdims=keepdims))
    gradcheck(lambda x: getattr(x, op)(axis=axis, keepdims=keepdims), [x])


@SETTINGS
@given(
    batch=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3),
    m=st.integers(1, 3),
    k=st.integers(1, 3),
    n=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_batched_matmul_broadcasts_batch_dims(batch, m, k, n, seed):
    a = leaf(batch.input_shapes[0] + (m, k), seed)
    b = leaf(batch.input_shapes[1] + (k, n), seed + 1)
    np.testing.assert_allclose((a @ b).data, a.data @ b.data)
    gradcheck(lambda a, b: a @ b, [a, b])
