"""Modules: containers of Parameters with named, ordered registration and state dicts.

A module is a few declarative lines; attribute assignment registers Parameters and sub-modules:

    >>> import numpy as np
    >>> from tensorgrad import nn
    >>> class TwoLayer(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1 = nn.Linear(4, 8)
    ...         self.fc2 = nn.Linear(8, 2)
    ...     def forward(self, x):
    ...         return self.fc2(self.fc1(x).relu())
    >>> [name for name, _ in TwoLayer().named_parameters()]
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']

Initialisation is reproducible: every module takes `rng` (a Generator or an int seed); without
one it draws from a module-level generator that `manual_seed` resets (seed 0 at import).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .functional import layer_norm
from .tensor import Tensor

DTypeLike = Any

_default_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reset the generator that modules built without `rng` draw their initial weights from."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def _resolve_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if rng is None:
        return _default_rng
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"module dtype must be float32 or float64, got {dt}")
    return dt


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


class Parameter(Tensor):
    """A leaf Tensor that a Module registers and an optimiser updates; always requires grad.

    Float32 and float64 data keep their dtype; integer data becomes float64 like any Tensor.
    """

    def __init__(self, data, name: str | None = None):
        super().__init__(data, requires_grad=True, name=name)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class IncompatibleKeys(NamedTuple):
    """Names that `load_state_dict(strict=False)` found missing from, or unexpected in, a dict."""

    missing: list[str]
    unexpected: list[str]


class Module:
    """Base class: assigning a Parameter, Module or list of Modules to an attribute registers it.

    Registration order is kept, so `named_parameters()` walks the tree depth first in the order
    the attributes were first assigned. A plain list or tuple of Modules becomes a ModuleList.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "training", True)

    # ---------------------------------------------------------------------------- registration

    def __setattr__(self, name: str, value) -> None:
        children = self.__dict__.get("_children")
        if children is None:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__(); "
                f"call super().__init__() first in {type(self).__name__}.__init__"
            )
        if isinstance(value, (list, tuple)) and any(
            isinstance(v, (Module, Parameter)) for v in value
        ):
            value = _to_module_list(name, value)
        if isinstance(value, (Parameter, Module)):
            children[name] = value
        else:
            children.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._children.pop(name, None)
        object.__delattr__(self, name)

    # ---------------------------------------------------------------------------- traversal

    def named_modules(self, prefix: str = "") -> list[tuple[str, Module]]:
        """Return (dotted name, module) for this module ("") and every descendant, each once."""
        out: list[tuple[str, Module]] = []
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            out.append((name, module))
            subs = [(k, v) for k, v in module._children.items() if isinstance(v, Module)]
            for key, sub in reversed(subs):
                stack.append((f"{name}.{key}" if name else key, sub))
        return out

    def modules(self) -> list[Module]:
        """Return this module and every descendant module, each once, in registration order."""
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        """Return (dotted name, Parameter) in registration order; a shared one appears once.

        A parameter reachable under several names is listed under the first name met.
        """
        out: list[tuple[str, Parameter]] = []
        seen_params: set[int] = set()
        seen_modules: set[int] = set()
        stack: list[tuple[str, Module | Parameter]] = [(prefix, self)]
        while stack:
            name, node = stack.pop()
            if isinstance(node, Parameter):
                if id(node) not in seen_params:
                    seen_params.add(id(node))
                    out.append((name, node))
                continue
            if id(node) in seen_modules:
                continue
            seen_modules.add(id(node))
            for key, child in reversed(list(node._children.items())):
                stack.append((f"{name}.{key}" if name else key, child))
        return out

    def parameters(self) -> list[Parameter]:
        """Return every distinct Parameter in registration order."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """Return the number of scalar weights, counting a shared Parameter once."""
        return sum(p.data.size for p in self.parameters())

    # ---------------------------------------------------------------------------- modes, grads

    def train(self, mode: bool = True) -> Module:
        """Set `.training` on this module and all descendants; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Switch this module and all descendants to evaluation mode; returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set the gradient of every parameter to None."""
        for p in self.parameters():
            p.grad = None

    # ---------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return {dotted name: copy of the parameter's array} in registration order."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(
        self, state: Mapping[str, np.ndarray], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy arrays from `state` into the parameters in place, after checking all of them.

        Raises ValueError listing every missing or unexpected name (when strict), every shape
        mismatch (name, both shapes) and every dtype mismatch; nothing is cast and nothing is
        written unless every check passes. Returns the missing and unexpected names.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        problems: list[str] = []
        if strict and missing:
            problems.append(f"missing: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected: {', '.join(unexpected)}")

        arrays: dict[str, np.ndarray] = {}
        for name, p in own.items():
            if name not in state:
                continue
            value = state[name]
            arr = np.asarray(value.data if isinstance(value, Tensor) else value)
            if arr.shape != p.data.shape:
                problems.append(
                    f"{name}: shape {arr.shape} in state_dict but {p.data.shape} in model"
                )
            elif arr.dtype != p.data.dtype:
                problems.append(
                    f"{name}: dtype {arr.dtype} in state_dict but {p.data.dtype} in model "
                    "(cast it explicitly)"
                )
            else:
                arrays[name] = arr
        if problems:
            raise ValueError(
                f"load_state_dict into {type(self).__name__} failed: " + "; ".join(problems)
            )

        for name, arr in arrays.items():
            np.copyto(own[name].data, arr)
        return IncompatibleKeys(missing, unexpected)

    # ---------------------------------------------------------------------------- calling

    def forward(self, *args, **kwargs):
        """Compute the module's output; every subclass with an output defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---------------------------------------------------------------------------- summary

    def extra_repr(self) -> str:
        """One-line description of this module's configuration, shown in the repr tree."""
        return ""

    def __repr__(self) -> str:
        lines: list[str] = []
        seen_params: dict[int, str] = {}
        seen_modules: dict[int, str] = {}
        total = _summary(self, "", "", lines, seen_params, seen_modules)
        lines.append(f"total: {total:,} parameters")
        return "\n".join(lines)


