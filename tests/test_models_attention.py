"""Multi-head attention: values against plain NumPy, masks, gradients and errors."""

import numpy as np
import pytest

import tensorgrad as tg
from models import MultiHeadAttention, multi_head_attention
from tensorgrad import Tensor, gradcheck


def leaf(shape, seed, dtype=np.float64):
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return Tensor(data, requires_grad=True)


def numpy_attention(q, k, v, heads, mask=None):
    """Attention written out head by head and query by query, with no tensorgrad at all."""
    b, tq, d_model = q.shape
    d = d_model // heads
    out = np.zeros_like(q)
    weights = np.zeros((b, heads, tq, k.shape[1]))
    for n in range(b):
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            for i in range(tq):
                allowed = (
                    np.ones(k.shape[1], bool)
                    if mask is None
                    else np.broadcast_to(mask, (b, heads, tq, k.shape[1]))[n, h, i]
                )
                if not allowed.any():
                    continue
                scores = k[n, :, cols] @ q[n, i, cols] / np.sqrt(d)
                e = np.where(allowed, np.exp(scores - scores[allowed].max()), 0.0)
                weights[n, h, i] = e / e.sum()
                out[n, i, cols] = weights[n, h, i] @ v[n, :, cols]
    return out, weights


@pytest.mark.parametrize("tq,tk,heads", [(3, 3, 2), (1, 5, 4), (4, 2, 1)])
def test_matches_plain_numpy(tq, tk, heads):
    q, k, v = leaf((2, tq, 8), 0), leaf((2, tk, 8), 1), leaf((2, tk, 8), 2)
    out, w = multi_head_attention(q, k, v, heads, return_weights=True)
    ref_out, ref_w = numpy_attention(q.data, k.data, v.data, heads)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-12)
    assert w.shape == (2, heads, tq, tk)


def test_mask_matches_numpy_and_weights_sum_to_one_over_allowed_keys():
    rng = np.random.default_rng(3)
    mask = rng.random((2, 2, 4, 5)) < 0.5
    mask[:, :, :, 0] = True  # every row has at least one allowed key
    q, k, v = leaf((2, 4, 6), 0), leaf((2, 5, 6), 1), leaf((2, 5, 6), 2)
    out, w = multi_head_attention(q, k, v, 2, mask=mask, return_weights=True)
    ref_out, ref_w = numpy_attention(q.data, k.data, v.data, 2, mask)
    np.testing.assert_allclose(out.data, ref_out, atol=1e-12)
    np.testing.assert_allclose(w, ref_w, atol=1e-12)
    assert np.all(w[~mask] == 0.0)
    np.testing.assert_allclose((w * mask).sum(-1), 1.0, atol=1e-12)


def test_fully_masked_row_gives_zeros_and_finite_gradients():
    mask = np.ones((1, 1, 3, 4), dtype=bool)
    mask[..., 1, :] = False  # query 1 may attend to nothing
    q, k, v = leaf((2, 3, 4), 0), leaf((2, 4, 4), 1), leaf((2, 4, 4), 2)
    out, w = multi_head_attention(q, k, v, 2, mask=mask, return_weights=True)
    assert np.all(out.data[:, 1] == 0.0) and np.all(w[:, :, 1] == 0.0)
    assert np.all(np.isfinite(out.data))
    (out * out).sum().backward()
    for t in (q, k, v):
        assert np.all(np.isfinite(t.grad))
    assert np.all(q.grad[:, 1] == 0.0)  # the empty row does not depend on its query
    gradcheck(lambda q, k, v: multi_head_attention(q, k, v, 2, mask=mask), [q, k, v])


def test_float32_with_all_keys_masked_stays_finite():
    mask = np.zeros((1, 1, 1, 3), dtype=bool)
    q = leaf((2, 1, 4), 0, np.float32)
    kv = leaf((2, 3, 4), 1, np.float32)
    out = multi_head_attention(q, kv, kv, 2, mask=mask)
    out.sum().backward()
    assert out.dtype == np.float32 and np.all(out.data == 0)
    assert np.all(np.isfinite(q.grad)) and np.all(np.isfinite(kv.grad))


def test_causal_mask_ignores_future_values():
    causal = np.tril(np.ones((4, 4), dtype=bool))
    q, k, v = leaf((1, 4, 4), 0), leaf((1, 4, 4), 1), leaf((1, 4, 4), 2)
    first = multi_head_attention(q, k, v, 2, mask=causal).data
    v.data[:, 2:] += 10.0  # change only the last two positions
    second = multi_head_attention(q, k, v, 2, mask=causal).data
    np.testing.assert_array_equal(first[:, :2], second[:, :2])
    assert not np.allclose(first[:, 2:], second[:, 2:])


