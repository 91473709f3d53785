"""Which parts of the relational memory matter? Train every variant of the RMC over seeds.

    python -m experiments.ablate                  # the sweep on Nth-farthest K=3, three seeds
    python -m experiments.ablate --tiny           # a seconds-long run of the same grid
    python -m experiments.ablate --scheduler tcp://HOST:8786    # the same sweep on Dask

Each variant changes one thing of the main study's RMC (4 slots x 4 heads x 16, unit gates,
residual connections) and is trained from scratch with the task's full budget; the test
accuracy is reported per variant with its spread over seeds, beside the matched LSTM.
Writes <out>/ablation.md, ablation.json and figures/ablation.png; when <out> sits inside a
main-study folder (the default runs/quick/ablation, or runs/quick/ablation_<task> for
another --task), that study's report gains the table too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

FACTORS = ("heads", "slots", "residual", "gate")
HEADS = (1, 2, 4, 8)
SLOTS = (1, 2, 4, 8)
GATES = ("unit", "memory", None)
ORDER = (*FACTORS, "reference")
VALUES = {
    "heads": [str(h) for h in HEADS],
    "slots": [str(n) for n in SLOTS],
    "residual": ["on", "off"],
    "gate": ["unit", "memory", "none"],
    "reference": ["LSTM"],
}
GENERATED = ("jobs", "metrics", "checkpoints", "figures")

EPILOG = """\
the grid (each variant changes one thing of the base RMC; the base is trained once and shown
in every group):
  heads     1, 2, 4, 8 heads splitting the same memory width (4 x 16 = 64 features: 1 x 64,
            2 x 32, 4 x 16, 8 x 8), so the parameter count stays almost the same
  slots     1, 2, 4, 8 memory slots of 64 features
  residual  the skip connections around attention and the MLP, on or off
  gate      "unit" (an input and forget gate per feature), "memory" (one per slot), none
  LSTM      the main study's LSTM with its parameter count matched to the base RMC, as the
            level to beat (--no-lstm leaves it out)

seeds: every variant is trained with each seed (default 0,1,2; --tiny 0); the table shows the
mean test accuracy, its standard deviation and every seed's value.

