"""Training-step benchmark: time per step (forward, backward, optimiser), GFLOP/s, ops, memory.

    python -m experiments.bench                         # every config, RMC and LSTM, as the env
    python -m experiments.bench --threads 1 --json runs/bench.json
    python -m experiments.bench --configs paper_nth --models rmc --steps 50
    python -m experiments.bench --quick                 # seconds-long smoke run

A step is one training update: the forward pass and the cross-entropy loss, the backward pass,
then (gradient clipping where the config clips,) Adam and zero_grad. The configs:

    small      T=10, input 16, B=32, 10 classes, linear readout; RMC 4 slots x 4 heads x 16;
               LSTM hidden 128
    paper_nth  T=8, input 40, B=64, 8 classes, linear readout (the paper's Nth-farthest sizes,
               K=8 vectors in 16-D, on random inputs); RMC 8 x 8 x 32; LSTM hidden 512
    headline   the quick study's Nth-farthest run: K=3 vectors in 4-D (input 13, T=3), B=128, a
               fresh batch every step (its generation is timed too), a 2 x 128 MLP head,
               clipping at norm 5; RMC 4 x 4 x 16; LSTM sized to the RMC's parameter count

Every RMC has one attention block, a 2-layer attention MLP and per-unit gates; `--models rrnn`
adds the relational RNN cell (hidden size = the memory's width). Reported per config and model:
median (and min, max) wall-clock ms of a step and of each phase, CPU ms of a step, steps per
second, matmul GFLOP/s, recorded ops per step, and memory: the peak traced by tracemalloc during
one step and the drift of traced and resident memory over --drift-steps further steps. Once per
run, the engine's own cost per recorded op is measured on tiny tensors.

FLOPs are counted by walking one step's graph before its backward: 2 m k n per matrix product
of every fused or primitive op, forward, plus the products its backward runs for the inputs that
need a gradient. The same count can divide another implementation's time for a comparison.

Threads: --threads N sets OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS. BLAS reads
them once, when NumPy loads, so `python -m experiments.bench` sets them before it imports NumPy;
called in a process where NumPy is already loaded, it falls back to threadpoolctl when installed
and otherwise warns. Without --threads the environment decides. On two cores, one thread is
usually as fast for these sizes and much steadier when the other core is busy.

Timing is wall-clock (time.perf_counter); on a shared machine compare medians of repeated runs,
and read the CPU ms too. `/usr/bin/time -v python -m experiments.bench ...` adds the whole
process's CPU time, page faults and peak resident memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CONFIGS = ("small", "paper_nth", "headline")
MODELS = ("rmc", "lstm", "rrnn")


@dataclass(frozen=True)
class Config:
    """One benchmark setting: data sizes, model sizes, classifier head and clipping."""

    name: str
    seq_len: int
    input_size: int
    batch: int
    classes: int
    mem_slots: int
    num_heads: int
    head_size: int
    lstm_hidden: int | None  # None: match the RMC classifier's parameter count
    head: tuple[int, ...] = ()
    task: tuple[tuple[str, int], ...] | None = None  # Nth-farthest options: fresh batches
    clip_norm: float | None = None


SETTINGS = {
    "small": Config("small", 10, 16, 32, 10, 4, 4, 16, 128),
    "paper_nth": Config("paper_nth", 8, 40, 64, 8, 8, 8, 32, 512),
    "headline": Config(
        "headline", 3, 13, 128, 3, 4, 4, 16, None, (128, 128), (("K", 3), ("d", 4)), 5.0
    ),
}


# ------------------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench",
        description="Time training steps of the RMC and the LSTM: ms, GFLOP/s, ops, memory.",
        epilog=f"configs: {', '.join(CONFIGS)}; models: {', '.join(MODELS)}",
    )
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (default: the env's)")
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="(default float32)"
    )
    p.add_argument("--batch", "--batch-size", type=int, default=None, help="override batch size")
    p.add_argument(
        "--steps", "--repeats", type=int, default=None, help="timed steps (default 30; quick 3)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5)")
    p.add_argument(
        "--drift-steps",
        type=int,
        default=None,
        help="steps over which memory is traced (default 100; quick 3; 0 skips)",
    )
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs")
    p.add_argument("--models", default="rmc,lstm", help="comma-separated models (default rmc,lstm)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data (default 0)")
    p.add_argument("--quick", action="store_true", help="a few steps of each: a smoke run")
    p.add_argument("--json", default=None, help="write every number to this JSON file")
    p.add_argument("--jsonl", default=None, help="also append one JSON line per result here")
    args = p.parse_args(argv)

    args.config_list = _choices(p, args.configs, CONFIGS, "--configs")
    args.model_list = _choices(p, args.models, MODELS, "--models")
    if args.steps is None:
        args.steps = 3 if args.quick else 30
    if args.warmup is None:
        args.warmup = 1 if args.quick else 5
    if args.drift_steps is None:
        args.drift_steps = 3 if args.quick else 100
    for name, low in (("steps", 1), ("batch", 1), ("threads", 1), ("warmup", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            p.error(f"--{name} must be >= {low}, got {value}")
    if args.drift_steps < 0:
        p.error(f"--drift-steps must be >= 0, got {args.drift_steps}")
    return args


def _choices(p: argparse.ArgumentParser, text: str, valid: tuple, flag: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in valid]
    if bad or not items:
        p.error(f"{flag}: unknown {bad or repr(text)}; choose from {', '.join(valid)}")
    return items


def set_threads(threads: int | None) -> str:
    """Set the BLAS thread variables; returns how: env, threadpoolctl, unchanged or failed."""
    if threads is None:
        return "unchanged"
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    if "numpy" not in sys.modules:
        return "env"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "failed"
    threadpool_limits(threads)
    return "threadpoolctl"


# ------------------------------------------------------------------------------ counting


def matmul_flops(node) -> tuple[int, int]:
    """(forward, backward) FLOPs of the matrix products of one recorded node; 0 for others."""
    op, ps = node._op, node._parents
    need = [p.requires_grad for p in ps]
    if op in ("linear", "linear_relu"):
        x, w = ps[0], ps[1]
        f = 2 * (x.data.size // x.shape[-1]) * w.shape[0] * w.shape[1]
        return f, f * (need[0] + need[1])
    if op == "concat_linear":
        a, w = ps[0], ps[2]
        f = 2 * a.shape[0] * w.shape[0] * w.shape[1]
        return f, f * ((need[0] or need[1]) + need[2])
    if op == "gate_inputs":
        mem, xp, wm, wi = ps[0], ps[1], ps[2], ps[4]
        fm = 2 * (mem.data.size // mem.shape[-1]) * wm.shape[0] * wm.shape[1]
        fi = 2 * xp.shape[0] * wi.shape[0] * wi.shape[1]
        return fm + fi, fm * (need[0] + need[2]) + fi * (need[1] + need[4])
    if op == "attention":
        # Q Kᵀ and W V forward, four products of the same sizes backward; out (B, Tq, D)
        b, tq, d_model = node.shape
        tk = ps[0].shape[1] if len(ps) == 1 else ps[1].shape[1]
        f = 2 * 2 * b * tq * tk * d_model
        return f, 2 * f
    if op == "lstm_sequence":
        # per step [x, h] W forward; backward dz Whᵀ (not before h0 unless it needs it), dz Wxᵀ
        # when x needs it, and [x, h]ᵀ dz for the weight
        x, w = ps[0], ps[3]
        b, steps, d = x.shape
        n4 = w.shape[1]
        f = 2 * steps * b * w.shape[0] * n4
        dh = 2 * b * n4 * (n4 // 4) * (steps - 1 + need[1])
        dx = 2 * steps * b * n4 * d * need[0]
        return f, f * need[3] + dh + dx
    if op == "matmul":
        # 2 k FLOPs per output element, forward and for each input's gradient
        f = 2 * node.data.size * ps[0].shape[-1]
        return f, f * (need[0] + need[1])
    return 0, 0


def graph_stats(root) -> dict:
    """Recorded ops (by kind) and forward and training FLOPs of the graph above `root`."""
    from tensorgrad.tensor import iter_graph

    ops, fwd, bwd = 0, 0, 0
    kinds: dict[str, int] = {}
    for node in iter_graph(root):
        if node._backward is None:
            continue
        ops += 1
        kinds[node._op] = kinds.get(node._op, 0) + 1
        f, b = matmul_flops(node)
        fwd += f
        bwd += b
    return {"ops": ops, "op_kinds": kinds, "forward_flops": fwd, "train_flops": fwd + bwd}


# ------------------------------------------------------------------------------ models, data


def build(cfg: Config, model: str, dtype, seed: int):
    """A SequenceClassifier with an RMC, LSTM or relational RNN core for `cfg`, and its Adam."""
    from models import (
        LSTM,
        RelationalMemory,
        RelationalRNNCell,
        SequenceClassifier,
        matching_lstm_hidden,
    )
    from tensorgrad.optim import Adam

    memory = (cfg.mem_slots, cfg.head_size, cfg.num_heads)
    if model == "rmc":
        core = RelationalMemory(cfg.input_size, *memory, dtype=dtype, rng=seed)
    elif model == "lstm":
        hidden = cfg.lstm_hidden
        if hidden is None:
            budget = build(cfg, "rmc", dtype, seed)[0].num_parameters()
            hidden = matching_lstm_hidden(budget, cfg.input_size, cfg.classes, cfg.head)
        core = LSTM(cfg.input_size, hidden, dtype=dtype, rng=seed)
    else:
        hidden = cfg.num_heads * cfg.head_size
        core = RelationalRNNCell(cfg.input_size, hidden, *memory, dtype=dtype, rng=seed)
    net = SequenceClassifier(core, cfg.classes, mlp_hidden=cfg.head, rng=seed + 1)
    return net, Adam(net.parameters(), lr=1e-3)


class Batches:
    """The batches of a config: one fixed random batch, or fresh Nth-farthest ones every step."""

    def __init__(self, cfg: Config, batch: int, dtype, seed: int):
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.batch, self.dtype = batch, dtype
        self.sampler = None
        if cfg.task is None:
            x = self.rng.standard_normal((batch, cfg.seq_len, cfg.input_size))  # (B, T, D)
            self.fixed = (x.astype(dtype), self.rng.integers(0, cfg.classes, batch))
        else:
            from tasks import make_sampler

            self.sampler = make_sampler("nth_farthest", **dict(cfg.task))

    def next(self):
        """Return (inputs (B, T, D) in the model's dtype, targets (B,))."""
        if self.sampler is None:
            return self.fixed
        x, y = self.sampler(self.batch, self.rng)
        return x.astype(self.dtype, copy=False), y


# ------------------------------------------------------------------------------ measuring


def train_step(net, opt, batches: Batches, clip_norm: float | None) -> tuple[float, ...]:
    """One update; returns seconds of (data, forward, backward, optimiser) and CPU seconds."""
    from tensorgrad import cross_entropy
    from tensorgrad.optim import clip_grad_norm

    c0 = time.process_time()
    t0 = time.perf_counter()
    x, y = batches.next()
    t1 = time.perf_counter()
    loss = cross_entropy(net(x), y)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    if clip_norm is not None:
        clip_grad_norm(opt.params, clip_norm)
    opt.step()
    opt.zero_grad()
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, time.process_time() - c0


def _summary(seconds) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms)}