def test_gradcheck_with_mask():
    mask = np.random.default_rng(5).random((2, 1, 3, 4)) < 0.7
    q, k, v = leaf((2, 3, 6), 0), leaf((2, 4, 6), 1), leaf((2, 4, 6), 2)
    gradcheck(lambda q, k, v: multi_head_attention(q, k, v, 3, mask=mask), [q, k, v])


def test_scaling_uses_head_size():
    """With one key per query the output is v; with two equal-score keys it averages them.

    A key that equals the query scores |q|² / sqrt(d); doubling d at fixed |q|² softens the
    weights by exactly the factor predicted by 1/sqrt(D/H).
    """
    q = Tensor(np.array([[[1.0, 0.0, 0.0, 0.0]]]))
    k = Tensor(np.array([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]))
    v = Tensor(np.array([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]]))
    _, w1 = multi_head_attention(q, k, v, 1, return_weights=True)  # d = 4: score 1/2 vs 0
    _, w2 = multi_head_attention(q, k, v, 2, return_weights=True)  # d = 2: score 1/sqrt(2) vs 0
    np.testing.assert_allclose(w1[0, 0, 0, 0], 1 / (1 + np.exp(-0.5)), rtol=1e-12)
    np.testing.assert_allclose(w2[0, 0, 0, 0], 1 / (1 + np.exp(-1 / np.sqrt(2))), rtol=1e-12)
    np.testing.assert_allclose(w2[0, 1, 0], [0.5, 0.5])  # head 2 sees only zeros


def test_errors_name_the_shapes():
    q = leaf((2, 3, 6), 0)
    with pytest.raises(ValueError, match="6.*num_heads=4"):
        multi_head_attention(q, q, q, 4)
    with pytest.raises(ValueError, match=r"Q \(2, 3, 6\).*K \(2, 4, 6\).*V \(2, 5, 6\)"):
        multi_head_attention(q, leaf((2, 4, 6), 1), leaf((2, 5, 6), 2), 2)
    with pytest.raises(ValueError, match=r"K must be a 3-D Tensor.*\(3, 6\)"):
        multi_head_attention(q, leaf((3, 6), 1), q, 2)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 2, 3, 3\)"):
        multi_head_attention(q, q, q, 2, mask=np.ones((2, 4), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        multi_head_attention(q, q, q, 2, mask=np.ones((3, 3)))
    with pytest.raises(TypeError, match="float32"):
        multi_head_attention(q, leaf((2, 3, 6), 1, np.float32), q, 2)
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)


def test_module_equals_projections_then_function():
    mha = MultiHeadAttention(8, 2, dtype=np.float64, rng=0)
    x, mem = leaf((2, 3, 8), 1), leaf((2, 5, 8), 2)
    out = mha(x, mem)
    q = x @ mha.q_proj.weight + mha.q_proj.bias
    k = mem @ mha.k_proj.weight + mha.k_proj.bias
    v = mem @ mha.v_proj.weight + mha.v_proj.bias
    ref = multi_head_attention(q, k, v, 2) @ mha.out_proj.weight + mha.out_proj.bias
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-12)
    assert mha.last_weights.shape == (2, 2, 3, 5)
    np.testing.assert_allclose(mha.last_weights.sum(-1), 1.0)
    assert mha.num_parameters() == 4 * (8 * 8 + 8)
    assert MultiHeadAttention(8, 2, bias=False).num_parameters() == 4 * 8 * 8


def test_module_gradcheck_inputs_and_parameters():
    mha = MultiHeadAttention(4, 2, dtype=np.float64, rng=1)
    x = leaf((2, 3, 4), 3)
    mask = np.tril(np.ones((3, 3), dtype=bool))
    params = mha.parameters()
    gradcheck(lambda x, *_: mha(x, mask=mask), [x, *params])


def test_module_float32_end_to_end():
    mha = MultiHeadAttention(8, 4, rng=0)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32))
    out = mha(x)
    tg.cross_entropy(out.reshape(6, 8), np.arange(6) % 8).backward()
    assert out.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in mha.parameters())


def test_attention_sizes_must_be_integers():
    with pytest.raises(ValueError, match="num_heads must be an int >= 1, got 2.0"):
        MultiHeadAttention(4, 2.0)
    with pytest.raises(ValueError, match="d_model must be an int >= 1, got 4.0"):
        MultiHeadAttention(4.0, 2)
    q = leaf((2, 3, 4), 0)
    with pytest.raises(ValueError, match="num_heads must be an int >= 1, got 2.0"):
        multi_head_attention(q, q, q, 2.0)
