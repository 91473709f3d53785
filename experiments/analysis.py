"""Looking inside trained sequence classifiers: attention and memory over time, gradients
through time, the graph of one step, per-category accuracy and the examples a model gets wrong.

Everything here returns plain arrays and dicts; `experiments.figures` draws them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import tensorgrad as tg
from models import LSTM, LSTMCell, RelationalMemory, RelationalRNNCell, SequenceClassifier
from tensorgrad import Tensor, viz


def relational_memory_of(model: SequenceClassifier) -> RelationalMemory | None:
    """The RelationalMemory inside `model.core` (the core itself or a cell's memory), or None."""
    core = model.core
    if isinstance(core, RelationalMemory):
        return core
    if isinstance(core, RelationalRNNCell):
        return core.memory
    return None


def _memory_of_state(core, state):
    """The tensor that holds a core's memory: M (B, N, F), or c (B, H) of an LSTM."""
    if isinstance(core, RelationalMemory):
        return state
    if isinstance(core, RelationalRNNCell):
        return state[2]
    if isinstance(core, (LSTM, LSTMCell)):
        return state[1]
    raise TypeError(f"no memory tensor known for core {type(core).__name__}")


@dataclass
class MemoryTrace:
    """What a relational memory did on a batch, step by step.

    attention (T, blocks, B, H, N + 1, N + 1): rows are queries, columns keys, both ordered
    slots 0..N-1 then the input row. memory (T + 1, B, N, F): the state before each step and
    after the last.
    """

    attention: np.ndarray
    memory: np.ndarray

    def slot_updates(self) -> np.ndarray:
        """Norm of each slot's change at each step, (T, B, N)."""
        return np.linalg.norm(np.diff(self.memory, axis=0), axis=-1)

    def attention_received(self) -> np.ndarray:
        """Attention mass each key (slots, then input) receives per step, (T, B, N + 1).

        Averaged over blocks, heads and the N + 1 queries, so each row sums to 1.
        """
        return self.attention.mean(axis=(1, 3)).mean(axis=-2)


def trace_memory(model: SequenceClassifier, inputs: np.ndarray) -> MemoryTrace:
    """Run `model.core` on inputs (B, T, D) without a graph and record its relational memory."""
    memory = relational_memory_of(model)
    if memory is None:
        raise TypeError(f"{type(model.core).__name__} has no relational memory to trace")
    core = model.core
    inputs = np.asarray(inputs, dtype=core.dtype)
    if inputs.ndim != 3 or inputs.shape[2] != core.input_size:
        raise ValueError(f"trace_memory needs inputs (B, T, {core.input_size}), got {inputs.shape}")
    before = memory.record_attention
    memory.record_attention = True
    attention, states = [], []
    try:
        with tg.no_grad():
            state = core.initial_state(inputs.shape[0])
            states.append(_memory_of_state(core, state).data.copy())
            for t in range(inputs.shape[1]):
                _, state = core.step(Tensor(inputs[:, t]), state)
                attention.append(np.stack([np.asarray(w) for w in memory.last_attention]))
                states.append(_memory_of_state(core, state).data.copy())
    finally:
        memory.record_attention = before
    return MemoryTrace(np.stack(attention), np.stack(states))


def gradient_flow(model: SequenceClassifier, inputs: np.ndarray, targets: np.ndarray) -> dict:
    """Per-example gradient norms of the summed loss with respect to each step's input and state.

    Returns "input" (T, B) = |dL/dx_t|, "state" (T, B) = |dL/dS_t| for the memory after step t
    (the LSTM cell c_t, or the whole relational memory M_t), and for a relational memory
    "slots" (T, B, N) = |dL/dM_t[slot]|. Uses `Tensor.retain_grad` on the intermediate states.
    """
    core = model.core
    inputs = np.asarray(inputs, dtype=core.dtype)
    batch, steps, _ = inputs.shape
    xs = [Tensor(inputs[:, t], requires_grad=True) for t in range(steps)]
    state = core.initial_state(batch)
    memories = []
    for x_t in xs:
        out, state = core.step(x_t, state)
        memories.append(_memory_of_state(core, state).retain_grad())
    # NOTE: the mean loss times B is the summed loss, so each example's gradient is its own.
    loss = tg.cross_entropy(model.head(out), np.asarray(targets)) * float(batch)
    model.zero_grad()
    loss.backward()
    model.zero_grad()

    def norms(g: np.ndarray, keep: int) -> np.ndarray:
        return np.sqrt((g.astype(np.float64) ** 2).reshape(*g.shape[:keep], -1).sum(axis=-1))

    result = {
        "input": np.stack([norms(x.grad, 1) for x in xs]),
        "state": np.stack([norms(m.grad, 1) for m in memories]),
    }
    if memories[0].ndim == 3:
        result["slots"] = np.stack([norms(m.grad, 2) for m in memories])
    return result


def render_step_graph(model: SequenceClassifier, base: str | os.PathLike) -> list[str]:
    """Draw the computation graph of one step of `model.core` to `base`.dot (and .svg/.png).

    Runs one step on a single example of ones from the initial state. The PNG and SVG need the
    Graphviz `dot` program; the DOT text is always written. Returns the paths written.
    """
    core = model.core
    x_t = Tensor(np.ones((1, core.input_size), dtype=core.dtype))
    state = core.initial_state(1)
    out, new_state = core.step(x_t, state)
    names = {id(x_t): "x_t", id(out): "output"}
    memory = _memory_of_state(core, new_state)
    names[id(memory)] = "new memory M_t" if memory.ndim == 3 else "new cell c_t"
    old = _memory_of_state(core, state)
    names[id(old)] = "memory M_t-1" if old.ndim == 3 else "cell c_t-1"
    written = viz.render_graph(out, base, format="svg", model=core, names=names)
    if len(written) > 1:
        written += viz.render_graph(out, base, format="png", model=core, names=names)[1:]
    return sorted(set(written))


# ------------------------------------------------------------------------------ where it helps


def breakdown(task: str, meta, split) -> tuple[str, np.ndarray] | None:
    """A per-example category that explains difficulty: (description, values (N,)) or None.

    Nth-farthest: the rank n asked for; sorting: the rank asked; pair matching: the position of
    the asked pair; tracking: how often the asked object moved; bAbI: how many steps back the
    earliest supporting fact is.
    """
    extra = split.extra
    if task == "nth_farthest":
        return "n asked (0 = farthest)", np.asarray(extra["n"])
    if task == "sorting":
        return "rank asked (0 = smallest)", np.asarray(extra["rank"])
    if task == "pair_matching":
        return "position of the asked pair", np.asarray(extra["asked_pair"])
    if task == "tracking":
        lay = meta.extra["layout"]
        inputs = split.inputs
        obj = inputs[:, :, lay["object"][0] : lay["object"][1]]  # (N, T, J)
        is_move = inputs[:, :, lay["direction"][0] : lay["direction"][1]].any(axis=-1)  # (N, T)
        asked = obj[:, -1].argmax(axis=-1)  # (N,)
        moved = obj.argmax(axis=-1) == asked[:, None]  # (N, T)
        return "moves of the asked object", (moved & is_move).sum(axis=1)
    if "supporting" in extra:
        support = np.asarray(extra["supporting"])
        seq = split.inputs.shape[1]
        present = support >= 0
        if not present.any():
            return None
        first = np.where(present, support, seq).min(axis=1)
        # bAbI-text supporting positions count story slots; synthetic ones count steps.
        gap = np.where(present.any(axis=1), (seq - 1) - first, -1)
        return "steps back to the earliest supporting fact", gap
    return None


def accuracy_by(values: np.ndarray, correct: np.ndarray, min_count: int = 10) -> list[dict]:
    """Accuracy per distinct value: [{"value", "count", "accuracy"}] for values seen enough."""
    rows = []
    for v in np.unique(values):
        mask = values == v
        if mask.sum() >= min_count:
            rows.append(
                {"value": int(v), "count": int(mask.sum()), "accuracy": float(correct[mask].mean())}
            )
    return rows


def failure_cases(
    meta, split, predictions: dict[str, np.ndarray], per_kind: int = 1, seed: int = 0
) -> list[dict[str, Any]]:
    """Concrete test examples each model gets wrong, rendered with the task's renderer.

    predictions: {model label: predicted classes (N,)}. For two models A and B, picks up to
    `per_kind` examples of each outcome "A wrong, B right", "B wrong, A right" and "both
    wrong" (chosen at random with `seed`). Each case: index, kind, rendered text, answer and
    every model's prediction, and each model's answer line as the renderer words it.
    """
    labels = list(predictions)
    targets = np.asarray(split.targets)
    wrong = {k: np.asarray(p) != targets for k, p in predictions.items()}
    kinds = []
    if len(labels) >= 2:
        a, b = labels[:2]
        kinds = [
            (f"{a} wrong, {b} right", wrong[a] & ~wrong[b]),
            (f"{b} wrong, {a} right", wrong[b] & ~wrong[a]),
            ("both wrong", wrong[a] & wrong[b]),
        ]
    else:
        kinds = [(f"{labels[0]} wrong", wrong[labels[0]])]
    rng = np.random.default_rng(seed)
    cases = []
    for kind, mask in kinds:
        idx = np.nonzero(mask)[0]
        for i in rng.permutation(idx)[:per_kind]:
            i = int(i)
            cases.append(
                {
                    "index": i,
                    "kind": kind,
                    "text": meta.render(split.inputs[i], targets[i]),
                    "answer": int(targets[i]),
                    "predictions": {k: int(predictions[k][i]) for k in labels},
                    "verdicts": {
                        k: meta.render(split.inputs[i], targets[i], predictions[k][i]).splitlines()[
                            -1
                        ]
                        for k in labels
                    },
                }
            )
    return cases


__all__ = [
    "MemoryTrace",
    "accuracy_by",
    "breakdown",
    "failure_cases",
    "gradient_flow",
    "relational_memory_of",
    "render_step_graph",
    "trace_memory",
]
