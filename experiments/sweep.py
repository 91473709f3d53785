"""Run many independent jobs on any `concurrent.futures.Executor`: in-process, a local process
pool, or a Dask cluster.

A job is a JSON-ready dict and the function that runs it is importable by name, so the same
sweep runs unchanged wherever the executor sends it:

    with open_executor(workers=2) as ex:                        # processes on this machine
        results, interrupted = run_sweep(run_job_safely, jobs, ex)
    with open_executor(scheduler="tcp://10.0.0.5:8786") as ex:  # a dask.distributed cluster
        results, interrupted = run_sweep(run_job_safely, jobs, ex)

On a cluster every worker needs this package installed (`pip install -e '.[dask]'`) and the
output directory on a filesystem it shares with the client; results also come back through
the scheduler, so summaries never depend on reading the workers' files.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_ADDRESS = re.compile(r"^(?:(tcp)://)?([^\s:/]+|\[[0-9a-fA-F:]+\]):(\d+)$")


class ExecutorError(RuntimeError):
    """The executor could not be set up: dask missing, or the scheduler out of reach."""


class SerialExecutor(Executor):
    """An Executor that runs each job in this process, one after another, when submitted."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Run fn(*args, **kwargs) now; return a finished Future holding its result or error."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001  (handed to the caller through the future)
            if isinstance(exc, KeyboardInterrupt):
                raise
            future.set_exception(exc)
        return future


CONNECT_TIMEOUT = 30.0  # seconds to wait for a Dask scheduler
_stop_event = None  # set in each LocalPool worker: once set, queued calls return None


def _init_worker(event) -> None:
    global _stop_event
    _stop_event = event


