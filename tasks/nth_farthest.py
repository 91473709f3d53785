"""Nth-farthest: name the vector that is n-th farthest from vector m (Santoro et al. 2018, §4.1).

Each of the K time steps shows one vector drawn from U(-1, 1)^d together with a one-hot label
(a random permutation of 0..K-1, so the label says nothing about the time position) and the
question, one-hot n and one-hot m, repeated at every step. The answer is the label of the
vector that is n-th farthest (n = 0 is the farthest) from the vector labelled m. With
n = K - 1 the answer is m itself, since m is at distance zero from itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Generated, TaskSpec, int_option, layout_of, verdict


def _check(opts: dict[str, Any]) -> dict[str, Any]:
    opts["K"] = int_option("nth_farthest", opts, "K", 2)
    opts["d"] = int_option("nth_farthest", opts, "d", 1)
    return opts


def _layout(opts: dict[str, Any]) -> dict[str, tuple[int, int]]:
    k = opts["K"]
    return layout_of(vector=opts["d"], label=k, n=k, m=k)


def _generate(batch: int, rng: np.random.Generator, opts: dict[str, Any]) -> Generated:
    k, d = opts["K"], opts["d"]
    rows = np.arange(batch)
    vectors = rng.uniform(-1.0, 1.0, size=(batch, k, d)).astype(np.float32)  # (B, K, d)
    labels = np.argsort(rng.random((batch, k)), axis=1)  # (B, K) a permutation per row
    n = rng.integers(0, k, size=batch)
    m = rng.integers(0, k, size=batch)

    # NOTE: distances are taken in float64 from the float32 vectors the model sees, so the
    # answer is exactly what those inputs imply; ties have probability zero, and a tie would be
    # broken towards the earlier time step by the stable sort.
    ref_pos = np.argmax(labels == m[:, None], axis=1)  # (B,) time step of vector m
    ref = vectors[rows, ref_pos].astype(np.float64)  # (B, d)
    dist = np.linalg.norm(vectors.astype(np.float64) - ref[:, None, :], axis=-1)  # (B, K)
    farthest_first = np.argsort(-dist, axis=1, kind="stable")  # (B, K)
    answer_pos = farthest_first[rows, n]
    targets = labels[rows, answer_pos].astype(np.int64)

    lay = _layout(opts)
    x = np.zeros((batch, k, d + 3 * k), dtype=np.float32)
    x[:, :, : lay["vector"][1]] = vectors
    steps = np.arange(k)
    x[rows[:, None], steps[None, :], lay["label"][0] + labels] = 1.0
    x[rows, :, lay["n"][0] + n] = 1.0
    x[rows, :, lay["m"][0] + m] = 1.0
    extra = {"n": n.astype(np.int64), "m": m.astype(np.int64), "answer_step": answer_pos}
    return x, targets, extra


def guess_levels(k: int) -> dict[str, float]:
    """Accuracy of predictors that know the question but cannot measure distances, for K=k."""
    # A predictor that has learnt only "n = K-1 means m itself" is right on those queries,
    # which are a fraction 1/K. On the others (n < K-1) the answer is never m and, because the
    # vectors are exchangeable and the labels random, it is uniform over the K-1 other labels:
    # guessing among them is right with probability 1/(K-1). In total
    #     1/K + (K-1)/K * 1/(K-1) = 2/K   (0.25 for K = 8),
    # the best any predictor can do without the geometry. Guessing among all K labels on the
    # other queries instead gives 1/K + (K-1)/K * 1/K = 2/K - 1/K^2.
    return {
        "guess_level": 2.0 / k,
        "guess_level_without_excluding_m": 2.0 / k - 1.0 / k**2,
    }


def _describe(opts: dict[str, Any]) -> dict[str, Any]:
    k, d = opts["K"], opts["d"]
    extra = {"layout": _layout(opts), **guess_levels(k)}
    return {
        "input_size": d + 3 * k,
        "num_classes": k,
        "seq_len": k,
        "chance_accuracy": 1.0 / k,
        "description": f"label of the n-th farthest of {k} vectors in [-1, 1]^{d} from vector m",
        "extra": extra,
    }


def _render(row: np.ndarray, target: Any, prediction: Any, opts: dict[str, Any]) -> str:
    lay = _layout(opts)
    vec = row[:, lay["vector"][0] : lay["vector"][1]]  # (K, d)
    labels = row[:, lay["label"][0] : lay["label"][1]].argmax(axis=1)
    n = int(row[0, lay["n"][0] : lay["n"][1]].argmax())
    m = int(row[0, lay["m"][0] : lay["m"][1]].argmax())
    ref = vec[int(np.argmax(labels == m))].astype(np.float64)
    dist = np.linalg.norm(vec.astype(np.float64) - ref, axis=1)
    shown = min(vec.shape[1], 4)
    lines = [
        f"question: label of the vector at farthest-rank n={n} (0 = farthest) from label m={m}"
    ]
    for t in range(vec.shape[0]):
        coords = " ".join(f"{v:+.2f}" for v in vec[t, :shown])
        more = " ..." if vec.shape[1] > shown else ""
        lines.append(f"  step {t}: label {labels[t]}  [{coords}{more}]  dist to m {dist[t]:.3f}")
    lines.append(verdict(target, prediction))
    return "\n".join(lines)


SPEC = TaskSpec(
    name="nth_farthest",
    description=__doc__.splitlines()[0],
    defaults={"K": 8, "d": 16},
    hard={"K": 12, "d": 16},
    check=_check,
    generate=_generate,
    describe=_describe,
    render=_render,
)


def nth_farthest_queries(inputs: np.ndarray, K: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Decode the question of each example: inputs (N, K, d + 3K) -> n (N,), m (N,) int64."""
    inputs = np.asarray(inputs)
    if inputs.ndim != 3 or inputs.shape[1] != K or inputs.shape[2] <= 3 * K:
        raise ValueError(
            f"nth_farthest inputs must be (N, K={K}, d + 3K) with d >= 1, got {inputs.shape}"
        )
    d = inputs.shape[2] - 3 * K
    n = inputs[:, 0, d + K : d + 2 * K].argmax(axis=1).astype(np.int64)
    m = inputs[:, 0, d + 2 * K :].argmax(axis=1).astype(np.int64)
    return n, m


def nth_farthest_hard_mask(inputs: np.ndarray, K: int = 8) -> np.ndarray:
    """Mask (N,) of the queries that need geometry (n < K-1) for inputs (N, K, d + 3K)."""
    n, _ = nth_farthest_queries(inputs, K)
    return n < K - 1
