"""The comparison study behind `python -m experiments.compare`: run every job, analyse, report.

Jobs (task x model x seed) run in worker processes, longest first; each writes its own
checkpoints, metrics file and result. The parent then gathers the results, looks inside the
seed-0 models (attention, memory, gradients, failure cases), draws the figures and writes
results.json, metrics.jsonl and report.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import tasks
from experiments import analysis, figures
from experiments.ablate import load_summaries
from experiments.plan import (
    MODEL_LABELS,
    SampleEfficiencyPlan,
    TaskPlan,
    full_plan,
    full_sample_efficiency,
    quick_plan,
    quick_sample_efficiency,
    tiny_plan,
    tiny_sample_efficiency,
)
from experiments.report import write_report
from experiments.runner import (
    babi_task_id,
    finished,
    job_cost,
    job_name,
    load_model,
    load_task_data,
    make_job,
    run_job_safely,
)
from experiments.sweep import (
    ExecutorError,
    default_workers,
    open_executor,
    prepare_output,
    run_sweep,
)

MODEL_SHORT = {"lstm": "LSTM", "rmc": "RMC", "rrnn": "RRNN cell"}
GENERATED = ("jobs", "metrics", "checkpoints", "figures")


def say(line: str) -> None:
    """One log line to stdout."""
    print(line, flush=True)


def _plans(args) -> tuple[list[TaskPlan], SampleEfficiencyPlan]:
    if args.mode == "full":
        plans, se = full_plan(), full_sample_efficiency(args.seed_list)
    elif args.mode == "tiny":
        plans, se = tiny_plan(), tiny_sample_efficiency(args.seed_list)
    else:
        plans, se = quick_plan(), quick_sample_efficiency(args.seed_list)
    if args.tasks:
        wanted = [k.strip() for k in args.tasks.split(",") if k.strip()]
        known = {p.key for p in plans}
        unknown = [k for k in wanted if k not in known]
        if unknown:
            raise SystemExit(f"unknown task key(s) {unknown}; this study has {sorted(known)}")
        plans = [p for p in plans if p.key in wanted]
        if "sample_efficiency" not in wanted and se.task.key not in wanted:
            se = replace(se, sizes=())

    def scaled(p: TaskPlan) -> TaskPlan:
        if args.step_count is not None:
            steps = args.step_count
        elif args.step_factor is not None:
            steps = max(1, round(p.steps * args.step_factor))
        else:
            return p
        return replace(
            p,
            steps=steps,
            eval_every=min(p.eval_every, steps),
            warmup=min(p.warmup, max(1, steps // 10)),
        )

    return [scaled(p) for p in plans], replace(se, task=scaled(se.task))


def _seq_len(plan: TaskPlan) -> int:
    if babi_task_id(plan) is not None:
        return plan.options.get("max_sentences", 20) + 1
    return tasks.task_meta(plan.task, **plan.options).seq_len


def _babi_dir(args, plans: list[TaskPlan]) -> tuple[str | None, str | None]:
    """The bAbI directory to use, or None and a message saying why the tasks are skipped."""
    needed = [p for p in plans if babi_task_id(p) is not None]
    if not needed:
        return None, None
    from experiments.compare import DEFAULT_BABI

    path = Path(args.babi_dir) if args.babi_dir else DEFAULT_BABI
    missing = [
        p.key
        for p in needed
        if not list(path.glob(f"qa{babi_task_id(p)}_*_train.txt"))
        or not list(path.glob(f"qa{babi_task_id(p)}_*_test.txt"))
    ]
    if missing:
        return None, (
            f"real bAbI files not found in {path} (needed for {', '.join(missing)}); those "
            "tasks are skipped. Pass --babi-dir with the qa1..qa3 *_train.txt/*_test.txt files."
        )
    return str(path), None


def _run_jobs(jobs: list[dict], executor) -> tuple[dict[str, dict], bool]:
    """Run jobs in order on `executor`; returns ({name: result}, interrupted)."""
    from tqdm.auto import tqdm

    results: dict[str, dict] = {}
    bar = tqdm(total=len(jobs), desc="runs", disable=not sys.stderr.isatty(), leave=False)

    def done(i: int, res: dict) -> None:
        results[res["name"]] = res
        bar.update(1)

    def failed(i: int, exc: BaseException) -> dict:
        return {"name": job_name(jobs[i]), "status": "failed", "message": repr(exc)}

    _, interrupted = run_sweep(
        run_job_safely, jobs, executor, done, failed, stop_when=interrupted_run, name_of=job_name
    )
    bar.close()
    return results, interrupted


def interrupted_run(result: dict) -> bool:
    """Whether a job's result says that Ctrl-C cut it short."""
    return result.get("status") == "interrupted"


