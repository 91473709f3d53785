"""Training and evaluation of sequence classifiers: one step, evaluation, and a `fit` loop.

`fit` runs Adam (or any optimiser) under a learning-rate schedule with gradient clipping,
evaluates every `eval_every` steps, stops early on validation accuracy (patience or a target),
keeps the best weights, and writes checkpoints from which a run resumes bit for bit:

    result = fit(model, opt, batch_sampler=sample, val=val, steps=8000, batch_size=128,
                 checkpoint_dir="runs/x/ckpt", metrics_path="runs/x/metrics.jsonl")
    result.raise_for_status()

Batches come either from a fixed dataset (`train=`, reshuffled every epoch) or from a sampler
called as `batch_sampler(batch_size, rng) -> (inputs (B, T, D), targets (B,))` for fresh data at
every step. A NaN or infinite loss, gradient or parameter stops the run with status "nonfinite"
and a message naming the step and the tensor; the last good checkpoint on disk is never replaced
by a bad one. Nothing here prints: lines go to the `log` callback, numbers to the JSONL file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from tensorgrad import Tensor, checkpoint, cross_entropy, keep_freed_memory, no_grad
from tensorgrad.nn import Module
from tensorgrad.optim import LRSchedule, Optimizer, clip_grad_norm

Batch = tuple[np.ndarray, np.ndarray]
BatchSampler = Callable[[int, np.random.Generator], Batch]
Logger = Callable[[str], None]

LAST = "last.npz"
BEST = "best.npz"


class HasArrays(Protocol):
    """Anything with `inputs` (N, T, D) and integer `targets` (N,) or (N, T), like tasks.Split."""

    inputs: np.ndarray
    targets: np.ndarray


Data = HasArrays | tuple[np.ndarray, np.ndarray]


class NonFiniteError(FloatingPointError):
    """A loss, gradient or parameter became NaN or infinite; names which and at what step."""

    def __init__(self, kind: str, name: str, step: int | None = None):
        self.kind = kind
        self.name = name
        self.step = step
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: what became non-finite, and at which step when known."""
        where = f" at step {self.step}" if self.step is not None else ""
        what = "loss" if self.kind == "loss" else f"{self.kind} of parameter '{self.name}'"
        return f"non-finite {what}{where}"


class TrainingError(RuntimeError):
    """A run failed with an unexpected error; the message names the step and the last checkpoint."""


class EvalResult(NamedTuple):
    """Mean cross-entropy and accuracy over a dataset, and how many targets were scored."""

    loss: float
    accuracy: float
    count: int


def _nonfinite_inputs(inputs: np.ndarray, split: str, step: int | None = None) -> str | None:
    """Message naming `split` and the first example of inputs (N, ...) with a NaN/inf, or None."""
    if inputs.dtype.kind not in "fc" or inputs.ndim == 0 or inputs.size == 0:
        return None
    finite = np.isfinite(inputs).all(axis=tuple(range(1, inputs.ndim)))
    if finite.all():
        return None
    at = f" at step {step}" if step is not None else ""
    return (
        f"{split} inputs hold a NaN or infinite value in example {int(np.argmin(finite))}{at} "
        f"(inputs {inputs.shape})"
    )


class _BadInputError(ValueError):
    """A batch holds NaN/inf inputs; kept apart from other errors so `fit` does not wrap it."""


def _arrays(data: Data, split: str = "data") -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, tuple):
        inputs, targets = data
    else:
        inputs, targets = data.inputs, data.targets
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if inputs.ndim != 3 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"data must be inputs (N, T, D) with targets (N,) or (N, T), got inputs "
            f"{inputs.shape} and targets {targets.shape}"
        )
    bad = _nonfinite_inputs(inputs, split)
    if bad is not None:
        raise ValueError(bad)
    return inputs, targets


def _correct(logits: np.ndarray, targets: np.ndarray) -> int:
    return int((logits.argmax(axis=-1) == targets).sum())


def _first_nonfinite(named: list[tuple[str, Any]], attr: str) -> str | None:
    for name, p in named:
        value = getattr(p, attr)
        if value is not None and not np.isfinite(value).all():
            return name
    return None


