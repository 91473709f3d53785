"""Checkpoints: exact resume; checks of keys, shapes, dtypes; corrupt files; atomic writes."""

import os
import zipfile

import numpy as np
import pytest

import tensorgrad as tg
from tensorgrad import checkpoint, nn, optim
from tensorgrad.checkpoint import CheckpointError

DATA_RNG = np.random.default_rng(7)
X = DATA_RNG.standard_normal((64, 4)).astype(np.float32)
Y = DATA_RNG.integers(0, 3, 64)


def build(init_seed=0, rng_seed=123):
    model = nn.MLP(4, [8, 8], 3, rng=init_seed)
    opt = optim.Adam(model.parameters(), lr=0.02)
    sched = optim.WarmupLR(opt, 3, after=optim.CosineLR(opt, total_steps=17, min_lr=1e-3))
    return model, opt, sched, np.random.default_rng(rng_seed)


def train(model, opt, sched, rng, steps, history):
    for _ in range(steps):
        idx = rng.choice(len(X), 16, replace=False)
        loss = tg.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(loss.item())


def test_resume_matches_uninterrupted_run_bit_for_bit(tmp_path):
    model, opt, sched, rng = build()
    history = []
    train(model, opt, sched, rng, 20, history)
    assert history[-1] < history[0]  # it did learn something, so the comparison is not vacuous

    m1, o1, s1, r1 = build()
    h1 = []
    train(m1, o1, s1, r1, 10, h1)
    path = tmp_path / "run.npz"
    checkpoint.save(
        path, m1, o1, step=10, schedule=s1.state_dict(), rng=r1.bit_generator.state, history=h1
    )

    m2, o2, s2, r2 = build(init_seed=99, rng_seed=5)  # deliberately different starting state
    meta = checkpoint.load(path, m2, o2)
    s2.load_state_dict(meta["schedule"])
    r2.bit_generator.state = meta["rng"]
    assert meta["step"] == 10 and o2.step_count == 10
    h2 = meta["history"]
    train(m2, o2, s2, r2, 10, h2)

    assert h2 == history
    for (name, a), (_, b) in zip(model.named_parameters(), m2.named_parameters()):
        assert np.array_equal(a.data, b.data), name
    for key, value in opt.state_dict().items():
        assert np.array_equal(o2.state_dict()[key], value), key
    assert o2.lr == opt.lr and s2.state_dict() == sched.state_dict()
    assert r2.integers(1 << 62) == rng.integers(1 << 62)


def test_file_layout_needs_no_pickle(tmp_path):
    model, opt, _, _ = build()
    path = checkpoint.save(tmp_path / "c.npz", model, opt, step=np.int64(3), note="héllo ✓")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        assert z["model/layers.0.weight"].dtype == np.float32
        assert z["meta"].dtype == np.uint8
    assert "model/layers.2.bias" in keys and "optim/exp_avg_sq.5" in keys and "optim/step" in keys
    assert checkpoint.load(path, model) == {"step": 3, "note": "héllo ✓"}
    with pytest.raises(TypeError, match="ndarray, which is not JSON-serialisable"):
        checkpoint.save(tmp_path / "d.npz", model, weights=np.zeros(2))


def test_truncated_and_corrupt_files_raise_checkpoint_error(tmp_path):
    model, opt, _, _ = build()
    good = tmp_path / "good.npz"
    checkpoint.save(good, model, opt)
    raw = good.read_bytes()

    half = tmp_path / "half.npz"
    half.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="half.npz") as err:
        checkpoint.load(half, model, opt)
    assert isinstance(err.value, ValueError)
    assert "truncated or corrupt" in str(err.value)

    flipped = bytearray(raw)
    at = raw.find(model.layers[1].weight.data.tobytes()) + 5
    assert at > 5
    flipped[at] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"flipped\.npz.*CRC"):
        checkpoint.load(bad, model, opt)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk.npz: not a checkpoint \(not a .npz archive\)"):
        checkpoint.load(junk, model)
    missing = tmp_path / "missing.npz"
    with pytest.raises(CheckpointError, match=f"^no checkpoint at {missing}$") as err:
        checkpoint.load(missing, model)
    assert isinstance(err.value.__cause__, FileNotFoundError)
    with pytest.raises(CheckpointError, match="a directory, not a checkpoint"):
        checkpoint.load(tmp_path, model)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.npz: .*truncated or corrupt \(empty file\)"):
        checkpoint.load(empty, model)

    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(CheckpointError, match="no 'meta' entry"):
        checkpoint.load(plain, model)


def test_mismatched_model_or_optimizer_is_named(tmp_path):
    model, opt, _, _ = build()
    path = tmp_path / "c.npz"
    checkpoint.save(path, model)

    wider = nn.MLP(4, [9, 8], 3)
    before = wider.state_dict()
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path, wider)
    msg = str(err.value)
    assert str(path) in msg
    assert "layers.0.weight: shape (4, 8) in file but (4, 9) expected" in msg
    assert "layers.1.weight: shape (8, 8) in file but (9, 8) expected" in msg
    assert all(np.array_equal(v, wider.state_dict()[k]) for k, v in before.items())

    with pytest.raises(CheckpointError, match=r"missing model entries: layers\.3\.weight"):
        checkpoint.load(path, nn.MLP(4, [8, 8, 8], 3))
    with pytest.raises(CheckpointError, match=r"unexpected model entries: layers\.2\.weight"):
        checkpoint.load(path, nn.MLP(4, [8], 3))
    with pytest.raises(CheckpointError, match="dtype float32 in file but float64"):
        checkpoint.load(path, nn.MLP(4, [8, 8], 3, dtype=np.float64))
    with pytest.raises(CheckpointError, match="no optimiser state"):
        checkpoint.load(path, model, opt)

    checkpoint.save(path, model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(CheckpointError, match="missing optimizer entries: exp_avg.0"):
        checkpoint.load(path, model, opt)


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    model, opt, _, _ = build()
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, model, opt, step=1)
    checkpoint.save(path, model, opt, step=2)  # overwrite in place
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert zipfile.is_zipfile(path)
    old = path.read_bytes()

    def failing_savez(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, model, opt, step=3)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert path.read_bytes() == old