def load_finished(out: Path, jobs: list[dict]) -> dict[str, dict]:
    """The saved results in `out`/jobs of those `jobs` that finished under the same plan."""
    done = {}
    for job in jobs:
        path = out / "jobs" / f"{job_name(job)}.json"
        if path.exists():
            result = json.loads(path.read_text(encoding="utf-8"))
            if result.get("plan") == job["plan"] and finished(result):  # a new budget retrains
                done[job_name(job)] = result
    return done


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def _public(run: dict) -> dict:
    """A run's result without the bulky per-example predictions."""
    return {k: v for k, v in run.items() if k not in ("predictions", "hard_predictions")}


def _assemble_task(plan: TaskPlan, runs: dict[str, list[dict]], data) -> dict[str, Any]:
    meta = data.meta
    models = {}
    for kind in plan.models:
        ok = sorted(
            (r for r in runs.get(kind, []) if finished(r)),
            key=lambda r: r["seed"],
        )
        if not ok:
            continue
        hits = [r["steps_to_threshold"] for r in ok]
        models[kind] = {
            "label": MODEL_LABELS[kind],
            "short": MODEL_SHORT[kind],
            "params": ok[0]["params"],
            "rmc_params": ok[0]["rmc_params"],
            "size": ok[0]["size"],
            "head": ok[0]["head"],
            "test_acc": _summary([r["test_acc"] for r in ok]),
            "best_val_acc": _summary([r["best_val_acc"] for r in ok]),
            "final_train_acc": _summary([r["history"][-1]["train_acc"] for r in ok]),
            "steps_to_threshold": hits,
            "reached": sum(h is not None for h in hits),
            "wall_time": _summary([r["wall_time"] for r in ok]),
            "ms_per_step": _summary([r["ms_per_step"] for r in ok]),
            "runs": [_public(r) for r in ok],
        }
    return {
        "key": plan.key,
        "label": plan.label,
        "short": plan.short,
        "task": plan.task,
        "options": plan.options,
        "description": meta.description,
        "input_size": meta.input_size,
        "num_classes": meta.num_classes,
        "seq_len": meta.seq_len,
        "chance": float(meta.chance_accuracy),
        "guess_level": meta.extra.get("guess_level"),
        "threshold": plan.threshold,
        "target_accuracy": plan.target_accuracy,
        "steps": plan.steps,
        "batch_size": plan.batch_size,
        "lr": plan.lr,
        "warmup": plan.warmup,
        "clip_norm": plan.clip_norm,
        "fresh": plan.fresh,
        "n_train": None if data.train is None else len(data.train),
        "example": meta.example,
        "models": models,
    }


def _first_runs(task: dict, by_name: dict[str, dict]) -> dict[str, dict]:
    """The lowest-seed full result (with predictions) of each model of a task."""
    out = {}
    for kind, model in task["models"].items():
        name = model["runs"][0]["name"]
        out[kind] = by_name[name]
    return out


