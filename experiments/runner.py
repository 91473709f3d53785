"""One training job of the comparison: load a task, build a size-matched model, fit, test.

A job is a JSON-ready dict (plan, model key, seed, paths) so that it can run in a worker
process; its result is a JSON-ready dict too, written to `<out>/jobs/<name>.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import tasks
from experiments.plan import MODEL_LABELS, MemorySize, TaskPlan
from experiments.training import evaluate, fit, predict
from models import (
    LSTM,
    RelationalMemory,
    RelationalRNNCell,
    SequenceClassifier,
    matching_lstm_hidden,
)
from tensorgrad import checkpoint
from tensorgrad.optim import Adam, WarmupLR

DATA_SEED = 20180601
FINISHED = ("completed", "target_reached", "early_stopped")


def finished(result: dict | None) -> bool:
    """Whether a job's result is a run that ended normally (not failed, cut short or skipped)."""
    return result is not None and result.get("status") in FINISHED


@dataclass
class TaskData:
    """Everything a job trains and tests on; exactly one of train and sampler is set."""

    meta: Any
    val: Any
    test: Any
    train: Any = None
    sampler: Any = None
    hard_test: Any = None
    hard_meta: Any = None


def _stream(*parts: int | str) -> np.random.Generator:
    """A generator for one named data stream, independent of every other stream."""
    ints = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng([DATA_SEED, *ints])


def babi_task_id(plan: TaskPlan) -> int | None:
    """The bAbI task number of a real-bAbI plan ("babi_qa2" -> 2), else None."""
    return int(plan.task[len("babi_qa") :]) if plan.task.startswith("babi_qa") else None


def load_task_data(
    plan: TaskPlan, seed: int, babi_dir: str | None = None, n_train: int | None = None
) -> TaskData:
    """Validation and test sets (the same for every seed and model) and the training source.

    Synthetic tasks train on fresh batches, or on a fixed set of `n_train` (default
    plan.n_train) examples drawn for this seed; real bAbI holds out plan.n_val training
    stories for validation.
    """
    task_id = babi_task_id(plan)
    if task_id is not None:
        if babi_dir is None:
            raise FileNotFoundError(f"{plan.key} needs the bAbI directory")
        data = tasks.babi.load_babi_task(babi_dir, task_id, **plan.options)
        order = _stream("babi-val", task_id).permutation(len(data.train))
        val = data.train.subset(order[: plan.n_val])
        train = data.train.subset(order[plan.n_val :])
        test = data.test.subset(np.arange(min(plan.n_test, len(data.test))))
        return TaskData(meta=data.meta, val=val, test=test, train=train)

    opts = plan.options
    meta = tasks.task_meta(plan.task, **opts)
    val = tasks.sample_split(plan.task, plan.n_val, _stream("val", plan.task, str(opts)), **opts)
    test = tasks.sample_split(plan.task, plan.n_test, _stream("test", plan.task, str(opts)), **opts)
    data = TaskData(meta=meta, val=val, test=test)
    if plan.fresh:
        data.sampler = tasks.make_sampler(plan.task, **opts)
    else:
        n = n_train or plan.n_train
        data.train = tasks.sample_split(plan.task, n, _stream("train", plan.task, seed, n), **opts)
    if plan.hard:
        hard = {**opts, **plan.hard}
        data.hard_meta = tasks.task_meta(plan.task, **hard)
        data.hard_test = tasks.sample_split(
            plan.task, plan.n_test, _stream("hard", plan.task, str(hard)), **hard
        )
        if data.hard_meta.input_size != meta.input_size:
            raise ValueError(
                f"{plan.key}: the harder variant {plan.hard} changes the input size "
                f"({meta.input_size} -> {data.hard_meta.input_size}); trained models cannot "
                "read it"
            )
    return data


# ------------------------------------------------------------------------------ models


def _memory_options(m: MemorySize, seed: int) -> dict:
    """Keyword arguments of RelationalMemory and RelationalRNNCell for memory `m`."""
    return dict(num_blocks=m.blocks, gate_style=m.gate, use_residual=m.residual, rng=seed)


def _rmc(plan: TaskPlan, input_size: int, num_classes: int, seed: int) -> SequenceClassifier:
    m = plan.memory
    core = RelationalMemory(input_size, m.slots, m.head_size, m.heads, **_memory_options(m, seed))
    return SequenceClassifier(core, num_classes, mlp_hidden=plan.mlp_hidden, rng=seed + 7919)


