"""Sequence reasoning tasks in pure NumPy: Nth-farthest, sorting, tracking, pair matching and
bAbI (synthetic stories here, the real text files in `tasks.babi`).

Every task yields inputs (N, T, D) float32 and class targets (N,) int64 answered after the final
step, with a TaskMeta that gives the sizes, the chance level and a text rendering of an example.
"""

from . import babi
from ._base import ReasoningData, Split, TaskMeta
from .nth_farthest import guess_levels, nth_farthest_hard_mask, nth_farthest_queries
from .registry import (
    TASKS,
    generate_reasoning_data,
    make_sampler,
    sample_batch,
    sample_split,
    task_meta,
    valid_options,
)

__all__ = [
    "TASKS",
    "ReasoningData",
    "Split",
    "TaskMeta",
    "babi",
    "generate_reasoning_data",
    "guess_levels",
    "make_sampler",
    "nth_farthest_hard_mask",
    "nth_farthest_queries",
    "sample_batch",
    "sample_split",
    "task_meta",
    "valid_options",
]