def _analyse_task(task: dict, plan: TaskPlan, data, first: dict[str, dict], figdir: Path) -> None:
    """Per-category accuracy, failure cases and the harder variant, added to `task`."""
    targets = np.asarray(data.test.targets)
    preds = {k: np.asarray(r["predictions"]) for k, r in first.items()}
    found = analysis.breakdown(plan.task, data.meta, data.test)
    if found is not None:
        name, values = found
        task["breakdown"] = {
            "name": name,
            "models": {k: analysis.accuracy_by(values, p == targets) for k, p in preds.items()},
        }
        task["figures"]["breakdown"] = figures.plot_breakdown(
            task, figdir / f"breakdown_{plan.key}"
        )
    labelled = {MODEL_SHORT[k]: p for k, p in preds.items()}
    task["failures"] = analysis.failure_cases(data.meta, data.test, labelled, seed=0)
    if data.hard_test is not None:
        hard = {"label": plan.hard_label, "options": plan.hard, "models": {}}
        for kind, model in task["models"].items():
            accs = [r["hard_acc"] for r in model["runs"] if r.get("hard_acc") is not None]
            hard["models"][kind] = {"accs": accs, "summary": _summary(accs)}
        hard_preds = {MODEL_SHORT[k]: np.asarray(r["hard_predictions"]) for k, r in first.items()}
        hard["failures"] = analysis.failure_cases(
            data.hard_meta, data.hard_test, hard_preds, seed=1
        )
        task["hard"] = hard


def _inside(task: dict, plan: TaskPlan, data, first: dict[str, dict], figdir: Path) -> dict:
    """Attention, memory and gradient-flow figures of the seed-0 RMC (and LSTM) of a task."""
    out: dict[str, Any] = {}
    if "rmc" not in first:
        return out
    rmc = load_model(first["rmc"], plan, data.meta)
    preds = np.asarray(first["rmc"]["predictions"])
    targets = np.asarray(data.test.targets)
    right = np.nonzero(preds == targets)[0]
    wrong = np.nonzero(preds != targets)[0]
    chosen = [("right", int(right[0]))] if right.size else []
    chosen += [("wrong", int(wrong[0]))] if wrong.size else []
    out["attention"] = []
    for outcome, i in chosen:
        row = data.test.inputs[i : i + 1]
        trace = analysis.trace_memory(rmc, row)
        text = data.meta.render(row[0], targets[i], preds[i])
        first_line = text.splitlines()[0]
        title = (
            f"{task['label']}: RMC attention (block 0), test example {i} "
            f"({outcome}: answer {targets[i]}, predicted {preds[i]})\n{first_line}"
        )
        paths = figures.plot_attention(
            trace.attention[:, 0, 0],
            figdir / f"attention_{plan.key}_{outcome}",
            title,
            [f"step {t}" for t in range(row.shape[1])],
        )
        out["attention"].append({"index": i, "outcome": outcome, "text": text, "paths": paths})

    batch = data.test.inputs[:256]
    trace = analysis.trace_memory(rmc, batch)
    i = chosen[0][1] if chosen else 0
    single = analysis.trace_memory(rmc, data.test.inputs[i : i + 1])
    out["memory"] = figures.plot_memory(
        single.slot_updates()[:, 0],
        trace.attention_received().mean(axis=1),
        figdir / f"memory_{plan.key}",
        f"{task['label']}: RMC memory on test example {i} (left) and slot usage over "
        f"{len(batch)} test examples (right)",
    )
    received = trace.attention_received().mean(axis=(0, 1))
    out["slot_usage"] = [float(v) for v in received]

    flows = {}
    x, y = data.test.inputs[:64], data.test.targets[:64]
    for kind, res in first.items():
        model = rmc if kind == "rmc" else load_model(res, plan, data.meta)
        flow = analysis.gradient_flow(model, x, y)
        flows[kind] = {"label": MODEL_LABELS[kind], "short": MODEL_SHORT[kind], **flow}
    out["gradient_flow"] = figures.plot_gradient_flow(
        flows,
        figdir / f"gradient_flow_{plan.key}",
        f"{task['label']}: gradient norms flowing back through time, {len(x)} test examples",
    )
    out["gradient_summary"] = {
        kind: {
            "input_first": float(np.median(f["input"][0])),
            "input_last": float(np.median(f["input"][-1])),
            "state_first": float(np.median(f["state"][0])),
            "state_last": float(np.median(f["state"][-1])),
        }
        for kind, f in flows.items()
    }
    return out


def _analysis_keys(keys: list[str]) -> list[str]:
    chosen = [k for k in keys if k.startswith("nth_farthest")][:1]
    for k in ("babi_synthetic_2", "tracking", "pair_matching"):
        if k in keys:
            chosen.append(k)
            break
    return chosen