def _rrnn(plan: TaskPlan, input_size: int, num_classes: int, hidden: int, seed: int):
    m = plan.memory
    core = RelationalRNNCell(
        input_size, hidden, m.slots, m.head_size, m.heads, **_memory_options(m, seed)
    )
    return SequenceClassifier(core, num_classes, mlp_hidden=plan.mlp_hidden, rng=seed + 7919)


def _rrnn_hidden(plan: TaskPlan, input_size: int, num_classes: int, budget: int) -> int:
    """Hidden size of the relational RNN cell whose classifier count is closest to `budget`."""

    def count(h: int) -> int:
        return _rrnn(plan, input_size, num_classes, h, 0).num_parameters()

    lo, hi = 1, 2
    while count(hi) < budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
    return min((lo, hi), key=lambda h: abs(count(h) - budget))


def build_model(
    kind: str, plan: TaskPlan, input_size: int, num_classes: int, seed: int
) -> tuple[SequenceClassifier, dict]:
    """A classifier of kind "rmc", "lstm" or "rrnn" sized to the RMC's parameter count.

    Returns the model and a description: parameters, the RMC's count it matches, and sizes.
    """
    rmc = _rmc(plan, input_size, num_classes, seed)
    budget = rmc.num_parameters()
    m = plan.memory
    if kind == "rmc":
        model = rmc
        size = m.describe()
    elif kind == "lstm":
        hidden = matching_lstm_hidden(budget, input_size, num_classes, plan.mlp_hidden)
        core = LSTM(input_size, hidden, rng=seed)
        model = SequenceClassifier(core, num_classes, mlp_hidden=plan.mlp_hidden, rng=seed + 7919)
        size = f"hidden {hidden}"
    elif kind == "rrnn":
        hidden = _rrnn_hidden(plan, input_size, num_classes, budget)
        model = _rrnn(plan, input_size, num_classes, hidden, seed)
        size = f"hidden {hidden}, memory {m.slots} x {m.heads} x {m.head_size}"
    else:
        raise ValueError(f"unknown model kind {kind!r}; valid: {sorted(MODEL_LABELS)}")
    head = " x ".join(map(str, plan.mlp_hidden))
    params = model.num_parameters()
    if abs(params - budget) > 0.1 * budget:
        raise ValueError(f"{kind}: {params} parameters is not within 10% of the RMC's {budget}")
    return model, {"params": params, "rmc_params": budget, "size": size, "head": f"MLP {head}"}


# ------------------------------------------------------------------------------ jobs


def job_name(job: dict) -> str:
    """File-safe name of a job: task__model__s<seed>[__n<train size>]."""
    name = f"{job['plan']['key']}__{job['model']}__s{job['seed']}"
    return name + (f"__n{job['n_train']}" if job.get("n_train") else "")


def make_job(
    plan: TaskPlan,
    model: str,
    seed: int,
    out: str,
    babi_dir: str | None,
    n_train: int | None = None,
    resume: bool = False,
) -> dict:
    """A JSON-ready job description."""
    return {
        "plan": plan.to_dict(),
        "model": model,
        "seed": seed,
        "out": out,
        "babi_dir": babi_dir,
        "n_train": n_train,
        "resume": resume,
        "out_created": False,
    }


def job_cost(job: dict, seq_len: int) -> float:
    """Rough relative cost of a job, to start the longest first."""
    factor = {"lstm": 1.0, "rmc": 6.0, "rrnn": 8.0}.get(job["model"], 6.0)
    plan = job["plan"]
    return plan["steps"] * plan["batch_size"] * seq_len * factor


def _print(line: str) -> None:
    print(line, flush=True)