def bench_one(cfg: Config, model: str, args: argparse.Namespace) -> dict:
    """Time, count and trace the memory of training steps of one config and model."""
    import numpy as np

    from tensorgrad import cross_entropy

    dtype = np.dtype(args.dtype)
    batch = args.batch or cfg.batch
    net, opt = build(cfg, model, dtype, args.seed)
    batches = Batches(cfg, batch, dtype, args.seed)

    x, y = batches.next()
    loss = cross_entropy(net(x), y)
    stats = graph_stats(loss)  # before backward, which frees the graph
    loss.backward()
    opt.zero_grad()
    del loss

    for _ in range(args.warmup):
        train_step(net, opt, batches, cfg.clip_norm)
    gc.collect()
    phases = [train_step(net, opt, batches, cfg.clip_norm) for _ in range(args.steps)]
    data, fwd, bwd, optim, cpu = zip(*phases)
    step_ms = _summary([sum(p[:4]) for p in phases])
    ms = {
        "step": step_ms,
        "forward": _summary(fwd),
        "backward": _summary(bwd),
        "optimizer": _summary(optim),
        "cpu": _summary(cpu),
    }
    if cfg.task is not None:
        ms["data"] = _summary(data)
    seconds = step_ms["median"] / 1e3
    return {
        "config": cfg.name,
        "model": model,
        "batch": batch,
        "seq_len": cfg.seq_len,
        "input_size": cfg.input_size,
        "classes": cfg.classes,
        "core": net.core.extra_repr(),
        "head": list(cfg.head),
        "parameters": net.num_parameters(),
        "steps": args.steps,
        "ms": ms,
        "steps_per_s": 1 / seconds,
        "gflop_per_step": stats["train_flops"] / 1e9,
        "gflops": stats["train_flops"] / 1e9 / seconds,
        "ops_per_step": stats["ops"],
        "op_kinds": stats["op_kinds"],
        "memory": measure_memory(net, opt, batches, cfg.clip_norm, args.drift_steps),
    }