--scheduler ADDRESS runs the jobs on a dask.distributed cluster through its
concurrent.futures executor instead of local processes: start `dask scheduler` and
`dask worker ADDRESS` on the machines (each with this package installed,
pip install -e '.[dask]'), put --out on a filesystem they share, and pass the scheduler's
tcp://HOST:PORT. Results come back through the scheduler; nothing else changes.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.ablate",
        description=(
            "Trained ablations of the relational memory core: number of heads, memory\n"
            "slots, residual connections and gate style, each over several seeds."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--tiny", action="store_true", help="a seconds-long run of the grid on a tiny task"
    )
    p.add_argument(
        "--task",
        default=None,
        help="the main study's task to ablate on (default nth_farthest_k3; --tiny "
        "pair_matching); any synthetic task key of `python -m experiments.compare --list-tasks`",
    )
    p.add_argument(
        "--factors",
        default=",".join(FACTORS),
        help=f"comma-separated factors to vary (default all: {','.join(FACTORS)})",
    )
    p.add_argument("--no-lstm", action="store_true", help="leave out the LSTM reference")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --tiny 0)")
    p.add_argument(
        "--steps",
        default=None,
        help="training steps of every variant (default: the task's budget in the main study)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output directory (default runs/quick/ablation, runs/quick/ablation_<task> with "
        "--task, runs/tiny/... with --tiny)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: CPU cores, at most 2); ignored with --scheduler",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on the dask.distributed scheduler at ADDRESS (tcp://HOST:PORT)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="BLAS threads per local worker (default 1)"
    )
    p.add_argument(
        "--resume", action="store_true", help="keep the finished runs in --out, train the rest"
    )
    p.add_argument("--list", action="store_true", help="print the variants and jobs, then exit")
    args = p.parse_args(argv)

    from experiments.sweep import check_run_options

    check_run_options(p, args, "0" if args.tiny else "0,1,2")
    factors = [f.strip() for f in args.factors.split(",") if f.strip()]
    unknown = [f for f in factors if f not in FACTORS]
    if unknown or not factors:
        p.error(f"--factors must name some of {','.join(FACTORS)}, got {args.factors!r}")
    args.factor_list = tuple(f for f in FACTORS if f in factors)
    if args.steps is not None:
        try:
            args.steps = int(args.steps)
        except ValueError:
            p.error(f"--steps must be a positive integer, got {args.steps!r}")
        if args.steps < 1:
            p.error(f"--steps must be a positive integer, got {args.steps}")
    if args.out is None:
        folder = "ablation" if args.task in (None, default_task(args)) else f"ablation_{args.task}"
        args.out = str(Path("runs") / ("tiny" if args.tiny else "quick") / folder)
    return args


# ------------------------------------------------------------------------------ the grid


class UsageError(ValueError):
    """A command-line value found wrong after parsing (reported as a usage error, exit 2)."""


@dataclass(frozen=True)
class Variant:
    """One model of the sweep: an RMC memory (or the LSTM) and the groups it is shown in.

    groups: (factor, value) pairs, e.g. (("heads", "4"), ("slots", "4")) for the base.
    """

    key: str
    model: str
    memory: Any
    groups: tuple[tuple[str, str], ...]


def _gate_name(gate: str | None) -> str:
    return gate or "none"


def _memory_key(m) -> str:
    key = f"s{m.slots}_h{m.heads}x{m.head_size}_{_gate_name(m.gate)}"
    return key + ("" if m.residual else "_nores")


def variants(base_memory, factors=FACTORS, lstm: bool = True) -> list[Variant]:
    """The sweep's variants of `base_memory` (a plan.MemorySize), each once, in grid order.

    Heads vary at a fixed memory width (heads x head size); a width a head count does not
    divide is left out of the grid.
    """
    width = base_memory.heads * base_memory.head_size
    grid: list[tuple[str, str, Any]] = []
    if "heads" in factors:
        for h in HEADS:
            if width % h == 0:
                grid.append(("heads", str(h), replace(base_memory, heads=h, head_size=width // h)))
    if "slots" in factors:
        grid += [("slots", str(n), replace(base_memory, slots=n)) for n in SLOTS]
    if "residual" in factors:
        grid += [("residual", v, replace(base_memory, residual=v == "on")) for v in ("on", "off")]
    if "gate" in factors:
        grid += [("gate", _gate_name(g), replace(base_memory, gate=g)) for g in GATES]

    order: list[Any] = []
    groups: dict[Any, list[tuple[str, str]]] = {}
    for factor, value, memory in grid:
        if memory not in groups:
            order.append(memory)
            groups[memory] = []
        groups[memory].append((factor, value))
    out = [Variant(_memory_key(m), "rmc", m, tuple(groups[m])) for m in order]
    if lstm:
        out.append(Variant("lstm", "lstm", base_memory, (("reference", "LSTM"),)))
    return out


def _variant_label(factor: str, value: str, memory) -> str:
    if factor == "heads":
        n = int(value)
        return f"{n} head{'s' if n > 1 else ''} x {memory.head_size}"
    if factor == "slots":
        n = int(value)
        return f"{n} slot{'s' if n > 1 else ''}"
    if factor == "residual":
        return f"residual {value}"
    if factor == "gate":
        return f"gate {value}"
    return value


def default_task(args) -> str:
    """The task a sweep ablates when --task is not given."""
    return "pair_matching" if args.tiny else "nth_farthest_k3"


def base_plan(args):
    """The main study's plan of the task to ablate, at the sweep's step budget."""
    from experiments.plan import quick_plan, tiny_plan

    plans = {p.key: p for p in (tiny_plan() if args.tiny else quick_plan())}
    key = args.task or default_task(args)
    synthetic = sorted(k for k, p in plans.items() if not p.task.startswith("babi_qa"))
    if key not in synthetic:
        raise UsageError(f"--task {key!r} is not one of this study's synthetic tasks {synthetic}")
    plan = replace(plans[key], hard=None, hard_label="", models=("rmc",))
    if args.steps is not None:
        plan = replace(
            plan,
            steps=args.steps,
            eval_every=min(plan.eval_every, args.steps),
            warmup=min(plan.warmup, max(1, args.steps // 10)),
        )
    return plan


def make_jobs(args, plan, grid: list[Variant], out: str | os.PathLike | None = None) -> list[dict]:
    """One job per variant and seed, in grid order; longest (most slots) first is the
    caller's business."""
    from experiments.runner import make_job

    jobs = []
    for v in grid:
        vplan = replace(
            plan,
            key=f"ablation_{v.key}",
            label=f"{plan.label}, {'LSTM' if v.model == 'lstm' else v.memory.describe()}",
            memory=v.memory,
            models=(v.model,),
        )
        for seed in args.seed_list:
            job = make_job(vplan, v.model, seed, str(out or args.out), None, resume=args.resume)
            job["variant"] = v.key
            jobs.append(job)
    return jobs


# ------------------------------------------------------------------------------ summary


def summarise(plan, grid: list[Variant], by_variant: dict[str, list[dict]], meta) -> dict:
    """The sweep's table as a JSON-ready dict: one row per (factor, value) of the grid."""
    from experiments.runner import finished
    from experiments.study import _summary

    runs_of = {
        v.key: sorted(
            (r for r in by_variant.get(v.key, []) if finished(r)),
            key=lambda r: r["seed"],
        )
        for v in grid
    }
    cells = [(f, value, v) for v in grid for f, value in v.groups]
    cells.sort(key=lambda c: (ORDER.index(c[0]), VALUES[c[0]].index(c[1])))
    rows = []
    for factor, value, v in cells:
        runs = runs_of[v.key]
        rows.append(
            {
                "factor": factor,
                "value": value,
                "label": "LSTM" if v.model == "lstm" else _variant_label(factor, value, v.memory),
                "variant": v.key,
                "model": v.model,
                "memory": v.memory.describe() if v.model == "rmc" else None,
                "size": runs[0]["size"] if runs else None,
                "params": runs[0]["params"] if runs else None,
                "seeds": [r["seed"] for r in runs],
                "accs": [r["test_acc"] for r in runs],
                "test_acc": _summary([r["test_acc"] for r in runs]),
                "steps_to_threshold": [r["steps_to_threshold"] for r in runs],
                "wall_time": _summary([r["wall_time"] for r in runs]),
                "ms_per_step": _summary([r["ms_per_step"] for r in runs]),
            }
        )
    return {
        "task": plan.key,
        "label": plan.label,
        "steps": plan.steps,
        "batch_size": plan.batch_size,
        "lr": plan.lr,
        "threshold": plan.threshold,
        "chance": float(meta.chance_accuracy),
        "guess_level": meta.extra.get("guess_level"),
        "base": plan.memory.describe(),
        "base_variant": _memory_key(plan.memory),
        "rows": rows,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _mean_text(acc: dict, runs: int) -> str:
    if acc["mean"] is None:
        return "no finished run"
    if runs == 1:
        return f"{_pct(acc['mean'])} (1 seed)"
    return f"{_pct(acc['mean'])} ± {100 * acc['std']:.1f}"


def table_lines(summary: dict) -> list[str]:
    """The ablation table as fixed-width text, one line per variant after a header."""
    lines = [f"{'factor':9s} {'variant':16s} {'params':>8s} {'test acc':>15s}  per seed"]
    for row in summary["rows"]:
        acc = row["test_acc"]
        mean = _mean_text(acc, len(row["accs"]))
        seeds = " ".join(_pct(a) for a in row["accs"])
        params = "" if row["params"] is None else str(row["params"])
        lines.append(f"{row['factor']:9s} {row['label']:16s} {params:>8s} {mean:>15s}  {seeds}")
    return lines


def markdown_lines(summary: dict, figure_dir: str = "") -> list[str]:
    """The ablation as markdown: setup line, table and figure (paths relative to the reader)."""
    guess = summary.get("guess_level")
    lines = [
        f"Task: {summary['label']}; {summary['steps']} steps of batch {summary['batch_size']}, "
        f"Adam at {summary['lr']:g}, seeds {', '.join(map(str, summary.get('seeds', [])))}. "
        f"Base RMC: {summary['base']}. Chance {_pct(summary['chance'])}"
        + (f"; guess level without relational reasoning {_pct(guess)}." if guess else "."),
        "",
        "| factor | variant | parameters | test accuracy (mean ± sd) | per seed "
        f"| steps to {_pct(summary['threshold'])} |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in summary["rows"]:
        acc = row["test_acc"]
        mean = _mean_text(acc, len(row["accs"]))
        hits = ", ".join("—" if s is None else str(s) for s in row["steps_to_threshold"])
        lines.append(
            f"| {row['factor']} | {row['label']} | {row['params'] or ''} | {mean} | "
            f"{', '.join(_pct(a) for a in row['accs'])} | {hits} |"
        )
    problems = summary.get("problems") or []
    if summary.get("interrupted") or problems:
        lines += [""]
        if summary.get("interrupted"):
            lines.append(
                "**Interrupted:** rows without every seed are incomplete; "
                "`python -m experiments.ablate --resume` (same arguments) trains the rest."
            )
        lines += [f"- run {p['name']} {p['status']}: {p['message']}" for p in problems]
    wall = summary.get("wall_time")
    if wall is not None:
        lines += [
            "",
            f"{summary['runs']} training runs in {wall / 60:.1f} min wall on "
            f"{summary['executor']} ({summary['run_time'] / 60:.1f} min of training in all).",
        ]
    fig = summary.get("figure")
    if fig:
        png = os.path.join(figure_dir, fig["png"]) if figure_dir else fig["png"]
        lines += ["", f"![test accuracy per ablation variant]({png})"]
    return lines


def load_summaries(study_dir: str | os.PathLike) -> list[dict]:
    """Every sweep saved in an ablation* folder of a main-study folder, its folder name added.

    The default task's folder ("ablation") comes first, then the others by name.
    """
    found = []
    for folder in sorted(
        Path(study_dir).glob("ablation*"), key=lambda f: (f.name != "ablation", f.name)
    ):
        summary = load_summary(folder) if folder.is_dir() else None
        if summary is not None and summary.get("rows"):
            found.append({**summary, "folder": folder.name})
    return found


def load_summary(folder: str | os.PathLike) -> dict | None:
    """The summary an earlier sweep wrote to `folder`/ablation.json, or None."""
    path = Path(folder) / "ablation.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------ running


def _update_main_report(study_dir: Path) -> Path | None:
    """Put every sweep of `study_dir` into its main study's results.json and report.md."""
    from experiments.report import write_report

    path = study_dir / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    results["ablations"] = load_summaries(study_dir)
    path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return write_report(results, study_dir / "report.md")


def run_ablation(args) -> dict:
    """Train the grid, write ablation.json, ablation.md and the figure; return the summary."""
    import numpy as np

    import tasks
    from experiments import figures
    from experiments.runner import finished, job_cost, job_name, run_job_safely
    from experiments.study import _json_default, _relative, interrupted_run, load_finished
    from experiments.sweep import (
        ExecutorError,
        default_workers,
        open_executor,
        prepare_output,
        run_sweep,
    )

    start = time.perf_counter()
    plan = base_plan(args)
    grid = variants(plan.memory, args.factor_list, lstm=not args.no_lstm)
    out = Path(args.out).resolve()  # absolute, so that workers elsewhere write here too
    jobs = make_jobs(args, plan, grid, out)
    if args.list:
        for v in grid:
            where = ", ".join(f"{f}={val}" for f, val in v.groups)
            print(f"{v.key:24s} {v.model:5s} {where}")
        print(f"{len(jobs)} jobs: {len(grid)} variants x seeds {list(args.seed_list)}")
        return {}

    done = load_finished(out, jobs) if args.resume else {}
    earlier = load_summary(out) if args.resume else None
    # a resumed sweep reports the wall time of all its invocations
    earlier_wall = float(earlier.get("wall_time") or 0.0) if earlier else 0.0
    seq = tasks.task_meta(plan.task, **plan.options).seq_len
    pending = [j for j in jobs if job_name(j) not in done]
    pending.sort(key=lambda j: -job_cost(j, seq) * j["plan"]["memory"]["slots"])
    workers = args.workers or default_workers()
    if args.scheduler:
        where = f"the Dask scheduler at {args.scheduler}"
    else:
        where = "this process" if workers == 1 else f"{workers} local processes"

    def failed(i: int, exc: BaseException) -> dict:
        return {"name": job_name(pending[i]), "status": "failed", "message": f"{exc!r}"}

    # reach the scheduler (or start the pool) before touching --out: a failure loses nothing
    executors = ExitStack()
    try:
        executor = executors.enter_context(
            open_executor(min(workers, max(1, len(pending))), args.scheduler)
        )
    except ExecutorError as exc:
        raise SystemExit(str(exc)) from None
    with executors:
        if not prepare_output(out, kind="sweep", resume=args.resume, generated=GENERATED):
            if args.resume:
                print(f"nothing to resume in {out}; starting afresh", flush=True)
        for job in pending:
            job["out_created"] = True  # a worker that cannot see it fails with a clear error
        print(
            f"{len(jobs)} runs ({len(done)} already done): {len(grid)} variants x seeds "
            f"{list(args.seed_list)} on {plan.label}, {plan.steps} steps each; {where}; "
            f"output in {out}",
            flush=True,
        )
        results, interrupted = run_sweep(
            run_job_safely,
            pending,
            executor,
            on_error=failed,
            stop_when=interrupted_run,
            name_of=job_name,
        )
    by_name = dict(done)
    for job, res in zip(pending, results):
        if res is None:
            continue
        by_name[job_name(job)] = res
        saved = out / "jobs" / f"{job_name(job)}.json"
        if finished(res) and not saved.exists():  # a worker on another machine wrote its copy
            saved.parent.mkdir(exist_ok=True)
            saved.write_text(json.dumps(res, default=_json_default), encoding="utf-8")
    by_variant: dict[str, list[dict]] = {}
    for job in jobs:
        res = by_name.get(job_name(job))
        if res is not None:
            by_variant.setdefault(job["variant"], []).append(res)

    meta = tasks.task_meta(plan.task, **plan.options)
    summary = summarise(plan, grid, by_variant, meta)
    done_runs = [r for r in by_name.values() if finished(r)]
    summary.update(
        seeds=list(args.seed_list),
        runs=len(done_runs),
        executor=where,
        wall_time=earlier_wall + time.perf_counter() - start,
        run_time=float(np.sum([r["wall_time"] for r in done_runs])) if done_runs else 0.0,
        problems=[
            {"name": r["name"], "status": r["status"], "message": r.get("message")}
            for r in by_name.values()
            if r.get("status") in ("failed", "nonfinite", "interrupted")
        ],
        interrupted=interrupted,
    )
    if done_runs:
        paths = figures.plot_ablation(summary, out / "figures" / "ablation")
        summary["figure"] = {"png": paths[0], "svg": paths[1]}
    summary = _relative(summary, out)
    (out / "ablation.json").write_text(
        json.dumps(summary, indent=1, default=_json_default), encoding="utf-8"
    )
    report = ["# Ablations of the relational memory core", "", *markdown_lines(summary)]
    (out / "ablation.md").write_text("\n".join(report) + "\n", encoding="utf-8")
    main_report = None
    if (out.parent / "results.json").is_file() and out.name.startswith("ablation"):
        main_report = _update_main_report(out.parent)

    for line in table_lines(summary):
        print(line)
    print(
        f"ablation: {out / 'ablation.md'}"
        + (f" (and the study report {main_report})" if main_report else "")
        + f" | {summary['runs']} runs, wall time {summary['wall_time']:.0f}s",
        flush=True,
    )
    if summary["problems"]:
        for p in summary["problems"]:
            print(f"run {p['name']} {p['status']}: {p['message']}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 ok, 1 some run failed, 130 interrupted)."""
    args = parse_args(argv)
    from experiments.compare import set_threads

    set_threads(args.threads)
    try:
        summary = run_ablation(args)
    except UsageError as exc:
        print(f"python -m experiments.ablate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the training runs: while summarising or drawing
        print(
            "interrupted: finished runs are saved; rerun with --resume to train the rest and "
            "write the summary",
            file=sys.stderr,
        )
        return 130
    if summary.get("interrupted"):
        print("interrupted: rerun with --resume to train the rest", flush=True)
        return 130
    return 1 if summary.get("problems") else 0


__all__ = [
    "FACTORS",
    "UsageError",
    "Variant",
    "base_plan",
    "load_summaries",
    "load_summary",
    "main",
    "make_jobs",
    "markdown_lines",
    "parse_args",
    "run_ablation",
    "summarise",
    "table_lines",
    "variants",
]

if __name__ == "__main__":
    sys.exit(main())