def _step(
    model: Module,
    batch: Batch,
    optimizer: Optimizer,
    clip_norm: float | None,
    named: list[tuple[str, Any]],
    step: int | None = None,
) -> tuple[float, float, int, int]:
    """One update; returns (loss, grad norm before clipping, correct, scored targets)."""
    inputs, targets = batch
    bad = _nonfinite_inputs(np.asarray(inputs), "batch", step)
    if bad is not None:
        raise _BadInputError(bad)
    model.train()
    optimizer.zero_grad()
    logits = model(inputs)
    loss = cross_entropy(logits, targets)
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteError("loss", "loss")
    loss.backward()

    params = [p for _, p in named]
    if clip_norm is not None:
        norm = clip_grad_norm(params, clip_norm)
    else:
        norm = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params if p.grad is not None))
    if not math.isfinite(norm):
        raise NonFiniteError("gradient", _first_nonfinite(named, "grad") or "(global norm)")
    optimizer.step()
    bad = _first_nonfinite(named, "data")
    if bad is not None:
        raise NonFiniteError("parameter", bad)
    return value, norm, _correct(logits.data, targets), targets.size


def train_step(
    model: Module, batch: Batch, optimizer: Optimizer, clip_norm: float | None = 1.0
) -> tuple[float, float]:
    """One optimiser update on batch (inputs (B, T, D), targets (B,)) -> (loss, grad norm).

    The gradient norm is the global L2 norm before clipping to `clip_norm` (None: no clipping).
    Raises ValueError when the inputs hold a NaN or inf (naming the first bad example), and
    NonFiniteError naming the loss, or the parameter whose gradient or value went
    non-finite; a non-finite gradient is detected before the update, so the weights stay good.
    """
    try:
        loss, norm, _, _ = _step(model, batch, optimizer, clip_norm, model.named_parameters())
    except _BadInputError as exc:
        raise ValueError(str(exc)) from None
    return loss, norm


def predict(model: Module, inputs: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits for inputs (N, T, D) -> (N, C) (or (N, T, C)), in eval mode without a graph."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            chunks = [
                model(inputs[i : i + batch_size]).data for i in range(0, len(inputs), batch_size)
            ]
    finally:
        model.train(was_training)
    return np.concatenate(chunks, axis=0)


def evaluate(model: Module, data: Data, batch_size: int = 512) -> EvalResult:
    """Mean cross-entropy and accuracy of `model` over `data` (inputs (N, T, D), targets (N,)).

    Runs under no_grad in eval mode (the previous mode is restored afterwards). Inputs holding
    a NaN or inf raise ValueError naming the first bad example.
    """
    inputs, targets = _arrays(data, "data")
    if len(inputs) == 0:
        raise ValueError("evaluate on an empty dataset")
    logits = predict(model, inputs, batch_size)
    loss = cross_entropy(Tensor(logits), targets).item()
    return EvalResult(loss, _correct(logits, targets) / targets.size, int(targets.size))


# ------------------------------------------------------------------------------ batches


class _EpochBatches:
    """Minibatches of a fixed dataset; epoch e is shuffled by default_rng([seed, e])."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, seed: int):
        self.inputs, self.targets, self.seed = inputs, targets, seed
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.inputs))

    def next(self, batch_size: int) -> Batch:
        # NOTE: batches never straddle epochs; a short tail is dropped so every batch has B rows.
        if self.pos + batch_size > len(self.inputs):
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation()
        rows = self._order[self.pos : self.pos + batch_size]
        self.pos += batch_size
        return self.inputs[rows], self.targets[rows]

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: Mapping) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()


class _FreshBatches:
    """A fresh batch at every step from `sampler(batch_size, rng)`, rng = default_rng(seed)."""

    def __init__(self, sampler: BatchSampler, seed: int):
        self.sampler = sampler
        self.rng = np.random.default_rng(seed)

    def next(self, batch_size: int) -> Batch:
        return self.sampler(batch_size, self.rng)

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load(self, state: Mapping) -> None:
        self.rng.bit_generator.state = state["rng"]


# ------------------------------------------------------------------------------ fit


@dataclass
class FitResult:
    """How a run ended and what it measured.

    status: "completed" (all steps), "target_reached", "early_stopped" (patience ran out),
    "nonfinite" (a NaN/Inf stopped it) or "interrupted" (KeyboardInterrupt).
    history: one dict per evaluation, the same records as the JSONL lines.
    """

    status: str
    message: str
    step: int
    best_step: int
    best_val_accuracy: float
    best_val_loss: float
    elapsed: float
    history: list[dict] = field(default_factory=list)
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the run ended normally (all steps, target reached or early stopping)."""
        return self.status in ("completed", "target_reached", "early_stopped")

    def raise_for_status(self) -> FitResult:
        """Raise the run's error (NonFiniteError, KeyboardInterrupt) unless it ended normally."""
        if not self.ok:
            raise self.error if self.error is not None else TrainingError(self.message)
        return self

    def steps_to(self, accuracy: float) -> int | None:
        """First evaluated step whose validation accuracy reached `accuracy`, or None."""
        for rec in self.history:
            if rec["val_acc"] >= accuracy:
                return rec["step"]
        return None