def _unless_stopped(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a pool worker, or None once the pool has been stopped."""
    if _stop_event is not None and _stop_event.is_set():
        return None
    return fn(*args, **kwargs)


class LocalPool(ProcessPoolExecutor):
    """A process pool whose stop() also skips the calls already handed to a worker's queue
    (cancel_futures reaches only those still in the parent)."""

    def __init__(self, workers: int):
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        self._stop = ctx.Event()
        super().__init__(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(self._stop,)
        )

    def submit(self, fn, /, *args, **kwargs) -> Future:
        """Run fn(*args, **kwargs) in a worker unless the pool is stopped first (result None)."""
        return super().submit(_unless_stopped, fn, *args, **kwargs)

    def stop(self) -> None:
        """Start no more calls: queued ones are cancelled or return None; running ones finish."""
        self._stop.set()
        self.shutdown(wait=False, cancel_futures=True)


def check_scheduler_address(address: str) -> str:
    """The Dask scheduler address `address` ("tcp://host:port" or "host:port"), checked.

    Known gap: tls:// and ws:// schedulers need security settings this command line does not
    take, so only plain TCP is accepted.

    Raises ValueError naming the address when it is not of that form, before anything connects.
    """
    text = address.strip()
    match = _ADDRESS.match(text)
    if match and not 0 < int(match.group(3)) < 65536:
        raise ValueError(
            f"scheduler address {address!r}: port {match.group(3)} is not between 1 and 65535"
        )
    if not match:
        raise ValueError(
            f"scheduler address {address!r} is not of the form tcp://HOST:PORT (e.g. "
            "tcp://127.0.0.1:8786, as printed by `dask scheduler`)"
        )
    return text if match.group(1) else f"tcp://{text}"


def check_run_options(parser, args, default_seeds: str) -> None:
    """The checks both scripts make of --threads, --workers, --scheduler and --seeds.

    Sets args.seed_list (from `default_seeds` when --seeds is not given) and normalises
    args.scheduler; a bad value is a usage error of `parser` (exit 2) naming it.
    """
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.scheduler is not None:
        try:
            args.scheduler = check_scheduler_address(args.scheduler)
        except ValueError as exc:
            parser.error(str(exc))
    if args.seeds is not None and not args.seeds.strip():
        parser.error("--seeds is empty; give comma-separated integers such as 0,1")
    try:
        args.seed_list = tuple(int(s) for s in (args.seeds or default_seeds).split(","))
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if any(s < 0 for s in args.seed_list) or len(set(args.seed_list)) != len(args.seed_list):
        parser.error(f"--seeds must be distinct non-negative integers, got {args.seeds!r}")


def default_workers() -> int:
    """Worker processes for a local sweep: the CPU cores this process may use, at most 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


@contextmanager
def open_executor(
    workers: int | None = None, scheduler: str | None = None, connect_timeout: float | None = None
) -> Iterator[Executor]:
    """An Executor for a sweep, shut down on exit.

    With `scheduler`, the executor of a `dask.distributed.Client` connected to that address;
    otherwise `workers` local processes (default: cores, at most 2), or this process alone
    when workers is 1.
    """
    if scheduler is not None:
        address = check_scheduler_address(scheduler)
        connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        try:
            from distributed import Client
        except ImportError:
            raise ExecutorError(
                "a --scheduler sweep needs dask.distributed: pip install -e '.[dask]'"
            ) from None
        print(
            f"connecting to the Dask scheduler at {address} (waiting up to "
            f"{connect_timeout:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        try:
            client = Client(address, timeout=connect_timeout)
        except KeyboardInterrupt:
            raise ExecutorError(f"gave up connecting to the Dask scheduler at {address}") from None
        except OSError as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {address} within {connect_timeout:.0f}s "
                f"({exc})"
            ) from None
        executor = client.get_executor(pure=False)  # every job runs, even two equal ones
        try:
            yield executor
        except BaseException:
            executor.shutdown(wait=False)
            raise
        finally:
            client.close()
        return

    workers = workers or default_workers()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        yield SerialExecutor()
        return
    pool = LocalPool(workers)
    try:
        yield pool
    except BaseException:
        pool.stop()
        raise
    pool.shutdown()


# files that mark a folder as a main study's or a sweep's: its results, or a stamp left at start
OUTPUT_MARKERS = {"study": ("results.json", ".study"), "sweep": ("ablation.json", ".sweep")}
_OUTPUT_NAMES = {
    "study": "main study (python -m experiments.compare)",
    "sweep": "ablation sweep (python -m experiments.ablate)",
}


_ARTICLE = {"study": "a", "sweep": "an"}


def prepare_output(out: Path, *, kind: str, resume: bool, generated: Sequence[str]) -> bool:
    """Make `out` ready for a main study or a sweep (`kind` "study" or "sweep").

    Refuses a file, the other kind's folder and a non-empty folder that is not this kind's;
    checks that it is writable; stamps it as this kind's; unless resuming, clears the
    `generated` subfolders of an earlier run. A study's folder may hold sweeps in ablation*
    subfolders. Raises SystemExit naming the folder, before anything is trained. Returns
    whether `out` held an earlier run of this kind.
    """
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file, not a directory")
    other = "sweep" if kind == "study" else "study"
    if any((out / name).exists() for name in OUTPUT_MARKERS[other]):
        hint = f" such as {out / 'ablation'}" if kind == "sweep" else ""
        raise SystemExit(
            f"--out {out} holds {_ARTICLE[other]} {_OUTPUT_NAMES[other]}; give the "
            f"{_OUTPUT_NAMES[kind]} a folder of its own{hint}"
        )
    ours = any((out / name).exists() for name in OUTPUT_MARKERS[kind])
    if kind == "study":
        ours = ours or any(
            f for name in OUTPUT_MARKERS["sweep"] for f in out.glob(f"ablation*/{name}")
        )
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise SystemExit(
            f"--out {out} is not empty and holds no earlier {_OUTPUT_NAMES[kind]}; its "
            f"{', '.join(generated)} folders would be replaced. Choose a new or empty directory."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / OUTPUT_MARKERS[kind][1]).write_text("", encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"--out {out} is not a writable directory ({exc.strerror})") from None
    if not resume:
        for sub in generated:
            shutil.rmtree(out / sub, ignore_errors=True)
    return ours


def run_sweep(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    executor: Executor,
    on_result: Callable[[int, Any], None] | None = None,
    on_error: Callable[[int, BaseException], Any] | None = None,
    stop_when: Callable[[Any], bool] | None = None,
    name_of: Callable[[Any], str] = str,
) -> tuple[list[Any], bool]:
    """fn(job) for every job on `executor`; returns (results in job order, interrupted).

    on_result(i, result) is called as each job finishes, in finishing order. A job whose call
    raises (a worker that died, say) gets on_error(i, exc) as its result, or re-raises when
    on_error is None; name_of(job) names it on stderr. After Ctrl-C, or a result for which
    stop_when(result) is true (a job that saw the Ctrl-C itself), queued jobs are not started,
    finished results are kept, the rest are None, and interrupted is True.
    """
    results: list[Any] = [None] * len(jobs)

    def finish(i: int, future: Future) -> bool:
        try:
            results[i] = future.result()
        except Exception as exc:
            if on_error is None:
                raise
            print(f"{name_of(jobs[i])} raised {type(exc).__name__}: {exc}", file=sys.stderr)
            results[i] = on_error(i, exc)
        if results[i] is not None and on_result is not None:
            on_result(i, results[i])
        return stop_when is not None and results[i] is not None and stop_when(results[i])

    try:
        if isinstance(executor, SerialExecutor):
            for i, job in enumerate(jobs):
                if finish(i, executor.submit(fn, job)):
                    return results, True
            return results, False
        futures = {executor.submit(fn, job): i for i, job in enumerate(jobs)}
        stopped = False
        for future in as_completed(futures):
            if future.cancelled():
                continue
            if finish(futures[future], future) and not stopped:
                stopped = True
                _cancel_pending(executor)
        return results, stopped
    except KeyboardInterrupt:
        _cancel_pending(executor)
        return results, True


def _cancel_pending(executor: Executor) -> None:
    """Stop `executor` from starting the jobs still queued (running ones see Ctrl-C themselves)."""
    if isinstance(executor, LocalPool):
        executor.stop()
        return
    try:
        executor.shutdown(wait=False, cancel_futures=True)
    except TypeError:  # a Dask client's executor cancels on shutdown(wait=False)
        executor.shutdown(wait=False)


__all__ = [
    "ExecutorError",
    "LocalPool",
    "OUTPUT_MARKERS",
    "SerialExecutor",
    "check_run_options",
    "check_scheduler_address",
    "default_workers",
    "open_executor",
    "prepare_output",
    "run_sweep",
]
