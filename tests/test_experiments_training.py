"""The training loop: steps, evaluation, early stopping, checkpoints, exact resume, NaN handling."""

import json
import math

import numpy as np
import pytest

import tensorgrad as tg
from experiments.training import (
    FitResult,
    NonFiniteError,
    TrainingError,
    evaluate,
    fit,
    predict,
    train_step,
)
from models import LSTM, SequenceClassifier
from tensorgrad import checkpoint
from tensorgrad.nn import Module, Parameter
from tensorgrad.optim import SGD, Adam, CosineLR

T, D, C = 4, 6, 3


def easy_batch(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class = the hot one of the first C features at a random step, which a flag marks."""
    x = rng.normal(0.0, 0.1, size=(n, T, D)).astype(np.float32)
    y = rng.integers(0, C, size=n)
    at = rng.integers(0, T, size=n)
    x[np.arange(n), at, y] += 1.0
    x[np.arange(n), at, D - 1] = 1.0
    return x, y


def easy_sampler(batch_size: int, rng: np.random.Generator):
    return easy_batch(batch_size, rng)


def small_model(seed: int = 0) -> SequenceClassifier:
    return SequenceClassifier(LSTM(D, 8, rng=seed), C, mlp_hidden=(16,), rng=seed + 1)


def strip_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in rec.items() if k != "elapsed"} for rec in history]


# ------------------------------------------------------------------------------ step, evaluate


def test_train_step_returns_the_loss_and_unclipped_norm_and_clips():
    model = small_model()
    x, y = easy_batch(16, np.random.default_rng(0))
    expected_loss = tg.cross_entropy(model(x), y).item()
    opt = SGD(model.parameters(), lr=0.0)  # lr 0 leaves the weights as they were
    loss, norm = train_step(model, (x, y), opt, clip_norm=1e-3)

    grads = [p.grad for p in model.parameters()]
    clipped = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    model.zero_grad()
    tg.cross_entropy(model(x), y).backward()
    full = math.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in model.parameters()))
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert norm == pytest.approx(full, rel=1e-5)
    assert norm > 1e-3
    assert clipped == pytest.approx(1e-3, rel=1e-4)


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    model = small_model()
    batch = easy_batch(32, np.random.default_rng(1))
    opt = Adam(model.parameters(), lr=1e-2)
    first, _ = train_step(model, batch, opt)
    for _ in range(40):
        last, _ = train_step(model, batch, opt)
    assert last < 0.5 * first


def test_evaluate_matches_numpy_and_restores_the_mode():
    model = small_model()
    x, y = easy_batch(50, np.random.default_rng(2))
    model.train()
    logits = predict(model, x, batch_size=7)
    assert model.training
    res = evaluate(model, (x, y), batch_size=7)
    assert model.training

    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert res.loss == pytest.approx(-logp[np.arange(50), y].mean(), rel=1e-5)
    assert res.accuracy == np.mean(logits.argmax(axis=1) == y)
    assert res.count == 50
    with tg.no_grad():
        full = model(x).data
    np.testing.assert_allclose(logits, full, rtol=1e-5, atol=1e-6)


def test_evaluate_rejects_bad_shapes():
    with pytest.raises(ValueError, match="inputs"):
        evaluate(small_model(), (np.zeros((4, D), np.float32), np.zeros(4, np.int64)))


# ------------------------------------------------------------------------------ fit


def test_fit_learns_an_easy_task_from_a_fixed_dataset(tmp_path):
    rng = np.random.default_rng(3)
    train, val = easy_batch(512, rng), easy_batch(256, rng)
    model = small_model()
    opt = Adam(model.parameters(), lr=1e-2)
    lines: list[str] = []
    res = fit(
        model,
        opt,
        train=train,
        val=val,
        steps=150,
        batch_size=32,
        eval_every=50,
        metrics_path=tmp_path / "m.jsonl",
        tags={"task": "easy"},
        log=lines.append,
    )
    assert res.status == "completed" and res.ok
    assert res.best_val_accuracy > 0.9  # chance is 1/3
    assert evaluate(model, val).accuracy == res.best_val_accuracy  # best weights restored
    records = [json.loads(s) for s in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 50, 100, 150]
    assert set(records[-1]) >= {
        "task",
        "step",
        "loss",
        "train_acc",
        "val_acc",
        "val_loss",
        "lr",
        "grad_norm",
        "elapsed",
    }
    assert len(lines) == 4 and "step 150/150" in lines[-1]


def test_fit_stops_at_the_target_accuracy():
    rng = np.random.default_rng(4)
    model = small_model()
    res = fit(
        model,
        Adam(model.parameters(), lr=1e-2),
        batch_sampler=easy_sampler,
        val=easy_batch(256, rng),
        steps=1000,
        batch_size=32,
        eval_every=25,
        target_accuracy=0.8,
    )
    assert res.status == "target_reached"
    assert res.step < 1000
    assert res.history[-1]["val_acc"] >= 0.8
    assert res.steps_to(0.8) == res.step


def test_fit_stops_when_patience_runs_out():
    rng = np.random.default_rng(5)
    x, _ = easy_batch(256, rng)
    noise = (x, rng.integers(0, C, size=256))  # labels unrelated to the inputs
    model = small_model()
    res = fit(
        model,
        Adam(model.parameters(), lr=1e-3),
        train=noise,
        val=noise,
        steps=1000,
        batch_size=32,
        eval_every=10,
        patience=2,
        min_delta=0.5,
    )
    assert res.status == "early_stopped"
    assert res.step == 20  # step 0 sets the best; 10 and 20 fail to beat it by 0.5
    assert "no gain" in res.message


def test_fit_rejects_two_data_sources():
    model = small_model()
    data = easy_batch(64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly one"):
        fit(
            model,
            Adam(model.parameters()),
            train=data,
            batch_sampler=easy_sampler,
            val=data,
            steps=5,
            batch_size=8,
        )


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_fit_rejects_nonfinite_inputs_before_training(split, bad):
    model = small_model()
    opt = Adam(model.parameters())
    data = {s: easy_batch(64, np.random.default_rng(i)) for i, s in enumerate(("train", "val"))}
    data[split][0][5, 2, 1] = bad
    data[split][0][9, 0, 0] = bad
    with pytest.raises(ValueError, match=f"^{split} inputs .*example 5 "):
        fit(model, opt, train=data["train"], val=data["val"], steps=5, batch_size=8)
    assert opt.step_count == 0


def test_fit_names_the_step_of_a_sampled_batch_holding_nan():
    model = small_model()
    opt = Adam(model.parameters())

    def sampler(batch_size, gen):
        x, y = easy_sampler(batch_size, gen)
        if opt.step_count == 3:
            x[2, 0, 0] = np.nan
        return x, y

    val = easy_batch(32, np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch inputs .*example 2 at step 4") as info:
        fit(model, opt, batch_sampler=sampler, val=val, steps=10, batch_size=8, eval_every=2)
    assert "non-finite loss" not in str(info.value)
    assert opt.step_count == 3
    with pytest.raises(ValueError, match="batch inputs .*example 2"):
        train_step(model, sampler(8, np.random.default_rng(0)), opt)


def test_evaluate_rejects_nonfinite_inputs():
    x, y = easy_batch(16, np.random.default_rng(0))
    x[7, 3, 2] = np.nan
    with pytest.raises(ValueError, match="example 7"):
        evaluate(small_model(), (x, y))


@pytest.mark.parametrize(
    "option, value",
    [
        ("steps", 0),
        ("steps", 2.5),
        ("steps", True),
        ("batch_size", 0),
        ("batch_size", 8.0),
        ("eval_every", 0),
        ("eval_every", 1.5),
        ("patience", 0),
        ("patience", 2.0),
        ("target_accuracy", 0.0),
        ("target_accuracy", 2.0),
        ("target_accuracy", math.nan),
        ("clip_norm", 0.0),
        ("clip_norm", -1.0),
        ("clip_norm", math.inf),
    ],
)
def test_fit_rejects_bad_options_up_front(option, value):
    model = small_model()
    opt = Adam(model.parameters())
    kwargs = {"steps": 5, "batch_size": 8, "eval_every": 5, option: value}
    data = easy_batch(32, np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"fit: {option} must be .*got {value!r}"):
        fit(model, opt, train=data, val=data, **kwargs)
    assert opt.step_count == 0


# ------------------------------------------------------------------------------ resume


def _run(tmp_path, name, steps, fresh, interrupt_at=None, resume=False):
    """A run interrupted (KeyboardInterrupt) during its `interrupt_at`-th update when given."""
    model = small_model(seed=7)
    opt = Adam(model.parameters(), lr=5e-3)
    sched = CosineLR(opt, total_steps=60, min_lr=1e-4)
    rng = np.random.default_rng(8)
    val = easy_batch(64, rng)
    source = {"batch_sampler": easy_sampler} if fresh else {"train": easy_batch(100, rng)}
    if interrupt_at is not None:
        real_step, calls = sched.step, [0]

        def step():
            calls[0] += 1
            if calls[0] == interrupt_at:
                raise KeyboardInterrupt
            return real_step()

        sched.step = step
    res = fit(
        model,
        opt,
        schedule=sched,
        val=val,
        steps=steps,
        batch_size=16,
        eval_every=20,
        seed=11,
        checkpoint_dir=tmp_path / name,
        resume=resume,
        metrics_path=tmp_path / f"{name}.jsonl",
        tags={"run": "r"},
        restore_best=False,
        **source,
    )
    return model, opt, sched, res


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-batches", "fixed-dataset"])
def test_resume_continues_bit_for_bit(tmp_path, fresh):
    full_model, full_opt, full_sched, full = _run(tmp_path, "full", 60, fresh)
    assert full.status == "completed"

    _, _, _, cut = _run(tmp_path, "cut", 60, fresh, interrupt_at=47)
    assert cut.status == "interrupted"
    assert "step 46" in cut.message and "last.npz (step 40)" in cut.message
    assert isinstance(cut.error, KeyboardInterrupt)
    model, opt, sched, res = _run(tmp_path, "cut", 60, fresh, resume=True)

    assert res.status == "completed" and res.step == 60
    for (name, a), (_, b) in zip(full_model.named_parameters(), model.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    for key, value in full_opt.state_dict().items():
        np.testing.assert_array_equal(value, opt.state_dict()[key], err_msg=key)
    assert sched.state_dict() == full_sched.state_dict()
    assert strip_time(res.history) == strip_time(full.history)
    lines = [json.loads(s) for s in (tmp_path / "cut.jsonl").read_text().splitlines()]
    full_lines = [json.loads(s) for s in (tmp_path / "full.jsonl").read_text().splitlines()]
    assert strip_time(lines) == strip_time(full_lines)


def test_resume_refuses_a_different_configuration(tmp_path):
    data = easy_batch(64, np.random.default_rng(0))
    model = small_model()
    fit(
        model,
        Adam(model.parameters()),
        train=data,
        val=data,
        steps=4,
        batch_size=8,
        eval_every=2,
        checkpoint_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="cannot resume"):
        fit(
            model,
            Adam(model.parameters()),
            train=data,
            val=data,
            steps=8,
            batch_size=16,
            eval_every=2,
            checkpoint_dir=tmp_path,
            resume=True,
        )


# ------------------------------------------------------------------------------ failures


def _finite_checkpoint(path, model) -> dict:
    meta = checkpoint.load(path, model)
    for name, p in model.named_parameters():
        assert np.isfinite(p.data).all(), name
    return meta


def test_a_huge_learning_rate_stops_with_the_parameter_named(tmp_path):
    rng = np.random.default_rng(6)
    model = small_model()
    opt = SGD(model.parameters(), lr=1e-2)
    lines: list[str] = []

    def sampler(batch_size, gen):
        if opt.step_count == 30:
            opt.lr = 1e300  # the next update overflows float32
        return easy_sampler(batch_size, gen)

    with np.errstate(over="ignore", invalid="ignore"):
        res = fit(
            model,
            opt,
            batch_sampler=sampler,
            val=easy_batch(64, rng),
            steps=100,
            batch_size=16,
            eval_every=10,
            checkpoint_dir=tmp_path,
            log=lines.append,
        )
    assert res.status == "nonfinite" and not res.ok
    assert isinstance(res.error, NonFiniteError)
    assert res.error.kind == "parameter" and res.error.step == 31
    assert res.error.name in dict(model.named_parameters())
    assert "step 31" in res.message and "last.npz (step 30)" in res.message
    assert lines[-1].endswith(res.message)
    assert _finite_checkpoint(tmp_path / "last.npz", small_model())["step"] == 30
    for _, p in model.named_parameters():  # best weights put back
        assert np.isfinite(p.data).all()
    with pytest.raises(NonFiniteError):
        res.raise_for_status()


class SqrtProbe(Module):
    """Logits from a linear map of the last step, plus 0 * sqrt(probe): a finite loss whose
    gradient for `probe` is 0 * inf = nan once the probe is 0."""

    def __init__(self):
        super().__init__()
        self.weight = Parameter(np.random.default_rng(0).normal(0, 0.1, (D, C)).astype(np.float32))
        self.probe = Parameter(np.ones(1, dtype=np.float32))

    def forward(self, x):
        last = tg.Tensor(np.asarray(x, dtype=np.float32)[:, -1])
        return last @ self.weight + self.probe.sqrt() * 0.0


def test_a_nan_gradient_is_caught_before_the_update(tmp_path):
    rng = np.random.default_rng(9)
    model = SqrtProbe()
    opt = Adam(model.parameters(), lr=1e-2)

    def sampler(batch_size, gen):
        if opt.step_count == 12:
            model.probe.data[...] = 0.0
        return easy_sampler(batch_size, gen)

    with np.errstate(divide="ignore", invalid="ignore"):
        res = fit(
            model,
            opt,
            batch_sampler=sampler,
            val=easy_batch(64, rng),
            steps=50,
            batch_size=8,
            eval_every=5,
            checkpoint_dir=tmp_path,
            restore_best=False,
        )
    assert res.status == "nonfinite"
    assert (res.error.kind, res.error.name, res.error.step) == ("gradient", "probe", 13)
    assert "gradient of parameter 'probe'" in res.message
    assert np.isfinite(model.weight.data).all()  # the bad update was never applied
    assert _finite_checkpoint(tmp_path / "last.npz", SqrtProbe())["step"] == 10


def test_a_nan_loss_is_named(tmp_path):
    model = small_model()
    opt = Adam(model.parameters(), lr=1e-3)

    def sampler(batch_size, gen):
        if opt.step_count == 3:
            model.head.layers[-1].bias.data[0] = np.nan  # the next forward pass yields NaN
        return easy_sampler(batch_size, gen)

    res = fit(
        model,
        opt,
        batch_sampler=sampler,
        val=easy_batch(32, np.random.default_rng(0)),
        steps=10,
        batch_size=8,
        eval_every=2,
        checkpoint_dir=tmp_path,
    )
    assert res.status == "nonfinite" and res.error.kind == "loss" and res.error.step == 4
    assert "non-finite loss at step 4" in res.message


def test_a_crash_leaves_the_last_good_checkpoint_and_says_where(tmp_path):
    model = small_model()
    opt = Adam(model.parameters(), lr=1e-3)

    def sampler(batch_size, gen):
        if opt.step_count == 7:
            raise OSError("disk went away")
        return easy_sampler(batch_size, gen)

    with pytest.raises(TrainingError) as info:
        fit(
            model,
            opt,
            batch_sampler=sampler,
            val=easy_batch(32, np.random.default_rng(0)),
            steps=20,
            batch_size=8,
            eval_every=5,
            checkpoint_dir=tmp_path,
        )
    text = str(info.value)
    assert "step 8" in text and "OSError: disk went away" in text
    assert "last.npz (step 5)" in text
    assert isinstance(info.value.__cause__, OSError)
    assert _finite_checkpoint(tmp_path / "last.npz", small_model())["step"] == 5


def test_fit_result_reports_threshold_steps():
    hist = [{"step": s, "val_acc": a} for s, a in [(0, 0.3), (10, 0.6), (20, 0.95), (30, 0.9)]]
    res = FitResult("completed", "", 30, 20, 0.95, 0.1, 1.0, history=hist)
    assert res.steps_to(0.5) == 10 and res.steps_to(0.9) == 20 and res.steps_to(0.99) is None


def test_a_fresh_run_replaces_its_own_metric_lines_only(tmp_path):
    data = easy_batch(64, np.random.default_rng(0))
    path = tmp_path / "m.jsonl"
    for tags in ({"run": "a"}, {"run": "b"}, {"run": "a"}):
        model = small_model()
        fit(
            model,
            Adam(model.parameters()),
            train=data,
            val=data,
            steps=4,
            batch_size=8,
            eval_every=2,
            metrics_path=path,
            tags=tags,
        )
    runs = [json.loads(s)["run"] for s in path.read_text().splitlines()]
    assert runs == ["b"] * 3 + ["a"] * 3