def _rss_mib() -> float:
    """Resident memory of this process now, in MiB (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def _max_rss_mib() -> float:
    try:
        import resource
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_memory(net, opt, batches: Batches, clip_norm: float | None, steps: int) -> dict:
    """Peak traced memory of one step, and drift of traced and resident memory over `steps`.

    Drift is the median memory held between steps over the last tenth of the steps minus that
    over the first tenth, so one step's noise does not count; a leak grows it with every step.
    """
    if steps == 0:
        return {"drift_steps": 0}
    import numpy as np

    mib = 2.0**20
    # NOTE: the records are preallocated, so that the measurement itself allocates nothing
    held, rss, peaks = (np.zeros(steps) for _ in range(3))
    gc.collect()
    tracemalloc.start()
    try:
        train_step(net, opt, batches, clip_norm)  # a first traced step settles lazy buffers
        for k in range(steps):
            before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            train_step(net, opt, batches, clip_norm)
            held[k], peak = tracemalloc.get_traced_memory()
            peaks[k] = peak - before
            rss[k] = _rss_mib()
    finally:
        tracemalloc.stop()
    tenth = max(1, steps // 10)
    return {
        "drift_steps": steps,
        "step_peak_mib": float(peaks.max()) / mib,
        "traced_drift_mib": float(np.median(held[-tenth:]) - np.median(held[:tenth])) / mib,
        "rss_drift_mib": float(np.median(rss[-tenth:]) - np.median(rss[:tenth])),
        "max_rss_mib": _max_rss_mib(),
    }


def engine_overhead(n: int = 2000, repeats: int = 7) -> dict:
    """The engine's own cost per recorded op, in microseconds, on 4-element tensors.

    A chain of n `mul` ops is recorded and backpropagated; the same ufunc calls on bare arrays
    are timed alone and subtracted, leaving record(), the closure and the backward loop.
    """
    import numpy as np

    from tensorgrad import Tensor

    x0 = Tensor(np.ones(4, dtype=np.float32), requires_grad=True)
    c = np.ones(4, dtype=np.float32)
    cw = Tensor(c)

    def graph():
        t0 = time.perf_counter()
        y = x0
        for _ in range(n):
            y = y * cw
        t1 = time.perf_counter()
        y.backward(c)
        t2 = time.perf_counter()
        x0.grad = None
        return t1 - t0, t2 - t1

    def bare():
        t0 = time.perf_counter()
        a = x0.data
        for _ in range(n):
            a = a * c
        t1 = time.perf_counter()
        g = c
        for _ in range(n):
            g = g * c
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    fwd, bwd = (statistics.median(s) for s in zip(*(graph() for _ in range(repeats))))
    fwd0, bwd0 = (statistics.median(s) for s in zip(*(bare() for _ in range(repeats))))
    us = 1e6 / n
    return {
        "record_us": (fwd - fwd0) * us,
        "backward_us": (bwd - bwd0) * us,
        "us_per_op": (fwd - fwd0 + bwd - bwd0) * us,
        "numpy_us_per_op": (fwd0 + bwd0) * us,
    }


# ------------------------------------------------------------------------------ main


def format_line(r: dict) -> str:
    """One compact line of a result."""
    ms, mem = r["ms"], r["memory"]
    text = (
        f"{r['config']:>9} {r['model']:<4} step {ms['step']['median']:7.2f} ms "
        f"(fwd {ms['forward']['median']:.2f}, bwd {ms['backward']['median']:.2f}, "
        f"opt {ms['optimizer']['median']:.2f}"
    )
    if "data" in ms:
        text += f", data {ms['data']['median']:.2f}"
    text += (
        f"; cpu {ms['cpu']['median']:.2f}) {r['steps_per_s']:6.1f} steps/s "
        f"{r['gflops']:5.1f} GFLOP/s {r['ops_per_step']:4d} ops"
    )
    if "step_peak_mib" in mem:
        text += (
            f" | peak {mem['step_peak_mib']:.1f} MiB, drift {mem['traced_drift_mib']:+.2f} MiB "
            f"traced, {mem['rss_drift_mib']:+.1f} MiB RSS over {mem['drift_steps']} steps"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print one line per config and model; returns the exit status."""
    args = parse_args(argv)
    how = set_threads(args.threads)
    import numpy as np

    import tensorgrad

    tensorgrad.keep_freed_memory()  # as a training process does (see experiments.training.fit)

    if how == "failed":
        print(
            f"bench: warning: NumPy was loaded before --threads {args.threads} could apply "
            "(install threadpoolctl); BLAS keeps its default",
            file=sys.stderr,
        )
    meta = {
        "threads": args.threads,
        "threads_set_by": how,
        "thread_env": {v: os.environ.get(v) for v in THREAD_VARS},
        "dtype": args.dtype,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "steps": args.steps,
        "warmup": args.warmup,
        "quick": args.quick,
    }
    print(
        f"bench: numpy {np.__version__}, {args.dtype}, BLAS threads "
        f"{args.threads or os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
        f"{args.steps} timed steps after {args.warmup}",
        flush=True,
    )
    engine = engine_overhead(n=500 if args.quick else 2000)
    print(
        f"engine: {engine['us_per_op']:.1f} us per recorded op "
        f"(record {engine['record_us']:.1f}, backward {engine['backward_us']:.1f})",
        flush=True,
    )
    results = []
    for name in args.config_list:
        for model in args.model_list:
            result = bench_one(SETTINGS[name], model, args)
            results.append(result)
            print(format_line(result), flush=True)
            if args.jsonl:
                with open(args.jsonl, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"meta": meta, **result}) + "\n")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "engine": engine, "results": results}
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
