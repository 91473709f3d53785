"""LSTM versus the relational memory core (RMC) on sequential reasoning tasks, with matched budgets.

    python -m experiments.compare              # quick study, about ten minutes on two cores
    python -m experiments.compare --full       # the larger study (hours)
    python -m experiments.compare --tiny       # seconds-long smoke run

Writes to --out (default runs/quick, runs/full or runs/tiny): report.md, results.json,
metrics.jsonl (one line per evaluation of every run), figures/ (PNG and SVG), checkpoints/.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BABI = REPO.parent / "shared" / "data" / "babi" / "en"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

EPILOG = """\
budget rules (the same for every model on a task):
  Adam at one learning rate with the same warm-up, one batch size, one step count, one seed
  list, the same MLP classifier head; the LSTM's hidden size is chosen so that its parameter
  count is within 10% of the RMC's (both are stated in the report).

outputs in --out:
  report.md      tables, figures, failure cases, the paper's claims checked against the numbers
  results.json   every number in the report
  metrics.jsonl  one line per evaluation of every run (step, loss, accuracies, lr, grad norm)
  figures/       PNG and SVG of every figure; the RMC step graph also as DOT
  checkpoints/   best.npz and last.npz of every run (--resume continues from last.npz)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.compare",
        description=(
            "Train an LSTM and the relational memory core (RMC) of Santoro et al. (2018)\n"
            "with matched budgets on Nth-farthest, sorting, tracking, pair matching,\n"
            "bAbI-style and real bAbI question answering; write figures and a report."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--full",
        action="store_true",
        help="the larger study: Nth-farthest up to the paper's 8 x 16, longer "
        "budgets, the relational RNN cell as a third model, hard variants "
        "trained too (hours)",
    )
    size.add_argument(
        "--tiny",
        action="store_true",
        help="a seconds-long smoke run on two easy tasks with tiny models",
    )
    p.add_argument(
        "--out", default=None, help="output directory (default runs/quick, runs/full or runs/tiny)"
    )
    p.add_argument(
        "--tasks",
        default=None,
        help="comma-separated task keys to run (default: all of the study; "
        "--list-tasks shows them)",
    )
    p.add_argument("--list-tasks", action="store_true", help="print the study's tasks and exit")
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds, e.g. 0,1,2 (default 0,1; --full 0,1,2; --tiny 0)",
    )
    p.add_argument(
        "--steps",
        default=None,
        help="training steps of every task (an integer), or a factor on each "
        "task's default such as 0.5x",
    )
    p.add_argument(
        "--babi-dir",
        default=None,
        help="directory of the bAbI qa*_train.txt/qa*_test.txt files (default "
        "../shared/data/babi/en next to the repository, when present); without it the real "
        "bAbI tasks are skipped with a message",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="BLAS threads per worker process (default 1)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="training runs in parallel, one process each (default: number of "
        "CPU cores, at most 2)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="train on the dask.distributed scheduler at ADDRESS (tcp://HOST:PORT) instead of "
        "local processes; its workers need this package and a filesystem shared with --out",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: finished runs are kept, the others resume "
        "from their last checkpoint",
    )
    args = p.parse_args(argv)
    if args.babi_dir is not None and not Path(args.babi_dir).is_dir():
        what = "is not a directory" if Path(args.babi_dir).exists() else "does not exist"
        p.error(f"--babi-dir {args.babi_dir} {what}")
    if args.tasks is not None and not [k for k in args.tasks.split(",") if k.strip()]:
        p.error(f"--tasks names no task, got {args.tasks!r} (--list-tasks shows them)")
    mode = "full" if args.full else "tiny" if args.tiny else "quick"
    args.mode = mode
    if args.out is None:
        args.out = str(Path("runs") / mode)
    from experiments.sweep import check_run_options

    check_run_options(p, args, {"quick": "0,1", "full": "0,1,2", "tiny": "0"}[mode])
    if args.steps is not None:
        text = args.steps.strip()
        try:
            args.step_factor = float(text[:-1]) if text.endswith("x") else None
            args.step_count = None if text.endswith("x") else int(text)
        except ValueError:
            p.error(f"--steps must be an integer or a factor like 0.5x, got {args.steps!r}")
        factor = args.step_factor
        factor_ok = factor is None or (math.isfinite(factor) and factor > 0)
        if not factor_ok or (args.step_count is not None and args.step_count < 1):
            p.error(f"--steps must be positive, got {args.steps!r}")
    else:
        args.step_factor = args.step_count = None
    return args


def set_threads(threads: int) -> None:
    """Limit BLAS threads; effective when NumPy has not been imported yet."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(threads)


def main(argv: list[str] | None = None) -> int:
    """Run the study; returns the exit status (0 ok, 1 some run failed, 130 interrupted)."""
    args = parse_args(argv)
    set_threads(args.threads)
    from experiments.study import run_study

    try:
        return run_study(args)
    except KeyboardInterrupt:  # outside the training runs: while gathering or drawing
        print(
            "interrupted: finished runs are saved; rerun with --resume to train the rest and "
            "write the report",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
