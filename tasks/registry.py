"""Entry points for the synthetic tasks: fixed train/test sets and fresh batches on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import babi_synthetic, nth_farthest, pair_matching, sorting, tracking
from ._base import ReasoningData, Split, TaskMeta, TaskSpec, as_generator, resolve_options

_SPECS: dict[str, TaskSpec] = {
    module.SPEC.name: module.SPEC
    for module in (nth_farthest, sorting, tracking, pair_matching, babi_synthetic)
}
TASKS: tuple[str, ...] = tuple(_SPECS)


def _spec(task: str) -> TaskSpec:
    if task not in _SPECS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {list(TASKS)}")
    return _SPECS[task]


def _check_count(name: str, value: int, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _meta(spec: TaskSpec, opts: dict[str, Any]) -> TaskMeta:
    def render(row: np.ndarray, target: Any, prediction: Any = None) -> str:
        return spec.render(row, target, prediction, opts)

    return TaskMeta(
        name=spec.name, target_per_step=False, options=dict(opts), renderer=render,
        **spec.describe(opts),
    )  # fmt: skip


def _split(spec: TaskSpec, n: int, rng: np.random.Generator, opts: dict[str, Any]) -> Split:
    inputs, targets, extra = spec.generate(n, rng, opts)
    return Split(inputs, targets, extra)


def valid_options(task: str) -> dict[str, Any]:
    """Every option of `task` with its default value (hard=False selects these defaults)."""
    return {"hard": False, **_spec(task).defaults}


def task_meta(task: str, **options: Any) -> TaskMeta:
    """Metadata of `task` under `options`, with `example` rendered from a sample drawn at seed 0."""
    spec = _spec(task)
    opts = resolve_options(spec, options)
    meta = _meta(spec, opts)
    first = _split(spec, 1, np.random.default_rng(0), opts)
    meta.example = meta.render(first.inputs[0], first.targets[0])
    return meta


def generate_reasoning_data(
    task: str, n_train: int, n_test: int, seed: int = 0, **options: Any
) -> ReasoningData:
    """Train and test splits of `task`: inputs (N, T, D) float32, targets (N,) int64, plus meta.

    Train and test come from the same distribution through independent random streams spawned
    from `seed`, so the test set does not depend on n_train. Pass hard=True for the larger
    variant, or any size option explicitly; `valid_options(task)` lists them.
    """
    spec = _spec(task)
    opts = resolve_options(spec, options)
    n_train = _check_count("n_train", n_train, 1)
    n_test = _check_count("n_test", n_test, 0)
    train_seq, test_seq = np.random.SeedSequence(_check_count("seed", seed, 0)).spawn(2)
    train = _split(spec, n_train, np.random.default_rng(train_seq), opts)
    test = _split(spec, n_test, np.random.default_rng(test_seq), opts)

    meta = _meta(spec, opts)
    meta.example = meta.render(train.inputs[0], train.targets[0])
    return ReasoningData(train=train, test=test, meta=meta)


def sample_split(
    task: str, n: int, rng: np.random.Generator | int | None = None, **options: Any
) -> Split:
    """A fresh Split of n examples of `task` (inputs (n, T, D), targets (n,), extra) from rng."""
    spec = _spec(task)
    opts = resolve_options(spec, options)
    return _split(spec, _check_count("n", n, 0), as_generator(rng), opts)


def sample_batch(
    task: str, batch_size: int, rng: np.random.Generator | int | None = None, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """A fresh batch for online training: inputs (B, T, D) float32, targets (B,) int64."""
    return make_sampler(task, **options)(batch_size, rng)


def make_sampler(
    task: str, **options: Any
) -> Callable[[int, np.random.Generator | int | None], tuple[np.ndarray, np.ndarray]]:
    """Options checked once; returns sample(batch_size, rng) -> (inputs (B, T, D), targets (B,))."""
    spec = _spec(task)
    opts = resolve_options(spec, options)

    def sample(
        batch_size: int, rng: np.random.Generator | int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets, _ = spec.generate(
            _check_count("batch_size", batch_size, 1), as_generator(rng), opts
        )
        return inputs, targets

    return sample
