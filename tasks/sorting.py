"""Sorting: after seeing every item, name the item that has rank k in ascending order.

The first T steps each show one item: its scalar value from U(-1, 1) and its index as a one-hot.
The final step carries a query flag and the rank k as a one-hot (k = 0 is the smallest value).
The answer is the index of the item of rank k, so it is only defined once all items are seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Generated, TaskSpec, decode_one_hot, int_option, layout_of, verdict


def _check(opts: dict[str, Any]) -> dict[str, Any]:
    opts["items"] = int_option("sorting", opts, "items", 2)
    return opts


def _layout(opts: dict[str, Any]) -> dict[str, tuple[int, int]]:
    t = opts["items"]
    return layout_of(value=1, item=t, rank=t, query=1)


def _generate(batch: int, rng: np.random.Generator, opts: dict[str, Any]) -> Generated:
    t = opts["items"]
    rows = np.arange(batch)
    values = rng.uniform(-1.0, 1.0, size=(batch, t)).astype(np.float32)  # (B, T)
    rank = rng.integers(0, t, size=batch)

    # NOTE: equal float32 values are possible but rare; the stable sort then ranks the earlier
    # item first, which is the rule the task defines.
    ascending = np.argsort(values, axis=1, kind="stable")  # (B, T) item indices by value
    targets = ascending[rows, rank].astype(np.int64)

    lay = _layout(opts)
    x = np.zeros((batch, t + 1, 2 * t + 2), dtype=np.float32)
    x[:, :t, lay["value"][0]] = values
    x[:, np.arange(t), lay["item"][0] + np.arange(t)] = 1.0
    x[rows, t, lay["rank"][0] + rank] = 1.0
    x[:, t, lay["query"][0]] = 1.0
    return x, targets, {"rank": rank.astype(np.int64), "values": values}


def _describe(opts: dict[str, Any]) -> dict[str, Any]:
    t = opts["items"]
    return {
        "input_size": 2 * t + 2,
        "num_classes": t,
        "seq_len": t + 1,
        "chance_accuracy": 1.0 / t,
        "description": f"index of the item of rank k among {t} scalars, asked after all are seen",
        "extra": {"layout": _layout(opts)},
    }


def _render(row: np.ndarray, target: Any, prediction: Any, opts: dict[str, Any]) -> str:
    lay, t = _layout(opts), opts["items"]
    items = ", ".join(
        f"#{decode_one_hot(row[s], lay['item'])}={row[s, lay['value'][0]]:+.3f}" for s in range(t)
    )
    rank = decode_one_hot(row[t], lay["rank"])
    return "\n".join(
        [f"items: {items}", f"query: which item has rank {rank} (0 = smallest)?"]
        + [verdict(f"#{target}", None if prediction is None else f"#{prediction}")]
    )


SPEC = TaskSpec(
    name="sorting",
    description=__doc__.splitlines()[0],
    defaults={"items": 5},
    hard={"items": 10},
    check=_check,
    generate=_generate,
    describe=_describe,
    render=_render,
)
