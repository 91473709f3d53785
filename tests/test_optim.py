"""Optimisers against hand-written updates, gradient clipping, and learning-rate schedules."""

import math

import numpy as np
import pytest

import tensorgrad as tg
from tensorgrad import nn, optim

RNG = np.random.default_rng(0)
P0 = RNG.standard_normal((2, 3)).astype(np.float32)
Q0 = RNG.standard_normal(3).astype(np.float32)
GRADS_P = RNG.standard_normal((3, 2, 3)).astype(np.float32)
GRADS_Q = RNG.standard_normal((3, 3)).astype(np.float32)


def fresh_params():
    return nn.Parameter(P0.copy()), nn.Parameter(Q0.copy())


def run(opt, p, q, skip_q_at=None):
    """Three steps with fixed gradients; q gets no gradient at step `skip_q_at`."""
    for t in range(3):
        p.grad = GRADS_P[t].copy()
        q.grad = None if t == skip_q_at else GRADS_Q[t].copy()
        opt.step()


def adam_reference(x, grads, lr, b1, b2, eps, wd, active):
    """Kingma & Ba, Algorithm 1, in float64; `active[t]` False means no update at step t."""
    x = x.astype(np.float64)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for t in range(1, 4):
        if not active[t - 1]:
            continue
        g = grads[t - 1].astype(np.float64) + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        x = x - lr * m_hat / (np.sqrt(v_hat) + eps)
    return x


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_three_hand_written_steps(wd):
    p, q = fresh_params()
    data_p = p.data
    opt = optim.Adam([p, q], lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=wd)
    run(opt, p, q, skip_q_at=1)

    np.testing.assert_allclose(
        p.data, adam_reference(P0, GRADS_P, 0.01, 0.8, 0.9, 1e-6, wd, [1, 1, 1]), rtol=1e-5
    )
    # q skipped step 2 but uses the shared counter, so t = 3 at its second update
    np.testing.assert_allclose(
        q.data, adam_reference(Q0, GRADS_Q, 0.01, 0.8, 0.9, 1e-6, wd, [1, 0, 1]), rtol=1e-5
    )
    assert opt.step_count == 3
    assert p.data is data_p and p.data.dtype == np.float32 and q.data.dtype == np.float32
    assert all(a.dtype == np.float32 for arrays in opt.state.values() for a in arrays)


def test_adam_first_step_moves_by_lr():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.array([0.5, -1e-4])
    opt.step()
    # m_hat = g and v_hat = g^2 after one step, so the step is lr * g / (|g| + eps); with eps
    # inside the root the tiny gradient would move by 0.1 * 1e-4 / sqrt(2e-8) ~ 0.0707 instead
    expected = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 1e-4 / (1e-4 + 1e-8)]
    np.testing.assert_allclose(p.data, expected, rtol=1e-14)


