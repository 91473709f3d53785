"""What the comparison trains: tasks, budgets and model sizes for the quick, full and tiny runs.

Budget rules, the same for every model on a task: Adam at one learning rate with the same
warm-up schedule, one batch size, one step count, one seed list, the same MLP classifier head,
and parameter counts within 10% (the LSTM's hidden size is chosen to match the RMC's count).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import tasks

MODEL_LABELS = {
    "lstm": "LSTM",
    "rmc": "relational RNN (RMC)",
    "rrnn": "relational RNN cell (LSTM + RMC)",
}


@dataclass(frozen=True)
class MemorySize:
    """Relational memory: slots x heads x head size, attention blocks, gate style, residuals.

    gate: "unit" (a gate per feature), "memory" (one per slot) or None (no gating); residual:
    the skip connections around attention and the MLP.
    """

    slots: int = 4
    heads: int = 4
    head_size: int = 16
    blocks: int = 1
    gate: str | None = "unit"
    residual: bool = True

    def describe(self) -> str:
        """The size in words, naming the gate and residuals only where they differ from default."""
        text = f"{self.slots} slots x {self.heads} heads x {self.head_size}, {self.blocks} block(s)"
        if self.gate != "unit":
            text += f", gate {self.gate or 'none'}"
        if not self.residual:
            text += ", no residual"
        return text


@dataclass(frozen=True)
class TaskPlan:
    """One task of the study and its training budget (shared by every model).

    task: a name from tasks.TASKS, or "babi_qa<k>" for real bAbI task k. options: generator
    options. hard: options of a harder held-out test variant with the same input encoding
    (tested on the trained models), with a label, or None. fresh: a new batch every step;
    otherwise a fixed training set of n_train examples (real bAbI: the files' 1k examples
    less the n_val held out for validation).
    """

    key: str
    label: str
    short: str
    task: str
    options: dict = field(default_factory=dict)
    hard: dict | None = None
    hard_label: str = ""
    fresh: bool = True
    n_train: int = 0
    n_val: int = 1000
    n_test: int = 2000
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 200
    clip_norm: float = 5.0
    eval_every: int = 250
    target_accuracy: float | None = 0.99
    threshold: float = 0.6
    memory: MemorySize = MemorySize()
    mlp_hidden: tuple[int, ...] = (128, 128)
    models: tuple[str, ...] = ("lstm", "rmc")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of the plan."""
        out = asdict(self)
        out["mlp_hidden"] = list(self.mlp_hidden)
        out["models"] = list(self.models)
        return out

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TaskPlan:
        """Inverse of to_dict."""
        d = dict(d)
        d["memory"] = MemorySize(**d["memory"])
        d["mlp_hidden"] = tuple(d["mlp_hidden"])
        d["models"] = tuple(d["models"])
        return TaskPlan(**d)


@dataclass(frozen=True)
class SampleEfficiencyPlan:
    """Test accuracy against training-set size: fixed sets of each size, one budget."""

    task: TaskPlan
    sizes: tuple[int, ...]
    seeds: tuple[int, ...]


def _describe_sizes(task: str, options: Mapping[str, Any]) -> str:
    """The sizes of synthetic `task` under resolved `options`, in words for a label."""
    o = options
    if task == "sorting":
        return f"rank of {o['items']} scalars"
    if task == "tracking":
        track = "ring" if o["wrap"] else "line"
        return f"{o['objects']} objects, {o['places']} places on a {track}, {o['moves']} moves"
    if task == "pair_matching":
        return f"{o['pairs']} pairs over {o['tokens']} tokens"
    if task == "babi_synthetic":
        return (
            f"{o['people']} people, {o['objects']} objects, {o['places']} places, "
            f"{o['distractors']} distractors"
        )
    if task == "nth_farthest":
        return f"K={o['K']} vectors in {o['d']}-D"
    return ", ".join(f"{k}={v}" for k, v in o.items() if k != "hard")


def _hard_variant_label(p: TaskPlan, options: Mapping[str, Any]) -> str:
    """Label of a plan trained on `options` (its task's hard sizes), naming the sizes trained."""
    resolved = tasks.task_meta(p.task, **options).options
    # the bAbI-style label names its question type only; the others lead with the task's name
    base = p.label if p.task == "babi_synthetic" else p.label.split(",")[0]
    return f"{base}, {_describe_sizes(p.task, resolved)} (hard variant)"


