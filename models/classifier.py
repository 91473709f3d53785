"""A sequence classifier: any recurrent core followed by an MLP head on its outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import tensorgrad as tg
from tensorgrad import Tensor
from tensorgrad.nn import MLP, Module

from ._kernels import linear, make_rng
from .core import RecurrentCore, as_input, unroll


class SequenceClassifier(Module):
    """Run `core` over x (B, T, D) and classify: -> logits (B, C), or (B, T, C) with per_step.

    The head is an MLP on the core's output (the last one, or every one with per_step=True):
    ReLU layers of sizes `mlp_hidden`, then a linear map to `num_classes` logits. The paper's
    head is four ReLU layers of 256. Parameters: `core.*` and `head.layers.*`. The dtype is the
    core's (`dtype`, if given, must agree with it).
    """

    def __init__(
        self,
        core: RecurrentCore,
        num_classes: int,
        mlp_hidden: Sequence[int] = (256, 256, 256, 256),
        per_step: bool = False,
        dtype=None,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        for attr in ("initial_state", "step", "output_size", "dtype"):
            if not hasattr(core, attr):
                raise TypeError(
                    f"SequenceClassifier: core {type(core).__name__} has no "
                    f"{attr!r}; it must follow the RecurrentCore protocol"
                )
        if num_classes < 1:
            raise ValueError(f"SequenceClassifier: num_classes must be >= 1, got {num_classes}")
        self.core = core
        self.num_classes = num_classes
        self.per_step = per_step
        if dtype is not None and np.dtype(dtype) != core.dtype:
            raise TypeError(
                f"SequenceClassifier: dtype {np.dtype(dtype)} != core dtype {core.dtype}"
            )
        self.dtype = core.dtype
        self.head = MLP(
            core.output_size, list(mlp_hidden), num_classes, dtype=core.dtype, rng=make_rng(rng)
        )

    def _head(self, x: Tensor) -> Tensor:
        layers = list(self.head.layers)
        for layer in layers[:-1]:
            x = linear(x, layer.weight, layer.bias, relu=True)
        return linear(x, layers[-1].weight, layers[-1].bias)

    def forward(self, x) -> Tensor:
        """x (B, T, D) -> logits (B, num_classes), or (B, T, num_classes) when per_step."""
        x = as_input(x, self.dtype, 3, "SequenceClassifier")
        if x.shape[1] == 0:
            raise ValueError(
                f"SequenceClassifier: needs at least one time step, got input shape {x.shape}"
            )
        run = getattr(self.core, "unroll", None)  # a core may run a whole sequence faster
        outputs, _ = run(x) if callable(run) else unroll(self.core, x)
        if self.per_step:
            return self._head(tg.stack(outputs, axis=1))  # (B, T, C)
        return self._head(outputs[-1])  # (B, C)

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, per_step={self.per_step}"


def head_parameters(in_features: int, mlp_hidden: Sequence[int], num_classes: int) -> int:
    """Number of weights in an MLP head in_features -> mlp_hidden... -> num_classes."""
    sizes = [in_features, *mlp_hidden, num_classes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def lstm_classifier_parameters(
    hidden_size: int, input_size: int, num_classes: int, mlp_hidden: Sequence[int]
) -> int:
    """Number of weights of SequenceClassifier(LSTM(input_size, hidden_size), ...)."""
    lstm = (input_size + hidden_size) * 4 * hidden_size + 4 * hidden_size
    return lstm + head_parameters(hidden_size, mlp_hidden, num_classes)


def matching_lstm_hidden(
    budget: int, input_size: int, num_classes: int, mlp_hidden: Sequence[int]
) -> int:
    """LSTM hidden size whose SequenceClassifier has the parameter count closest to `budget`."""
    if budget < 1:
        raise ValueError(f"matching_lstm_hidden: budget must be >= 1, got {budget}")
    best, hidden = 1, 1
    # the count grows with the hidden size, so walk up until it passes the budget
    while lstm_classifier_parameters(hidden, input_size, num_classes, mlp_hidden) < budget:
        hidden += 1
    for h in (hidden - 1, hidden):
        if h >= 1 and abs(
            lstm_classifier_parameters(h, input_size, num_classes, mlp_hidden) - budget
        ) <= abs(lstm_classifier_parameters(best, input_size, num_classes, mlp_hidden) - budget):
            best = h
    return best