def test_sgd_momentum_matches_hand_values():
    p = nn.Parameter(np.array([1.0], np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    seen = []
    for _ in range(3):
        p.grad = np.ones(1, np.float32)
        opt.step()
        seen.append(float(p.data[0]))
    # buf = 1, 1.9, 2.71; p = 1 - 0.1 * cumulative buf
    np.testing.assert_allclose(seen, [0.9, 0.71, 0.439], rtol=1e-6)

    p = nn.Parameter(np.array([1.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    seen = []
    for _ in range(3):
        p.grad = np.ones(1)
        opt.step()
        seen.append(float(p.data[0]))
    # step direction g + 0.9 * buf = 1.9, 2.71, 3.439
    np.testing.assert_allclose(seen, [0.81, 0.539, 0.1951], rtol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_sgd_matches_three_hand_written_steps(nesterov, wd):
    p, q = fresh_params()
    opt = optim.SGD([p, q], lr=0.1, momentum=0.5, weight_decay=wd, nesterov=nesterov)
    run(opt, p, q)

    x = P0.astype(np.float64)
    buf = np.zeros_like(x)
    for g in GRADS_P.astype(np.float64):
        g = g + wd * x
        buf = 0.5 * buf + g
        x = x - 0.1 * (g + 0.5 * buf if nesterov else buf)
    np.testing.assert_allclose(p.data, x, rtol=1e-5)
    assert p.data.dtype == np.float32


def test_plain_sgd_and_float32_kept_with_numpy_hyperparameters():
    p = nn.Parameter(np.array([1.0, 2.0], np.float32))
    opt = optim.SGD([p], lr=np.float64(0.5))
    p.grad = np.array([1.0, -1.0], np.float32)
    opt.step()
    assert p.data.dtype == np.float32
    np.testing.assert_array_equal(p.data, np.array([0.5, 2.5], np.float32))
    assert opt.state == {}

    a = nn.Parameter(np.ones(2, np.float32))
    adam = optim.Adam([a], lr=np.float64(0.1), betas=(np.float64(0.9), np.float64(0.99)))
    a.grad = np.ones(2, np.float32)
    adam.step()
    assert a.data.dtype == np.float32 and type(adam.lr) is float


def test_optimizer_argument_checks():
    p = nn.Parameter(np.zeros(2))
    assert len(optim.SGD([p, p], lr=0.1).params) == 1
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(ValueError, match="does not require grad"):
        optim.SGD([tg.Tensor(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(0.9, 1.0))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"grad shape \(3,\) != param shape \(2,\)"):
        opt.step()


def test_zero_grad_clears_and_none_grads_are_skipped():
    p, q = fresh_params()
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    p.grad = np.ones_like(P0)
    opt.step()
    np.testing.assert_array_equal(q.data, Q0)
    np.testing.assert_array_equal(opt.state["momentum"][1], np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_clip_grad_norm_scales_to_max_norm_exactly():
    a = nn.Parameter(np.zeros(2, np.float32))
    b = nn.Parameter(np.zeros(1, np.float32))
    c = nn.Parameter(np.zeros(4, np.float32))  # no gradient: ignored
    a.grad = np.array([3.0, 4.0], np.float32)
    b.grad = np.array([12.0], np.float32)
    norm = optim.clip_grad_norm([a, b, c], max_norm=6.5)
    assert norm == 13.0 and type(norm) is float
    np.testing.assert_array_equal(a.grad, [1.5, 2.0])
    np.testing.assert_array_equal(b.grad, [6.0])
    assert a.grad.dtype == np.float32 and c.grad is None
    assert math.sqrt(float(a.grad @ a.grad + b.grad @ b.grad)) == 6.5

    assert optim.clip_grad_norm([a, b], max_norm=100.0) == 6.5
    np.testing.assert_array_equal(a.grad, [1.5, 2.0])  # below the limit: untouched

    rng = np.random.default_rng(1)
    ps = [nn.Parameter(np.zeros(s, np.float32)) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in ps:
        p.grad = rng.standard_normal(p.shape).astype(np.float32) * 10
    before = np.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in ps))
    assert optim.clip_grad_norm(ps, 1.0) == pytest.approx(before, rel=1e-12)
    after = np.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in ps))
    assert after == pytest.approx(1.0, rel=1e-6)  # float32 rounding of the scaled grads


def test_clip_grad_norm_zero_huge_and_non_finite():
    z = nn.Parameter(np.zeros(3, np.float32))
    z.grad = np.zeros(3, np.float32)
    assert optim.clip_grad_norm([z], 1.0) == 0.0
    np.testing.assert_array_equal(z.grad, np.zeros(3))
    assert optim.clip_grad_norm([nn.Parameter(np.zeros(2))], 1.0) == 0.0  # no grads at all

    big = nn.Parameter(np.zeros(2, np.float32))
    big.grad = np.array([3e30, 4e30], np.float32)  # squares overflow float32, not float64
    assert optim.clip_grad_norm([big], 1.0) == pytest.approx(5e30, rel=1e-6)
    np.testing.assert_allclose(big.grad, [0.6, 0.8], rtol=1e-6)

    for bad in (np.inf, np.nan):
        p = nn.Parameter(np.zeros(2, np.float32))
        p.grad = np.array([1.0, bad], np.float32)
        norm = optim.clip_grad_norm([p], 1.0)
        assert not math.isfinite(norm) and (math.isnan(norm) == math.isnan(bad))
        assert p.grad[0] == 1.0  # left untouched for the caller to inspect
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm([z], 0.0)


def lrs_used(opt, sched, n):
    """The lr each of the first n updates runs with, stepping the schedule after each."""
    out = []
    for _ in range(n):
        out.append(opt.lr)
        sched.step()
    return out


def sgd(lr=1.0):
    return optim.SGD([nn.Parameter(np.zeros(1))], lr=lr)


def test_constant_and_step_schedules():
    opt = sgd(0.1)
    assert lrs_used(opt, optim.ConstantLR(opt), 4) == [0.1] * 4

    opt = sgd(1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    assert lrs_used(opt, sched, 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert [sched.lr_at(k) for k in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_cosine_schedule():
    opt = sgd(1.1)
    sched = optim.CosineLR(opt, total_steps=4, min_lr=0.1)
    half = 0.5 * math.sqrt(0.5)  # (1 + cos(pi/4)) / 2 - 1/2
    expected = [1.1, 0.6 + half, 0.6, 0.6 - half, 0.1, 0.1]
    np.testing.assert_allclose(lrs_used(opt, sched, 6), expected, rtol=1e-12)


def test_warmup_schedules():
    opt = sgd(0.3)
    np.testing.assert_allclose(
        lrs_used(opt, optim.WarmupLR(opt, warmup_steps=3), 5), [0.1, 0.2, 0.3, 0.3, 0.3]
    )

    opt = sgd(1.0)
    sched = optim.WarmupLR(opt, 2, after=optim.StepLR(opt, step_size=2, gamma=0.1))
    np.testing.assert_allclose(lrs_used(opt, sched, 7), [0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01])
    with pytest.raises(ValueError, match="same optimizer"):
        optim.WarmupLR(opt, 2, after=optim.ConstantLR(sgd()))
    with pytest.raises(ValueError, match="non-negative int"):
        sched.lr_at(-1)


def test_first_update_uses_first_scheduled_value():
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=0.4)
    sched = optim.WarmupLR(opt, warmup_steps=4)
    assert opt.lr == 0.1
    p.grad = np.ones(1)
    opt.step()
    assert p.data[0] == -0.1
    sched.step()
    opt.step()
    np.testing.assert_allclose(p.data, [-0.3], rtol=1e-15)


def train(opt, sched, p, grads):
    for g in grads:
        p.grad = g.copy()
        opt.step()
        sched.step()


def test_optimizer_and_schedule_state_round_trip():
    grads = np.random.default_rng(2).standard_normal((6, 2, 3)).astype(np.float32)

    def build():
        p = nn.Parameter(P0.copy())
        opt = optim.Adam([p], lr=0.05)
        sched = optim.WarmupLR(opt, 2, after=optim.CosineLR(opt, total_steps=5))
        return p, opt, sched

    p, opt, sched = build()
    train(opt, sched, p, grads)

    p1, opt1, sched1 = build()
    train(opt1, sched1, p1, grads[:3])
    opt_state, sched_state, data = opt1.state_dict(), sched1.state_dict(), p1.data.copy()
    assert sorted(opt_state) == ["exp_avg.0", "exp_avg_sq.0", "lr", "step"]
    assert int(opt_state["step"]) == 3 and sched_state["step"] == 3

    p2, opt2, sched2 = build()
    p2.data[...] = data
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert opt2.step_count == 3 and opt2.lr == opt1.lr
    train(opt2, sched2, p2, grads[3:])
    assert np.array_equal(p2.data, p.data)
    for key, value in opt.state_dict().items():
        assert np.array_equal(opt2.state_dict()[key], value), key


def test_optimizer_load_state_dict_rejects_mismatches():
    p = nn.Parameter(np.zeros((2, 3), np.float32))
    opt = optim.Adam([p])
    state = opt.state_dict()
    state["exp_avg.0"] = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"exp_avg\.0: shape \(3, 2\) in state but \(2, 3\)"):
        opt.load_state_dict(state)
    state = opt.state_dict()
    state["exp_avg_sq.0"] = np.ones((2, 3))
    state["step"] = np.array(7)
    with pytest.raises(ValueError, match="exp_avg_sq.0: dtype float64"):
        opt.load_state_dict(state)
    assert opt.step_count == 0  # nothing applied
    del state["exp_avg_sq.0"]
    with pytest.raises(ValueError, match="missing: exp_avg_sq.0"):
        opt.load_state_dict(state)
    with pytest.raises(ValueError, match="unexpected: momentum.0"):
        opt.load_state_dict({**opt.state_dict(), "momentum.0": np.zeros((2, 3))})

    sched = optim.StepLR(opt, step_size=3)
    with pytest.raises(ValueError, match="kind 'CosineLR'"):
        sched.load_state_dict({"kind": "CosineLR", "step": 1, "base_lr": 0.1})
