"""Tracking: objects step left or right along a row of places; where is object j at the end?

The first J steps place object j at a random place (object one-hot + place one-hot). Each of the
next M steps moves one random object one place left or right (object one-hot + direction
one-hot). On a line (the default) an object at an end always steps inwards, so every step shown
is a real move and the final place is the start plus the steps; with wrap=True the P places form
a ring and an object leaving one end comes back at the other. The final step carries a query
flag and the object one-hot; the answer is that object's final place.

On a line the answer is not uniform (ends are visited less), so the chance level is the exact
probability of the most likely answer, computed from the walk's transition matrix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._base import Generated, TaskSpec, decode_one_hot, int_option, layout_of, put_one_hot, verdict

OBJECT_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _check(opts: dict[str, Any]) -> dict[str, Any]:
    opts["objects"] = int_option("tracking", opts, "objects", 1, len(OBJECT_NAMES))
    opts["places"] = int_option("tracking", opts, "places", 2)
    opts["moves"] = int_option("tracking", opts, "moves", 0)
    if not isinstance(opts["wrap"], (bool, np.bool_)):
        raise ValueError(f"tracking: option wrap must be True or False, got {opts['wrap']!r}")
    opts["wrap"] = bool(opts["wrap"])
    return opts


def _layout(opts: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return layout_of(object=opts["objects"], place=opts["places"], direction=2, query=1)


def _generate(batch: int, rng: np.random.Generator, opts: dict[str, Any]) -> Generated:
    n_obj, n_place, n_move = opts["objects"], opts["places"], opts["moves"]
    rows = np.arange(batch)
    start = rng.integers(0, n_place, size=(batch, n_obj))  # (B, J)
    mover = rng.integers(0, n_obj, size=(batch, n_move))  # (B, M)
    direction = rng.integers(0, 2, size=(batch, n_move))  # (B, M) 0 = left, 1 = right
    query = rng.integers(0, n_obj, size=batch)

    final = start.copy()  # (B, J)
    for m in range(n_move):
        now = final[rows, mover[:, m]]
        if not opts["wrap"]:
            direction[now == 0, m] = 1
            direction[now == n_place - 1, m] = 0
        final[rows, mover[:, m]] = (now + 2 * direction[:, m] - 1) % n_place
    targets = final[rows, query].astype(np.int64)

    lay = _layout(opts)
    seq = n_obj + n_move + 1
    x = np.zeros((batch, seq, n_obj + n_place + 3), dtype=np.float32)
    obj = np.concatenate(
        [np.broadcast_to(np.arange(n_obj), (batch, n_obj)), mover, query[:, None]], 1
    )
    place = np.concatenate([start, np.full((batch, n_move + 1), -1)], axis=1)
    turn = np.concatenate([np.full((batch, n_obj), -1), direction, np.full((batch, 1), -1)], axis=1)
    put_one_hot(x, lay["object"][0], obj)  # (B, T) indices
    put_one_hot(x, lay["place"][0], place)
    put_one_hot(x, lay["direction"][0], turn)
    x[:, -1, lay["query"][0]] = 1.0
    extra = {"query": query.astype(np.int64), "start": start, "final": final}
    return x, targets, extra


def answer_distribution(objects: int, places: int, moves: int, wrap: bool) -> np.ndarray:
    """Exact probability (places,) of each answer: start uniform, the queried object moves
    Binomial(moves, 1/objects) times, each move a step of the walk on the line or ring."""
    walk = np.zeros((places, places))  # walk[a, b] = P(next place b | place a)
    for a in range(places):
        if wrap:
            walk[a, (a - 1) % places] += 0.5
            walk[a, (a + 1) % places] += 0.5
        elif a in (0, places - 1):
            walk[a, 1 if a == 0 else places - 2] = 1.0
        else:
            walk[a, [a - 1, a + 1]] = 0.5
    at = np.full(places, 1.0 / places)
    total = np.zeros(places)
    q = 1.0 / objects
    for k in range(moves + 1):
        total += math.comb(moves, k) * q**k * (1 - q) ** (moves - k) * at
        at = at @ walk
    return total


def _describe(opts: dict[str, Any]) -> dict[str, Any]:
    j, p, m = opts["objects"], opts["places"], opts["moves"]
    answers = answer_distribution(j, p, m, opts["wrap"])
    where = f"a ring of {p}" if opts["wrap"] else f"a line of {p}"
    return {
        "input_size": j + p + 3,
        "num_classes": p,
        "seq_len": j + m + 1,
        "chance_accuracy": float(answers.max()),
        "description": f"final place of one of {j} objects after {m} +-1 steps on {where}",
        "extra": {"layout": _layout(opts), "answer_distribution": answers},
    }


def _render(row: np.ndarray, target: Any, prediction: Any, opts: dict[str, Any]) -> str:
    lay, n_obj = _layout(opts), opts["objects"]
    lines = []
    for s in range(row.shape[0]):
        name = OBJECT_NAMES[decode_one_hot(row[s], lay["object"])]
        if s < n_obj:
            lines.append(f"  {name} starts at place {decode_one_hot(row[s], lay['place'])}")
        elif s < row.shape[0] - 1:
            way = ("left", "right")[decode_one_hot(row[s], lay["direction"])]
            lines.append(f"  {name} steps {way}")
        else:
            shape = "ring" if opts["wrap"] else "line"
            lines.append(f"query: where is {name}? (places 0..{opts['places'] - 1} on a {shape})")
    lines.append(verdict(f"place {target}", None if prediction is None else f"place {prediction}"))
    return "\n".join(lines)


SPEC = TaskSpec(
    name="tracking",
    description=__doc__.splitlines()[0],
    defaults={"objects": 3, "places": 4, "moves": 6, "wrap": False},
    hard={"objects": 5, "places": 6, "moves": 16},
    check=_check,
    generate=_generate,
    describe=_describe,
    render=_render,
)
