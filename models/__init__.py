"""Sequence models built on tensorgrad: LSTM, multi-head attention, the relational memory core.

Every recurrent model follows one protocol (`models.core.RecurrentCore`): `initial_state(B)`,
`step(x_t, state) -> (out_t, new_state)` and `output_size`, so `SequenceClassifier` can run any
of them. Models take `dtype` (float32 by default, float64 for gradient checks) and `rng` (a
Generator or an int seed) for reproducible initialisation.
"""

from .attention import MultiHeadAttention, multi_head_attention
from .classifier import SequenceClassifier, matching_lstm_hidden
from .core import RecurrentCore
from .lstm import LSTM, LSTMCell
from .relational_memory import RelationalMemory
from .relational_rnn import RelationalRNNCell

__all__ = [
    "LSTM",
    "LSTMCell",
    "MultiHeadAttention",
    "RecurrentCore",
    "RelationalMemory",
    "RelationalRNNCell",
    "SequenceClassifier",
    "matching_lstm_hidden",
    "multi_head_attention",
]
