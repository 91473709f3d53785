"""Containers shared by every task: a split of examples, task metadata and option handling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Generated = tuple[np.ndarray, np.ndarray, dict[str, Any]]


@dataclass
class Split:
    """One split of a task: inputs (N, T, D) float32, targets (N,) or (N, T) int64.

    `extra` holds per-example side information (arrays or lists whose first axis is N, such as
    the query of each example or its supporting facts) and split-wide values.
    """

    inputs: np.ndarray
    targets: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.inputs.ndim != 3:
            raise ValueError(f"inputs must be (N, T, D), got shape {self.inputs.shape}")
        n, t = self.inputs.shape[:2]
        if self.targets.ndim not in (1, 2) or self.targets.shape[0] != n:
            raise ValueError(
                f"targets must be (N,) or (N, T) with N={n}, got shape {self.targets.shape}"
            )
        if self.targets.ndim == 2 and self.targets.shape[1] != t:
            raise ValueError(
                f"per-step targets {self.targets.shape} do not match inputs {self.inputs.shape}"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, index: Any) -> Split:
        """Rows `index` (any NumPy index over N) of inputs, targets and per-example extras."""
        n = len(self)
        rows = np.atleast_1d(np.arange(n)[index])
        extra: dict[str, Any] = {}
        for key, value in self.extra.items():
            if isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == n:
                extra[key] = value[rows]
            elif isinstance(value, list) and len(value) == n:
                extra[key] = [value[i] for i in rows]
            else:
                extra[key] = value
        return Split(self.inputs[rows], self.targets[rows], extra)

    def batches(
        self,
        batch_size: int,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (inputs (B, T, D), targets (B,) or (B, T)); shuffled when `rng` is given."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = rng.permutation(n) if rng is not None else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            rows = order[start : start + batch_size]
            yield self.inputs[rows], self.targets[rows]


@dataclass
class TaskMeta:
    """What a model needs to know about a task: sizes, chance level and a text renderer."""

    name: str
    input_size: int
    num_classes: int
    seq_len: int
    chance_accuracy: float
    target_per_step: bool
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    example: str = ""
    renderer: Callable[[np.ndarray, Any, Any], str] | None = field(
        default=None, repr=False, compare=False
    )

    def render(self, inputs_row: np.ndarray, target: Any, prediction: Any = None) -> str:
        """Readable text for one example: inputs_row (T, D), its target, optionally a prediction."""
        inputs_row = np.asarray(inputs_row)
        if inputs_row.shape != (self.seq_len, self.input_size):
            raise ValueError(
                f"{self.name}: expected one example of shape ({self.seq_len}, {self.input_size}),"
                f" got {inputs_row.shape}"
            )
        if self.renderer is None:
            raise NotImplementedError(f"task {self.name!r} has no renderer")
        return self.renderer(inputs_row, target, prediction)


@dataclass
class ReasoningData:
    """Train and test splits of one task with its metadata."""

    train: Split
    test: Split
    meta: TaskMeta


@dataclass(frozen=True)
class TaskSpec:
    """How one synthetic task is configured, generated, described and rendered."""

    name: str
    description: str
    defaults: Mapping[str, Any]
    hard: Mapping[str, Any]
    check: Callable[[dict[str, Any]], dict[str, Any]]
    generate: Callable[[int, np.random.Generator, dict[str, Any]], Generated]
    describe: Callable[[dict[str, Any]], dict[str, Any]]
    render: Callable[[np.ndarray, Any, Any, dict[str, Any]], str]


def resolve_options(spec: TaskSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults (or hard defaults when hard=True) overridden by `options`, validated."""
    valid = sorted({"hard", *spec.defaults})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for task {spec.name!r}; valid options: {valid}"
        )
    hard = options.get("hard", False)
    if not isinstance(hard, (bool, np.bool_)):
        raise ValueError(f"{spec.name}: option hard must be True or False, got {hard!r}")
    resolved = dict(spec.defaults)
    if hard:
        resolved.update(spec.hard)
    resolved.update({k: v for k, v in options.items() if k != "hard"})
    resolved = spec.check(resolved)
    resolved["hard"] = bool(hard)
    return resolved


def int_option(
    task: str, opts: Mapping[str, Any], name: str, low: int, high: int | None = None
) -> int:
    """Return opts[name] as an int after checking it is an integer in [low, high]."""
    value = opts[name]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{task}: option {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{task}: option {name} must be {bound}, got {value}")
    return int(value)


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A NumPy Generator from a Generator (returned as is), an integer seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, got {type(rng)}")


def put_one_hot(x: np.ndarray, start: int, index: np.ndarray) -> None:
    """Set x[..., start + index] = 1 in place for x (B, T, D), index (B, T); -1 means none."""
    b, t = np.nonzero(index >= 0)
    x[b, t, start + index[b, t]] = 1.0


def layout_of(**sizes: int) -> dict[str, tuple[int, int]]:
    """Feature slices (start, stop) of consecutive named blocks, in the order given."""
    layout, start = {}, 0
    for name, size in sizes.items():
        layout[name] = (start, start + size)
        start += size
    return layout


def decode_one_hot(row: np.ndarray, span: tuple[int, int]) -> int:
    """Index of the hot feature of row (D,) within span, or -1 when the block is all zero."""
    block = row[span[0] : span[1]]
    return int(np.argmax(block)) if block.any() else -1


def verdict(target: Any, prediction: Any) -> str:
    """Text for the answer line: the target and, when given, the prediction marked right/wrong."""
    if prediction is None:
        return f"answer: {target}"
    mark = "right" if np.array_equal(np.asarray(target), np.asarray(prediction)) else "WRONG"
    return f"answer: {target}   prediction: {prediction} ({mark})"
