"""The sweep runner: the same jobs give the same results in-process, on a local process pool
and on a Dask cluster (a LocalCluster on loopback)."""

import os
import socket

import pytest

from experiments import ablate
from experiments.runner import run_job, run_job_safely
from experiments.sweep import (
    LocalPool,
    SerialExecutor,
    check_scheduler_address,
    open_executor,
    run_sweep,
)


def _tiny_jobs(out) -> list[dict]:
    """Three short trainings: the tiny task's RMC with each gate style."""
    args = ablate.parse_args(
        ["--tiny", "--factors", "gate", "--no-lstm", "--steps", "30", "--out", str(out)]
    )
    plan = ablate.base_plan(args)
    return ablate.make_jobs(args, plan, ablate.variants(plan.memory, args.factor_list, False))


def _fingerprint(result: dict) -> dict:
    """What must not depend on where a job ran: losses, accuracies, every test prediction."""
    return {
        "name": result["name"],
        "status": result["status"],
        "test_acc": result["test_acc"],
        "test_loss": result["test_loss"],
        "losses": [h["loss"] for h in result["history"]],
        "val_accs": [h["val_acc"] for h in result["history"]],
        "predictions": result["predictions"],
    }


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    jobs = _tiny_jobs(out)
    return [_fingerprint(run_job(job, log=lambda line: None)) for job in jobs]


def test_tiny_jobs_learn(one_by_one):
    # pair matching with 2 pairs over 3 tokens: chance is 1/3
    assert len(one_by_one) == 3
    assert len({r["name"] for r in one_by_one}) == 3
    assert max(r["test_acc"] for r in one_by_one) > 0.45
    # the variants differ, so identical results below are not an accident of equal jobs
    assert len({r["test_loss"] for r in one_by_one}) == 3


def test_local_process_pool_matches_one_by_one(one_by_one, tmp_path):
    jobs = _tiny_jobs(tmp_path)
    seen = []
    with open_executor(workers=2) as executor:
        assert not isinstance(executor, SerialExecutor)
        results, interrupted = run_sweep(
            run_job_safely, jobs, executor, on_result=lambda i, r: seen.append(i)
        )
    assert not interrupted
    assert sorted(seen) == [0, 1, 2]
    assert [_fingerprint(r) for r in results] == one_by_one


def test_serial_executor_matches_one_by_one(one_by_one, tmp_path):
    jobs = _tiny_jobs(tmp_path)
    with open_executor(workers=1) as executor:
        assert isinstance(executor, SerialExecutor)
        results, _ = run_sweep(run_job_safely, jobs, executor)
    assert [_fingerprint(r) for r in results] == one_by_one


def test_dask_local_cluster_matches_one_by_one(one_by_one, tmp_path):
    if os.environ.get("CI"):
        import distributed  # CI installs the dask extra: this test must run there
    else:
        distributed = pytest.importorskip("distributed")
    jobs = _tiny_jobs(tmp_path)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with open_executor(scheduler=cluster.scheduler_address) as executor:
            results, interrupted = run_sweep(run_job_safely, jobs, executor)
    assert not interrupted
    assert [_fingerprint(r) for r in results] == one_by_one


# ------------------------------------------------------------------------------ the runner


def _square(x):
    return x * x


def _fails_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_results_come_back_in_job_order():
    with open_executor(workers=2) as executor:
        results, interrupted = run_sweep(_square, [5, 1, 4, 2], executor)
    assert results == [25, 1, 16, 4]
    assert not interrupted


def test_a_failing_job_becomes_its_on_error_result():
    with open_executor(workers=1) as executor:
        results, _ = run_sweep(
            _fails_on_three, [1, 3, 5], executor, on_error=lambda i, e: f"job {i}: {e}"
        )
    assert results == [1, "job 1: three", 5]
    with open_executor(workers=2) as executor:
        with pytest.raises(ValueError, match="three"):
            run_sweep(_fails_on_three, [1, 3, 5], executor)


@pytest.mark.parametrize(
    "address, expected",
    [
        ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
        ("10.0.0.5:8786", "tcp://10.0.0.5:8786"),
        ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ],
)
def test_scheduler_addresses_are_normalised(address, expected):
    assert check_scheduler_address(address) == expected


@pytest.mark.parametrize(
    "address", ["", "localhost", "tcp://host", "http://h:80", "inproc://x:1", "tls://h:8786"]
)
def test_malformed_scheduler_addresses_are_named(address):
    with pytest.raises(ValueError, match="is not of the form tcp://HOST:PORT"):
        check_scheduler_address(address)


@pytest.mark.parametrize("port", ["0", "99999"])
def test_a_scheduler_port_out_of_range_is_named(port):
    with pytest.raises(ValueError, match=f"port {port} is not between 1 and 65535"):
        check_scheduler_address(f"h:{port}")


def test_worker_count_must_be_positive():
    with pytest.raises(ValueError, match="workers must be >= 1, got -1"):
        with open_executor(workers=-1):
            pass


def test_an_unreachable_scheduler_is_reported():
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a loopback port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        RuntimeError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    ):
        with open_executor(scheduler=f"127.0.0.1:{port}", connect_timeout=2):
            pass


def _status(x):
    return {"job": x, "status": "interrupted" if x == 2 else "completed"}


def test_a_job_cut_short_by_ctrl_c_stops_a_serial_sweep():
    # in one process Ctrl-C reaches the training loop, which ends its run as "interrupted"
    with open_executor(workers=1) as executor:
        results, interrupted = run_sweep(
            _status, [1, 2, 3], executor, stop_when=lambda r: r["status"] == "interrupted"
        )
    assert interrupted
    assert [r and r["job"] for r in results] == [1, 2, None]


def _nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_a_stopped_pool_starts_none_of_its_queued_calls():
    import time

    pool = LocalPool(1)
    assert pool.submit(_square, 3).result() == 9  # the worker is up
    running = pool.submit(_nap, 1.0)
    time.sleep(0.3)  # the worker has taken the call
    queued = [pool.submit(_square, n) for n in range(4)]
    pool.stop()
    assert running.result() == 1.0
    # queued calls are cancelled, or (already handed to the worker) skipped with None
    assert all(f.cancelled() or f.result() is None for f in queued)
    pool.shutdown()


def test_a_finished_run_is_saved_whole_before_ctrl_c_takes_effect():
    import os
    import signal

    from experiments.runner import _interrupts_deferred

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with _interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("scored and saved after the Ctrl-C")
    assert steps == ["scored and saved after the Ctrl-C"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_job_whose_output_folder_is_not_visible_says_so(tmp_path):
    jobs = _tiny_jobs(tmp_path / "not-on-this-machine")
    jobs[0]["out_created"] = True  # as the scripts mark it once they have made --out
    with pytest.raises(
        FileNotFoundError, match="not-on-this-machine does not exist where this job"
    ):
        run_job(jobs[0], log=lambda line: None)