@contextmanager
def _interrupts_deferred(active: bool = True):
    """Hold back Ctrl-C (SIGINT) inside the block and raise it on leaving; a no-op off the main
    thread (a Dask worker's task) or when not `active`."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _same_plan_checkpoints(ckpt_dir: Path, job: dict, log) -> bool:
    """Whether the checkpoints in `ckpt_dir` were written under this job's plan (so that a
    resumed run continues them); checkpoints of another budget are removed instead."""
    stamp = ckpt_dir / "plan.json"
    if not stamp.exists():
        return True  # nothing saved yet, or saved before plans were stamped
    if json.loads(stamp.read_text(encoding="utf-8")) == job["plan"]:
        return True
    log(f"{job_name(job)}: its checkpoints were made under another plan; training afresh")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return False


def _stamp_plan(ckpt_dir: Path, job: dict) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / "plan.json").write_text(json.dumps(job["plan"]), encoding="utf-8")


def run_job(job: dict, log=_print) -> dict:
    """Train one model on one task with one seed; returns (and saves) its result dict."""
    plan = TaskPlan.from_dict(job["plan"])
    kind, seed, out = job["model"], job["seed"], Path(job["out"])
    name = job_name(job)
    if job.get("out_created") and not out.is_dir():  # made by the parent before submitting
        raise FileNotFoundError(
            f"the output folder {out} does not exist where this job runs "
            f"({socket.gethostname()}); put --out on a filesystem shared with every worker"
        )
    data = load_task_data(plan, seed, job.get("babi_dir"), job.get("n_train"))
    model, info = build_model(kind, plan, data.meta.input_size, data.meta.num_classes, seed)
    opt = Adam(model.parameters(), lr=plan.lr)
    sched = WarmupLR(opt, warmup_steps=plan.warmup)
    ckpt_dir = out / "checkpoints" / name
    resume = _same_plan_checkpoints(ckpt_dir, job, log) if job.get("resume") else False
    tags = {"task": plan.key, "model": kind, "seed": seed}
    if job.get("n_train"):
        tags["n_train"] = job["n_train"]

    _stamp_plan(ckpt_dir, job)
    res = fit(
        model,
        opt,
        steps=plan.steps,
        batch_size=plan.batch_size,
        val=data.val,
        train=data.train,
        batch_sampler=data.sampler,
        schedule=sched,
        clip_norm=plan.clip_norm,
        eval_every=plan.eval_every,
        target_accuracy=plan.target_accuracy,
        seed=seed,
        checkpoint_dir=ckpt_dir,
        resume=resume,
        metrics_path=out / "metrics" / f"{name}.jsonl",
        tags=tags,
        log=log,
        progress=False,
    )
    train_time = res.elapsed
    # a finished run is scored and saved whole: a Ctrl-C here takes effect just after
    with _interrupts_deferred(res.ok):
        logits = predict(model, data.test.inputs)
        test = evaluate(model, data.test)
        result = {
            "name": name,
            "task": plan.key,
            "model": kind,
            "seed": seed,
            "n_train": job.get("n_train"),
            "plan": job["plan"],
            "status": res.status,
            "message": (
                f"interrupted at step {res.step}; rerun with --resume to continue from there"
                if res.status == "interrupted"
                else res.message
            ),
            **info,
            "steps_done": res.step,
            "best_step": res.best_step,
            "best_val_acc": res.best_val_accuracy,
            "steps_to_threshold": res.steps_to(plan.threshold),
            "test_acc": test.accuracy,
            "test_loss": test.loss,
            "wall_time": train_time,
            "ms_per_step": 1000.0 * train_time / max(1, res.step),
            "history": res.history,
            "best_checkpoint": res.best_checkpoint,
            "predictions": logits.argmax(axis=-1).tolist(),
        }
        if data.hard_test is not None:
            hard = evaluate(model, data.hard_test)
            result["hard_acc"] = hard.accuracy
            result["hard_predictions"] = predict(model, data.hard_test.inputs).argmax(-1).tolist()
        if res.ok:
            path = out / "jobs" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result), encoding="utf-8")
            os.replace(tmp, path)
    log(
        f"{plan.key} {kind} {seed} | {res.status}: {result['message']} | test acc "
        f"{test.accuracy:.3f} | {train_time:.0f}s"
    )
    return result


def run_job_safely(job: dict) -> dict:
    """run_job in a worker: an exception becomes a failed result instead of killing the pool."""
    try:
        return run_job(job)
    except KeyboardInterrupt:
        return {
            "name": job_name(job),
            "status": "interrupted",
            "message": "interrupted; rerun with --resume to continue from checkpoints",
        }
    except Exception as exc:  # noqa: BLE001  (reported to the user in the summary)
        print(f"{job_name(job)} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return {
            "name": job_name(job),
            "status": "failed",
            "message": f"{type(exc).__name__}: {exc}",
        }


def load_model(result: dict, plan: TaskPlan, meta) -> SequenceClassifier:
    """Rebuild a job's model and load its best checkpoint."""
    model, _ = build_model(result["model"], plan, meta.input_size, meta.num_classes, result["seed"])
    checkpoint.load(result["best_checkpoint"], model)
    return model


__all__ = [
    "FINISHED",
    "TaskData",
    "babi_task_id",
    "build_model",
    "finished",
    "job_cost",
    "job_name",
    "load_model",
    "load_task_data",
    "make_job",
    "run_job",
    "run_job_safely",
]