def _sample_efficiency(se: SampleEfficiencyPlan, by_name: dict[str, dict]) -> dict | None:
    if not se.sizes:
        return None
    meta = tasks.task_meta(se.task.task, **se.task.options)
    study = {
        "label": se.task.label,
        "chance": float(meta.chance_accuracy),
        "steps": se.task.steps,
        "batch_size": se.task.batch_size,
        "sizes": list(se.sizes),
        "seeds": list(se.seeds),
        "models": {},
    }
    for kind in se.task.models:
        by_size = {}
        for n in se.sizes:
            accs = [
                by_name[name]["test_acc"]
                for seed in se.seeds
                if (name := f"sample_efficiency__{kind}__s{seed}__n{n}") in by_name
                and finished(by_name[name])
            ]
            if accs:
                by_size[str(n)] = accs
        if by_size:
            study["models"][kind] = {"label": MODEL_LABELS[kind], "by_size": by_size}
    return study if study["models"] else None


def _merge_metrics(out: Path, names: list[str]) -> Path:
    path = out / "metrics.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for name in names:
            part = out / "metrics" / f"{name}.jsonl"
            if part.exists():
                f.write(part.read_text(encoding="utf-8"))
    return path


def run_study(args) -> int:
    """Everything `python -m experiments.compare` does; returns the exit status."""
    start = time.perf_counter()
    plans, se = _plans(args)
    if args.list_tasks:
        for p in plans:
            say(f"{p.key:20s} {p.label} ({p.steps} steps x {p.batch_size})")
        return 0
    out = Path(args.out).resolve()  # absolute, so that workers elsewhere write here too
    babi_dir, babi_note = _babi_dir(args, plans)
    if babi_note:
        say(babi_note)
        plans = [p for p in plans if babi_task_id(p) is None]
    if not plans and not se.sizes:
        raise SystemExit(
            "nothing to run: the selected tasks need the real bAbI files"
            if babi_note
            else "nothing to run: no task selected"
        )
    workers = args.workers or default_workers()
    scheduler = getattr(args, "scheduler", None)

    jobs = [
        make_job(p, kind, seed, str(out), babi_dir, resume=args.resume)
        for p in plans
        for kind in p.models
        for seed in args.seed_list
    ]
    jobs += [
        make_job(se.task, kind, seed, str(out), None, n_train=n, resume=args.resume)
        for n in se.sizes
        for kind in se.task.models
        for seed in se.seeds
    ]
    seq = {p.key: _seq_len(p) for p in [*plans, se.task]}
    done = load_finished(out, jobs) if args.resume else {}
    pending = [j for j in jobs if job_name(j) not in done]
    pending.sort(key=lambda j: -job_cost(j, seq[j["plan"]["key"]]))

    # reach the scheduler (or start the pool) before touching --out: a failure loses nothing
    executors = ExitStack()
    try:
        executor = executors.enter_context(
            open_executor(min(workers, max(1, len(pending))), scheduler)
        )
    except ExecutorError as exc:
        raise SystemExit(str(exc)) from None
    with executors:
        earlier = prepare_output(out, kind="study", resume=args.resume, generated=GENERATED)
        if args.resume and not earlier:
            say(f"nothing to resume in {out}; starting afresh")
        for job in pending:
            job["out_created"] = True  # a worker that cannot see it fails with a clear error
        where = f"the Dask scheduler at {scheduler}" if scheduler else f"{workers} worker(s)"
        say(
            f"{len(jobs)} runs ({len(done)} already done), {where}, "
            f"seeds {list(args.seed_list)}, output in {out}"
        )
        ran, interrupted = _run_jobs(pending, executor)
    by_name = {**done, **ran}
    problems = [r for r in by_name.values() if r["status"] in ("failed", "nonfinite")]
    train_time = time.perf_counter() - start

    # ---- gather, analyse, draw
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "mode": args.mode,
        "seeds": list(args.seed_list),
        "workers": workers,
        "scheduler": scheduler,
        "threads": args.threads,
        "babi_dir": babi_dir,
        "notes": [babi_note] if babi_note else [],
        "tasks": {},
        "figures": {},
        "problems": [
            {"name": r["name"], "status": r["status"], "message": r["message"]} for r in problems
        ],
        "interrupted": interrupted,
    }
    plan_of = {p.key: p for p in plans}
    for p in plans:
        runs: dict[str, list[dict]] = {}
        for r in by_name.values():
            if r.get("task") == p.key and finished(r):
                runs.setdefault(r["model"], []).append(r)
        if not runs:
            continue
        data = load_task_data(p, args.seed_list[0], babi_dir)
        task = _assemble_task(p, runs, data)
        task["figures"] = {"curves": figures.plot_training_curves(task, figdir / f"curves_{p.key}")}
        _analyse_task(task, p, data, _first_runs(task, by_name), figdir)
        results["tasks"][p.key] = task

    tasks_out = results["tasks"]
    if tasks_out:
        results["figures"]["overview"] = figures.plot_accuracy_overview(
            tasks_out, figdir / "curves_all"
        )
        results["figures"]["accuracy"] = figures.plot_accuracy_bars(tasks_out, figdir / "accuracy")
        results["figures"]["convergence"] = figures.plot_convergence(
            tasks_out, figdir / "convergence"
        )
        if any(t.get("hard") for t in tasks_out.values()):
            results["figures"]["harder"] = figures.plot_harder(tasks_out, figdir / "harder")
        inside = {}
        for key in _analysis_keys(list(tasks_out)):
            p = plan_of[key]
            data = load_task_data(p, args.seed_list[0], babi_dir)
            inside[key] = _inside(
                tasks_out[key], p, data, _first_runs(tasks_out[key], by_name), figdir
            )
        results["inside"] = inside
        graph_task = next((k for k in tasks_out if "rmc" in tasks_out[k]["models"]), None)
        if graph_task is not None:
            p = plan_of[graph_task]
            meta = load_task_data(p, args.seed_list[0], babi_dir).meta
            first = _first_runs(tasks_out[graph_task], by_name)["rmc"]
            rmc = load_model(first, p, meta)
            results["figures"]["rmc_graph"] = analysis.render_step_graph(
                rmc, figdir / "rmc_step_graph"
            )
            results["graph_task"] = graph_task
    study = _sample_efficiency(se, by_name)
    if study is not None:
        results["sample_efficiency"] = study
        results["figures"]["sample_efficiency"] = figures.plot_sample_efficiency(
            study, figdir / "sample_efficiency"
        )
    names = [job_name(j) for j in jobs]
    _merge_metrics(out, names)
    results["train_wall_time"] = train_time
    results["wall_time"] = time.perf_counter() - start
    (out / "results.json").write_text(
        json.dumps(_relative(results, out), indent=1, default=_json_default), encoding="utf-8"
    )
    results["ablations"] = load_summaries(out)
    write_report(_relative(results, out), out / "report.md")

    for line in _table_lines(tasks_out):
        say(line)
    say(f"report: {out / 'report.md'} | wall time {results['wall_time']:.0f}s")
    if interrupted:
        say(
            "interrupted: finished runs are saved; rerun with --resume to continue the rest "
            "from their last checkpoints"
        )
        return 130
    for r in problems:
        say(f"run {r['name']} {r['status']}: {r['message']}")
    return 1 if problems else 0


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _relative(obj, out: Path):
    """Paths under `out` made relative to it (so the report's links work from its folder)."""
    if isinstance(obj, dict):
        return {k: _relative(v, out) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, out) for v in obj]
    if isinstance(obj, str) and obj.startswith(str(out) + os.sep):
        return os.path.relpath(obj, out)
    return obj


def _table_lines(tasks_out: dict) -> list[str]:
    lines = [f"{'task':22s} {'model':9s} {'test acc':>9s} {'chance':>7s} {'params':>8s}"]
    for key, task in tasks_out.items():
        for kind, model in task["models"].items():
            acc = model["test_acc"]["mean"]
            lines.append(
                f"{key:22s} {MODEL_SHORT[kind]:9s} {acc:9.3f} {task['chance']:7.3f} "
                f"{model['params']:8d}"
            )
    return lines


__all__ = ["run_study"]