def _append_jsonl(path: Path, record: Mapping) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")


def _drop_records_after(path: Path, step: int, tags: Mapping) -> None:
    """Remove this run's JSONL records past `step` (left by a run that went on after a save)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        same_run = all(rec.get(k) == v for k, v in tags.items())
        if not (same_run and rec.get("step", -1) > step):
            kept.append(line)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def _format_line(prefix: str, rec: Mapping, steps: int) -> str:
    return (
        f"{prefix}step {rec['step']:>{len(str(steps))}}/{steps} | loss {rec['loss']:.4f} | "
        f"train {rec['train_acc']:.3f} | val {rec['val_acc']:.3f} ({rec['val_loss']:.3f}) | "
        f"lr {rec['lr']:.1e} | gnorm {rec['grad_norm']:.2f} | {rec['elapsed']:.0f}s"
    )


def fit(
    model: Module,
    optimizer: Optimizer,
    *,
    steps: int,
    batch_size: int,
    val: Data,
    train: Data | None = None,
    batch_sampler: BatchSampler | None = None,
    schedule: LRSchedule | None = None,
    clip_norm: float | None = 1.0,
    eval_every: int = 100,
    eval_batch_size: int = 512,
    patience: int | None = None,
    min_delta: float = 0.0,
    target_accuracy: float | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool | str | os.PathLike = False,
    restore_best: bool = True,
    metrics_path: str | os.PathLike | None = None,
    tags: Mapping[str, Any] | None = None,
    log: Logger | None = None,
    progress: bool | None = None,
    desc: str = "train",
) -> FitResult:
    """Train `model` for up to `steps` updates of `batch_size` examples; returns a FitResult.

    Exactly one of `train` (a fixed dataset, inputs (N, T, D) and targets (N,)) or
    `batch_sampler` (fresh data each step) supplies batches; `seed` fixes their order. The
    validation set `val` is scored at step 0 and every `eval_every` steps (and at the last
    step). Early stopping: after `patience` evaluations without a gain above `min_delta` in
    validation accuracy, or as soon as it reaches `target_accuracy`.

    With `checkpoint_dir`, every evaluation writes `last.npz` (model, optimiser, schedule,
    step, batch-order state, history) and each new best writes `best.npz`. `resume=True`
    continues from `checkpoint_dir/last.npz` when it exists (or from the path given), and
    reproduces the uninterrupted run bit for bit. With `restore_best` the best weights are
    loaded back into `model` at the end. Each evaluation appends one JSON line (step, train
    loss, train and validation accuracy, lr, mean grad norm, elapsed seconds, plus `tags`) to
    `metrics_path` and sends one compact line to `log`. `progress` shows a tqdm bar (default:
    only when stderr is a terminal).
    """
    keep_freed_memory()  # steps reuse the same arrays; see tensorgrad.keep_freed_memory
    if (train is None) == (batch_sampler is None):
        raise ValueError("fit needs exactly one of train= (a dataset) or batch_sampler=")
    _check_fit_options(steps, batch_size, eval_every, patience, target_accuracy, clip_norm)
    if schedule is not None and schedule.optimizer is not optimizer:
        raise ValueError("the schedule must wrap the optimiser passed to fit")
    val_arrays = _arrays(val, "val")
    if train is not None:
        inputs, targets = _arrays(train, "train")
        if len(inputs) < batch_size:
            raise ValueError(f"train set of {len(inputs)} examples < batch_size {batch_size}")
        batches: _EpochBatches | _FreshBatches = _EpochBatches(inputs, targets, seed)
    else:
        batches = _FreshBatches(batch_sampler, seed)

    tags = dict(tags or {})
    prefix = " ".join(f"{v}" for v in tags.values()) + (" | " if tags else "")
    emit = log or (lambda line: None)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path = None if ckpt_dir is None else ckpt_dir / LAST
    best_path = None if ckpt_dir is None else ckpt_dir / BEST
    metrics = Path(metrics_path) if metrics_path is not None else None
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
    named = model.named_parameters()
    config = {"batch_size": batch_size, "seed": seed, "fresh": batch_sampler is not None}

    # ---- state that a checkpoint carries
    step = 0
    history: list[dict] = []
    best_acc, best_loss, best_step, stale = -math.inf, math.inf, 0, 0
    elapsed_before = 0.0
    resume_from = None
    if resume:
        resume_from = Path(resume) if not isinstance(resume, bool) else last_path
        if resume_from is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint path)")
        if not resume_from.exists():
            resume_from = None
    if resume_from is not None:
        meta = checkpoint.load(resume_from, model, optimizer)
        saved = meta.get("config", {})
        if saved != config:
            raise ValueError(
                f"cannot resume {resume_from}: it was written with {saved}, this run has {config}"
            )
        step = int(meta["step"])
        if schedule is not None:
            schedule.load_state_dict(meta["schedule"])
        batches.load(meta["batches"])
        history = list(meta["history"])
        best_acc, best_loss = meta["best_val_accuracy"], meta["best_val_loss"]
        best_step, stale = int(meta["best_step"]), int(meta["stale"])
        elapsed_before = float(meta["elapsed"])
        if metrics is not None:
            _drop_records_after(metrics, step, tags)
        emit(f"{prefix}resumed from {resume_from} at step {step}")
    elif metrics is not None and tags:
        _drop_records_after(metrics, -1, tags)  # lines of an earlier attempt of this run
    best_state = None
    if resume_from is not None and best_path is not None and best_path.exists():
        best_state = _weights_of(best_path, model)
    last_good: tuple[str | None, int] = (
        (str(resume_from), step) if resume_from is not None else (None, 0)
    )

    start = time.perf_counter()
    loss_sum = norm_sum = 0.0
    correct = scored = done = 0

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start

    def save(path: Path, **extra) -> None:
        checkpoint.save(
            path,
            model,
            optimizer,
            step=step,
            config=config,
            schedule=None if schedule is None else schedule.state_dict(),
            batches=batches.state(),
            history=history,
            best_val_accuracy=best_acc,
            best_val_loss=best_loss,
            best_step=best_step,
            stale=stale,
            elapsed=elapsed(),
            **extra,
        )

    def evaluate_now() -> dict:
        """Score the validation set, record the metrics, save; returns the record."""
        nonlocal best_acc, best_loss, best_step, stale, best_state, last_good
        nonlocal loss_sum, norm_sum, correct, scored, done
        res = evaluate(model, val_arrays, eval_batch_size)
        rec = {
            **tags,
            "step": step,
            "loss": loss_sum / done if done else res.loss,
            "train_acc": correct / scored if scored else res.accuracy,
            "val_loss": res.loss,
            "val_acc": res.accuracy,
            "lr": float(optimizer.lr),
            "grad_norm": norm_sum / done if done else 0.0,
            "elapsed": round(elapsed(), 3),
        }
        loss_sum = norm_sum = 0.0
        correct = scored = done = 0
        history.append(rec)
        if res.accuracy > best_acc + min_delta or not history[:-1]:
            best_acc, best_loss, best_step, stale = res.accuracy, res.loss, step, 0
            best_state = model.state_dict()
            if best_path is not None:
                save(best_path)
        else:
            stale += 1
        if last_path is not None:
            save(last_path)
            last_good = (str(last_path), step)
        if metrics is not None:
            _append_jsonl(metrics, rec)
        emit(_format_line(prefix, rec, steps))
        return rec

    def where_to_resume() -> str:
        path, at = last_good
        if path is None:
            return "no checkpoint was written (pass checkpoint_dir to keep one)"
        return f"last good checkpoint: {path} (step {at})"

    status, message, error = "completed", "", None
    bar = _progress_bar(progress, steps, step, desc)
    try:
        if step == 0 and not history:
            evaluate_now()
        while step < steps:
            batch = batches.next(batch_size)
            try:
                loss, norm, c, n = _step(model, batch, optimizer, clip_norm, named, step + 1)
            except NonFiniteError as exc:
                exc.step = step + 1
                status, error = "nonfinite", exc
                message = f"{exc.describe()}; training stopped; {where_to_resume()}"
                emit(prefix + message)
                break
            if schedule is not None:
                schedule.step()
            step += 1
            done += 1
            loss_sum += loss
            norm_sum += norm
            correct += c
            scored += n
            bar.update(1)
            if step % eval_every == 0 or step == steps:
                rec = evaluate_now()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", val=f"{rec['val_acc']:.3f}")
                if target_accuracy is not None and rec["val_acc"] >= target_accuracy:
                    status = "target_reached"
                    message = f"validation accuracy {rec['val_acc']:.4f} >= {target_accuracy}"
                    break
                if patience is not None and stale >= patience:
                    status = "early_stopped"
                    message = (
                        f"no gain in validation accuracy for {stale} evaluations "
                        f"(best {best_acc:.4f} at step {best_step})"
                    )
                    break
    except KeyboardInterrupt as exc:
        status, error = "interrupted", exc
        message = f"interrupted at step {step}; {where_to_resume()}; resume=True continues it"
        emit(prefix + message)
    except _BadInputError as exc:
        bar.close()
        raise ValueError(f"{prefix}{exc}; {where_to_resume()}") from None
    except Exception as exc:
        bar.close()
        raise TrainingError(
            f"{prefix}training failed at step {step + 1} ({type(exc).__name__}: {exc}); "
            f"{where_to_resume()}"
        ) from exc
    bar.close()
    if status == "completed":
        message = f"ran all {steps} steps"

    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        status=status,
        message=message,
        step=step,
        best_step=best_step,
        best_val_accuracy=best_acc,
        best_val_loss=best_loss,
        elapsed=elapsed(),
        history=history,
        best_checkpoint=str(best_path) if best_path is not None and best_path.exists() else None,
        last_checkpoint=last_good[0],
        error=error,
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1


def _check_fit_options(
    steps: Any,
    batch_size: Any,
    eval_every: Any,
    patience: Any,
    target_accuracy: Any,
    clip_norm: Any,
) -> None:
    """Raise ValueError naming the first `fit` option outside its allowed range."""
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if not _is_count(value):
            raise ValueError(f"fit: {name} must be an integer >= 1, got {value!r}")
    if patience is not None and not _is_count(patience):
        raise ValueError(f"fit: patience must be an integer >= 1 or None, got {patience!r}")
    if target_accuracy is not None and not (
        isinstance(target_accuracy, int | float | np.number)
        and not isinstance(target_accuracy, bool)
        and 0 < target_accuracy <= 1
    ):
        raise ValueError(f"fit: target_accuracy must be in (0, 1] or None, got {target_accuracy!r}")
    if clip_norm is not None and not (
        isinstance(clip_norm, int | float | np.number)
        and not isinstance(clip_norm, bool)
        and math.isfinite(clip_norm)
        and clip_norm > 0
    ):
        raise ValueError(f"fit: clip_norm must be a finite number > 0 or None, got {clip_norm!r}")


def _weights_of(path: Path, model: Module) -> dict[str, np.ndarray]:
    """The model weights stored in checkpoint `path`, without touching `model`."""
    current = model.state_dict()
    try:
        checkpoint.load(path, model)
        return model.state_dict()
    finally:
        model.load_state_dict(current)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: bool | None, total: int, initial: int, desc: str):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


__all__ = [
    "Batch",
    "BatchSampler",
    "EvalResult",
    "FitResult",
    "NonFiniteError",
    "TrainingError",
    "evaluate",
    "fit",
    "predict",
    "train_step",
]
