"""Speed of one training step (forward, backward, Adam) of the compared models.

    python -m experiments.bench                 # the quick study's Nth-farthest sizes
    python -m experiments.bench --paper         # also the paper's 8 x 16 Nth-farthest sizes

Prints one line per model and size (milliseconds per step, median of --repeats timed steps)
and, with --jsonl, appends the same numbers as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from experiments.compare import set_threads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--paper", action="store_true", help="also time the paper's 8 x 16 sizes")
    p.add_argument("--models", default="lstm,rmc", help="comma-separated: lstm, rmc, rrnn")
    p.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    p.add_argument("--repeats", type=int, default=30, help="timed steps per model (default 30)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--jsonl", default=None, help="append results as JSON lines to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time each model's training step; returns 0."""
    args = parse_args(argv)
    set_threads(args.threads)
    import numpy as np

    import tasks
    from experiments.plan import full_plan, quick_plan
    from experiments.runner import build_model
    from experiments.training import train_step
    from tensorgrad.optim import Adam

    plans = [p for p in quick_plan() if p.task == "nth_farthest"]
    if args.paper:
        plans += [p for p in full_plan() if p.key == "nth_farthest_k8"]
    for plan in plans:
        meta = tasks.task_meta(plan.task, **plan.options)
        batch = args.batch_size or plan.batch_size
        sample = tasks.make_sampler(plan.task, **plan.options)
        rng = np.random.default_rng(0)
        for kind in args.models.split(","):
            model, info = build_model(kind, plan, meta.input_size, meta.num_classes, 0)
            opt = Adam(model.parameters(), lr=plan.lr)
            batches = [sample(batch, rng) for _ in range(args.repeats + 3)]
            times = []
            for i, b in enumerate(batches):
                start = time.perf_counter()
                train_step(model, b, opt, clip_norm=plan.clip_norm)
                if i >= 3:  # the first steps warm caches and allocators
                    times.append(time.perf_counter() - start)
            ms = 1000 * float(np.median(times))
            rec = {
                "task": plan.key,
                "model": kind,
                "batch_size": batch,
                "params": info["params"],
                "size": info["size"],
                "ms_per_step": round(ms, 2),
            }
            print(
                f"{plan.key:18s} {kind:5s} batch {batch:4d} | {info['params']:8,d} params "
                f"({info['size']}) | {ms:7.1f} ms/step",
                flush=True,
            )
            if args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