def _summary(
    module: Module,
    path: str,
    indent: str,
    lines: list[str],
    seen_params: dict[int, str],
    seen_modules: dict[int, str],
) -> int:
    """Append the repr lines of `module` to `lines`; return the count of newly seen weights."""
    seen_modules[id(module)] = path
    head = f"{indent}{path.rsplit('.', 1)[-1] + ': ' if path else ''}{type(module).__name__}"
    head += f"({module.extra_repr()})"
    at = len(lines)
    lines.append(head)

    count = 0
    child_indent = indent + "  "
    for key, child in module._children.items():
        child_path = f"{path}.{key}" if path else key
        if isinstance(child, Parameter):
            line = f"{child_indent}{key}: {child.shape} {child.dtype}"
            if id(child) in seen_params:
                line += f" (shared with {seen_params[id(child)]})"
            else:
                seen_params[id(child)] = child_path
                count += child.data.size
                line += f" ({child.data.size:,})"
            lines.append(line)
        elif id(child) in seen_modules:
            lines.append(
                f"{child_indent}{key}: {type(child).__name__} "
                f"(shared with {seen_modules[id(child)] or 'root'})"
            )
        else:
            count += _summary(child, child_path, child_indent, lines, seen_params, seen_modules)
    lines[at] = f"{head}  [{count:,} parameters]"
    return count


def _to_module_list(name: str, items: Sequence) -> ModuleList:
    for i, item in enumerate(items):
        if isinstance(item, Parameter):
            raise TypeError(
                f"attribute {name!r}: a list of Parameters is not registered; assign each "
                f"Parameter to its own attribute (item {i})"
            )
        if not isinstance(item, Module):
            raise TypeError(
                f"attribute {name!r}: a list mixing Modules with {type(item).__name__} "
                f"(item {i}) cannot be registered"
            )
    return ModuleList(items)


class ModuleList(Module):
    """An indexable list of Modules registered under the names "0", "1", ..."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        """Register `module` under the next index; returns self."""
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._children)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append each module in turn; returns self."""
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._children.values()))

    def __getitem__(self, index: int) -> Module:
        items = list(self._children.values())
        return items[index]

    def extra_repr(self) -> str:
        return f"{len(self)} modules"


