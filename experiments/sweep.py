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

_ADDRESS = re.compile(
    r"^(?:(tcp|tls|inproc|ucx|ws|wss)://)?([^\s:/]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$"
)


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


def check_scheduler_address(address: str) -> str:
    """The Dask scheduler address `address` ("tcp://host:port" or "host:port"), checked.

    Raises ValueError naming the address when it is not of that form, before anything connects.
    """
    text = address.strip()
    match = _ADDRESS.match(text)
    if not match or not 0 < int(match.group(3)) < 65536:
        raise ValueError(
            f"scheduler address {address!r} is not of the form tcp://HOST:PORT (e.g. "
            "tcp://127.0.0.1:8786, as printed by `dask scheduler`)"
        )
    return text if match.group(1) else f"tcp://{text}"


def default_workers() -> int:
    """Worker processes for a local sweep: the CPU cores this process may use, at most 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


@contextmanager
def open_executor(
    workers: int | None = None, scheduler: str | None = None, connect_timeout: float = 30.0
) -> Iterator[Executor]:
    """An Executor for a sweep, shut down on exit.

    With `scheduler`, the executor of a `dask.distributed.Client` connected to that address;
    otherwise `workers` local processes (default: cores, at most 2), or this process alone
    when workers is 1.
    """
    if scheduler is not None:
        address = check_scheduler_address(scheduler)
        try:
            from distributed import Client
        except ImportError:
            raise RuntimeError(
                "a --scheduler sweep needs dask.distributed: pip install -e '.[dask]'"
            ) from None
        try:
            client = Client(address, timeout=connect_timeout)
        except OSError as exc:
            raise RuntimeError(
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
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def prepare_output(
    out: Path, *, ours: bool, resume: bool, generated: Sequence[str], what: str
) -> None:
    """Make `out` ready for a run: refuse a file or a foreign non-empty folder, check that it
    is writable, and (unless resuming) clear the `generated` subfolders of an earlier run.

    ours: whether `out` holds an earlier run of the same script; what: that run, in words.
    Raises SystemExit naming the folder, before anything is trained.
    """
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file, not a directory")
    if not resume and out.is_dir() and any(out.iterdir()) and not ours:
        raise SystemExit(
            f"--out {out} is not empty and holds no earlier {what}; its "
            f"{', '.join(generated)} folders would be replaced. Choose a new or empty directory."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"--out {out} is not a writable directory ({exc.strerror})") from None
    if not resume:
        for sub in generated:
            shutil.rmtree(out / sub, ignore_errors=True)


def _describe(job: Any) -> str:
    return str(job.get("name", job)) if isinstance(job, dict) else str(job)


def run_sweep(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    executor: Executor,
    on_result: Callable[[int, Any], None] | None = None,
    on_error: Callable[[int, BaseException], Any] | None = None,
) -> tuple[list[Any], bool]:
    """fn(job) for every job on `executor`; returns (results in job order, interrupted).

    on_result(i, result) is called as each job finishes, in finishing order. A job whose call
    raises (a worker that died, say) gets on_error(i, exc) as its result, or re-raises when
    on_error is None. After Ctrl-C, pending jobs are cancelled, finished results are kept,
    the rest are None, and interrupted is True.
    """
    results: list[Any] = [None] * len(jobs)

    def finish(i: int, future: Future) -> None:
        try:
            results[i] = future.result()
        except Exception as exc:
            if on_error is None:
                raise
            print(f"{_describe(jobs[i])} raised {type(exc).__name__}: {exc}", file=sys.stderr)
            results[i] = on_error(i, exc)
        if on_result is not None:
            on_result(i, results[i])

    try:
        if isinstance(executor, SerialExecutor):
            for i, job in enumerate(jobs):
                finish(i, executor.submit(fn, job))
        else:
            futures = {executor.submit(fn, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                finish(futures[future], future)
    except KeyboardInterrupt:
        _cancel_pending(executor)
        return results, True
    return results, False


def _cancel_pending(executor: Executor) -> None:
    """Stop `executor` from starting the jobs still queued (running ones see Ctrl-C themselves)."""
    try:
        executor.shutdown(wait=False, cancel_futures=True)
    except TypeError:  # a Dask client's executor cancels on shutdown(wait=False)
        executor.shutdown(wait=False)


__all__ = [
    "SerialExecutor",
    "check_scheduler_address",
    "default_workers",
    "open_executor",
    "prepare_output",
    "run_sweep",
]
