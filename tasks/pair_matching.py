"""Pair matching: a list of key-value pairs, then a key; answer the value stored with that key.

Each of the first P steps shows one pair: a key one-hot and a value one-hot over a vocabulary of
V tokens. Keys within a sequence are distinct; values are drawn independently and may repeat.
The final step carries a query flag and one of the keys; the answer is its value token.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Generated, TaskSpec, decode_one_hot, int_option, layout_of, verdict


def _check(opts: dict[str, Any]) -> dict[str, Any]:
    opts["tokens"] = int_option("pair_matching", opts, "tokens", 2)
    opts["pairs"] = int_option("pair_matching", opts, "pairs", 1, opts["tokens"])
    return opts


def _layout(opts: dict[str, Any]) -> dict[str, tuple[int, int]]:
    v = opts["tokens"]
    return layout_of(key=v, value=v, query=1)


def _generate(batch: int, rng: np.random.Generator, opts: dict[str, Any]) -> Generated:
    n_pair, n_tok = opts["pairs"], opts["tokens"]
    rows = np.arange(batch)
    keys = np.argsort(rng.random((batch, n_tok)), axis=1)[:, :n_pair]  # (B, P) distinct keys
    values = rng.integers(0, n_tok, size=(batch, n_pair))  # (B, P)
    asked = rng.integers(0, n_pair, size=batch)
    targets = values[rows, asked].astype(np.int64)

    lay = _layout(opts)
    x = np.zeros((batch, n_pair + 1, 2 * n_tok + 1), dtype=np.float32)
    steps = np.arange(n_pair)
    x[rows[:, None], steps[None, :], lay["key"][0] + keys] = 1.0
    x[rows[:, None], steps[None, :], lay["value"][0] + values] = 1.0
    x[rows, n_pair, lay["key"][0] + keys[rows, asked]] = 1.0
    x[:, n_pair, lay["query"][0]] = 1.0
    return x, targets, {"asked_pair": asked.astype(np.int64)}


def _describe(opts: dict[str, Any]) -> dict[str, Any]:
    p, v = opts["pairs"], opts["tokens"]
    return {
        "input_size": 2 * v + 1,
        "num_classes": v,
        "seq_len": p + 1,
        "chance_accuracy": 1.0 / v,
        "description": f"value of the queried key among {p} key-value pairs over {v} tokens",
        "extra": {"layout": _layout(opts)},
    }


def _render(row: np.ndarray, target: Any, prediction: Any, opts: dict[str, Any]) -> str:
    lay, n_pair = _layout(opts), opts["pairs"]
    pairs = ", ".join(
        f"k{decode_one_hot(row[s], lay['key'])}->v{decode_one_hot(row[s], lay['value'])}"
        for s in range(n_pair)
    )
    key = decode_one_hot(row[n_pair], lay["key"])
    return "\n".join(
        [f"pairs: {pairs}", f"query: value of k{key}?"]
        + [verdict(f"v{target}", None if prediction is None else f"v{prediction}")]
    )


SPEC = TaskSpec(
    name="pair_matching",
    description=__doc__.splitlines()[0],
    defaults={"pairs": 4, "tokens": 6},
    hard={"pairs": 8, "tokens": 12},
    check=_check,
    generate=_generate,
    describe=_describe,
    render=_render,
)