class Sequential(ModuleList):
    """Apply modules in order: Sequential(a, b)(x) == b(a(x)); names are "0", "1", ..."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        """Feed `x` through every module in turn; shapes are whatever the modules make of them."""
        for m in self:
            x = m(x)
        return x


def _check_last_dim(module: str, x, features: int) -> None:
    shape = np.shape(x.data if isinstance(x, Tensor) else x)
    if len(shape) == 0 or shape[-1] != features:
        raise ValueError(f"{module} expects input of shape (..., {features}), got {shape}")


class Linear(Module):
    """Affine map (..., in_features) -> (..., out_features): y = x @ weight + bias.

    weight (in_features, out_features) and bias (out_features,) start uniform in
    [-1/sqrt(in_features), 1/sqrt(in_features)].
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        self.in_features = _positive_int(in_features, "Linear in_features")
        self.out_features = _positive_int(out_features, "Linear out_features")
        dt = _float_dtype(dtype)
        gen = _resolve_rng(rng)
        bound = 1.0 / np.sqrt(self.in_features)
        w = gen.uniform(-bound, bound, (self.in_features, self.out_features))
        self.weight = Parameter(w.astype(dt))
        self.bias = (
            Parameter(gen.uniform(-bound, bound, self.out_features).astype(dt)) if bias else None
        )

    def forward(self, x) -> Tensor:
        """(..., in_features) -> (..., out_features)."""
        _check_last_dim("Linear", x, self.in_features)
        if not isinstance(x, Tensor):
            x = Tensor(x)
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        return f"{self.in_features} -> {self.out_features}{bias}"


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale and shift: (..., F)."""

    def __init__(self, features: int, eps: float = 1e-5, dtype: DTypeLike = np.float32):
        super().__init__()
        self.features = _positive_int(features, "LayerNorm features")
        self.eps = float(eps)
        dt = _float_dtype(dtype)
        self.weight = Parameter(np.ones(self.features, dtype=dt))
        self.bias = Parameter(np.zeros(self.features, dtype=dt))

    def forward(self, x) -> Tensor:
        """(..., features) -> (..., features)."""
        _check_last_dim("LayerNorm", x, self.features)
        if not isinstance(x, Tensor):
            x = Tensor(x)
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.features}, eps={self.eps:g}"


class Embedding(Module):
    """Look up rows of a (num, dim) table: integer ids (...) -> vectors (..., dim).

    The table starts as standard normal draws.
    """

    def __init__(
        self,
        num: int,
        dim: int,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        self.num = _positive_int(num, "Embedding num")
        self.dim = _positive_int(dim, "Embedding dim")
        gen = _resolve_rng(rng)
        self.weight = Parameter(
            gen.standard_normal((self.num, self.dim)).astype(_float_dtype(dtype))
        )

    def forward(self, ids) -> Tensor:
        """Integer ids of any shape (...) -> (..., dim)."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding ids must be an integer array, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num):
            bad = ids[(ids < 0) | (ids >= self.num)].flat[0]
            raise IndexError(f"Embedding id {bad} outside [0, {self.num})")
        return self.weight[ids]

    def extra_repr(self) -> str:
        return f"{self.num}, {self.dim}"


class ReLU(Module):
    """Elementwise max(x, 0); any shape."""

    def forward(self, x: Tensor) -> Tensor:
        """Same shape in and out."""
        return x.relu()


class Tanh(Module):
    """Elementwise tanh; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        """Same shape in and out."""
        return x.tanh()


class Sigmoid(Module):
    """Elementwise logistic sigmoid; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        """Same shape in and out."""
        return x.sigmoid()


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": lambda x: x.relu(),
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
}


class MLP(Module):
    """Stack of Linear layers with an activation after each hidden one: (..., in) -> (..., out).

    With `out_features` the last layer maps to it and has no activation; without it the output
    is the last hidden layer's activation, (..., hidden[-1]). Layers are `layers.0`, `layers.1`...
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int | None = None,
        activation: str = "relu",
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | int | None = None,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"MLP activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        hidden = [_positive_int(h, "MLP hidden size") for h in hidden]
        if out_features is None and not hidden:
            raise ValueError("MLP needs at least one hidden size or an out_features")
        sizes = [in_features, *hidden] + ([out_features] if out_features is not None else [])
        gen = _resolve_rng(rng)
        self.activation = activation
        self.activate_last = out_features is None
        self.layers = ModuleList(
            Linear(a, b, dtype=dtype, rng=gen) for a, b in itertools.pairwise(sizes)
        )

    def forward(self, x) -> Tensor:
        """(..., in_features) -> (..., out_features or hidden[-1])."""
        act = _ACTIVATIONS[self.activation]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.activate_last:
                x = act(x)
        return x

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


__all__ = [
    "MLP",
    "Embedding",
    "IncompatibleKeys",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "manual_seed",
]
