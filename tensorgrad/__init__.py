"""tensorgrad: a small reverse-mode autograd engine over NumPy.

>>> import numpy as np, tensorgrad as tg
>>> x = tg.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad
array([2., 4., 6.])
"""

from . import checkpoint, nn, optim, viz
from . import ops as _ops  # noqa: F401  (attaches the operators and methods to Tensor)
from .functional import cross_entropy, dropout, layer_norm, log_softmax, softmax
from .gradcheck import GradcheckError, gradcheck
from .ops import concat, maximum, split, stack, where
from .tensor import Tensor, is_grad_enabled, keep_freed_memory, no_grad, record

__all__ = [
    "checkpoint",
    "nn",
    "optim",
    "viz",
    "Tensor",
    "record",
    "no_grad",
    "is_grad_enabled",
    "keep_freed_memory",
    "concat",
    "stack",
    "split",
    "where",
    "maximum",
    "softmax",
    "log_softmax",
    "layer_norm",
    "cross_entropy",
    "dropout",
    "gradcheck",
    "GradcheckError",
]