def _babi_synthetic(facts: int, steps: int, hard_distractors: int) -> TaskPlan:
    word = {1: "one", 2: "two", 3: "three"}[facts]
    return TaskPlan(
        key=f"babi_synthetic_{facts}",
        label=f"bAbI-style QA, {word} supporting fact{'s' if facts > 1 else ''}",
        short=f"bAbI-style {facts}",
        task="babi_synthetic",
        options={"facts": [facts]},
        hard={"facts": [facts], "distractors": hard_distractors},
        hard_label=f"{hard_distractors} distractors",
        steps=steps,
    )


def _babi_real(task_id: int, max_sentences: int, steps: int) -> TaskPlan:
    # Known gap: with 900 training stories both models memorise qa2/qa3 at these budgets and
    # stay near chance on test, as the bAbI paper's LSTM did; no cheap budget fixed that.
    names = {1: "single supporting fact", 2: "two supporting facts", 3: "three supporting facts"}
    return TaskPlan(
        key=f"babi_qa{task_id}",
        label=f"bAbI qa{task_id} ({names[task_id]}, last {max_sentences} sentences)",
        short=f"bAbI qa{task_id}",
        task=f"babi_qa{task_id}",
        options={"max_sentences": max_sentences},
        fresh=False,
        n_test=1000,
        steps=steps,
        eval_every=100,
        n_val=200,
        threshold=0.4,
    )


def quick_plan() -> list[TaskPlan]:
    """The default study: about ten minutes on two cores, every task well above chance."""
    return [
        TaskPlan(
            key="nth_farthest_k3",
            label="Nth-farthest, K=3 vectors in 4-D",
            short="Nth-far K=3",
            task="nth_farthest",
            options={"K": 3, "d": 4},
            steps=8000,
            batch_size=128,
            target_accuracy=None,
            eval_every=250,
            threshold=0.9,
        ),
        TaskPlan(
            key="sorting",
            label="Sorting, rank of 5 scalars",
            short="sorting",
            task="sorting",
            steps=1500,
        ),
        TaskPlan(
            key="tracking",
            label="Tracking, 2 objects on a ring of 4, 4 moves",
            short="tracking",
            task="tracking",
            options={"objects": 2, "places": 4, "moves": 4, "wrap": True},
            steps=1500,
            hard={"moves": 8},
            hard_label="8 moves",
        ),
        TaskPlan(
            key="pair_matching",
            label="Pair matching, 4 pairs over 6 tokens",
            short="pair matching",
            task="pair_matching",
            steps=1500,
            hard={"pairs": 6},
            hard_label="6 pairs",
        ),
        _babi_synthetic(1, 1200, 10),
        _babi_synthetic(2, 1500, 10),
        _babi_synthetic(3, 1500, 10),
        _babi_real(1, 10, 800),
        _babi_real(2, 10, 400),
        _babi_real(3, 10, 400),
    ]


def quick_sample_efficiency(seeds: tuple[int, ...]) -> SampleEfficiencyPlan:
    """A cheap sample-efficiency study: fixed training sets of three sizes, one seed."""
    base = next(p for p in quick_plan() if p.key == "babi_synthetic_2")
    task = replace(
        base,
        key="sample_efficiency",
        fresh=False,
        steps=1000,
        hard=None,
        target_accuracy=None,
        eval_every=200,
    )
    return SampleEfficiencyPlan(task, (250, 1000, 4000), seeds[:1])


# the quick study's synthetic tasks besides Nth-farthest, in report order
_SYNTHETIC_REST = (
    "sorting",
    "tracking",
    "pair_matching",
    "babi_synthetic_1",
    "babi_synthetic_2",
    "babi_synthetic_3",
)


def full_plan() -> list[TaskPlan]:
    """The larger study: Nth-farthest up to the paper's 8 x 16, longer budgets, the relational
    RNN cell as a third model, and every synthetic task's own hard variant trained too."""
    models = ("lstm", "rmc", "rrnn")
    quick = {p.key: p for p in quick_plan()}
    plans = [
        replace(quick["nth_farthest_k3"], steps=20000, models=models),
        TaskPlan(
            key="nth_farthest_k4",
            label="Nth-farthest, K=4 vectors in 4-D",
            short="Nth-far K=4",
            task="nth_farthest",
            options={"K": 4, "d": 4},
            steps=40000,
            batch_size=128,
            target_accuracy=None,
            eval_every=500,
            threshold=0.9,
            models=models,
        ),
        TaskPlan(
            key="nth_farthest_k8",
            label="Nth-farthest, K=8 vectors in 16-D (paper)",
            short="Nth-far K=8",
            task="nth_farthest",
            options={"K": 8, "d": 16},
            steps=100000,
            batch_size=128,
            target_accuracy=None,
            eval_every=1000,
            threshold=0.9,
            memory=MemorySize(slots=8, heads=8, head_size=16),
            mlp_hidden=(256, 256, 256, 256),
            models=models,
        ),
    ]
    for key in _SYNTHETIC_REST:
        p = quick[key]
        plans.append(replace(p, steps=4 * p.steps, models=models))
    for key in _SYNTHETIC_REST:
        p = quick[key]
        # the task's own hard sizes; only the bAbI-style question type is kept
        hard_opts = {"hard": True, **{k: v for k, v in p.options.items() if k == "facts"}}
        plans.append(
            replace(
                p,
                key=f"{key}_hard",
                label=_hard_variant_label(p, hard_opts),
                short=f"{p.short} hard",
                options=hard_opts,
                hard=None,
                steps=8 * p.steps,
                models=models,
            )
        )
    for task_id, window, steps in ((1, 20, 3200), (2, 30, 2400), (3, 30, 2400)):
        plans.append(replace(_babi_real(task_id, window, steps), models=models))
    return plans


def full_sample_efficiency(seeds: tuple[int, ...]) -> SampleEfficiencyPlan:
    """Sample efficiency over six training-set sizes and every seed."""
    quick = quick_sample_efficiency(seeds)
    task = replace(quick.task, steps=3000, models=("lstm", "rmc"))
    return SampleEfficiencyPlan(task, (250, 500, 1000, 2000, 4000, 8000), seeds)


def tiny_plan() -> list[TaskPlan]:
    """Seconds-long smoke run: two easy tasks, tiny models, a few hundred steps."""
    small = MemorySize(slots=2, heads=2, head_size=8)
    return [
        TaskPlan(
            key="pair_matching",
            label="Pair matching, 2 pairs over 3 tokens",
            short="pair matching",
            task="pair_matching",
            options={"pairs": 2, "tokens": 3},
            hard={"pairs": 3},
            hard_label="3 pairs",
            steps=150,
            batch_size=32,
            lr=3e-3,
            warmup=10,
            eval_every=50,
            n_val=200,
            n_test=200,
            memory=small,
            mlp_hidden=(32,),
            threshold=0.6,
        ),
        TaskPlan(
            key="nth_farthest_k2",
            label="Nth-farthest, K=2 vectors in 2-D",
            short="Nth-far K=2",
            task="nth_farthest",
            options={"K": 2, "d": 2},
            steps=60,
            batch_size=32,
            lr=3e-3,
            warmup=10,
            eval_every=30,
            n_val=200,
            n_test=200,
            memory=small,
            mlp_hidden=(32,),
            threshold=0.6,
        ),
    ]


def tiny_sample_efficiency(seeds: tuple[int, ...]) -> SampleEfficiencyPlan:
    """Two small training sets of the tiny pair-matching task."""
    task = replace(
        tiny_plan()[0],
        key="sample_efficiency",
        fresh=False,
        steps=40,
        hard=None,
        target_accuracy=None,
        eval_every=20,
    )
    return SampleEfficiencyPlan(task, (64, 256), seeds[:1])


__all__ = [
    "MODEL_LABELS",
    "MemorySize",
    "SampleEfficiencyPlan",
    "TaskPlan",
    "full_plan",
    "full_sample_efficiency",
    "quick_plan",
    "quick_sample_efficiency",
    "tiny_plan",
    "tiny_sample_efficiency",
]
