"""Save and restore a model, its optimiser and JSON metadata in one .npz file, without pickle.

Layout of the archive (written with np.savez, read with allow_pickle=False):
  "model/<dotted parameter name>"  every array of `model.state_dict()`
  "optim/<key>"                    every array of `optimizer.state_dict()` (step count included)
  "meta"                           a UTF-8 JSON document as a uint8 array:
                                   {"format": "tensorgrad-checkpoint", "version": 1, "meta": {...}}

Anything JSON can hold goes in the metadata: the step, a schedule's `state_dict()`, a loss
history, and the state of a NumPy Generator, which is a dict of ints:

    save(path, model, opt, step=k, schedule=sched.state_dict(), rng=rng.bit_generator.state)
    meta = load(path, model, opt)
    sched.load_state_dict(meta["schedule"])
    rng.bit_generator.state = meta["rng"]   # rng built with the same bit generator (PCG64)

A resumed run then continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from .nn import Module
from .optim import Optimizer

FORMAT = "tensorgrad-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or does not match the model or optimiser."""


def _json_default(value: Any):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(
        f"checkpoint metadata holds a {type(value).__name__}, which is not JSON-serialisable; "
        "store arrays through the model or convert them to lists"
    )


def save(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None, **meta) -> str:
    """Write model (and optimiser) arrays and JSON `meta` to `path` atomically; returns the path.

    The file is written under a temporary name in the same directory and moved into place with
    os.replace, so a crash never leaves a half-written checkpoint at `path`. The name is used as
    given (no ".npz" is appended).
    """
    path = os.fspath(path)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    header = {"format": FORMAT, "version": VERSION, "meta": meta}
    text = json.dumps(header, default=_json_default, allow_nan=True)
    arrays["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _read(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read every array and the metadata header of a checkpoint, or raise CheckpointError."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError as exc:
        raise CheckpointError(f"no checkpoint at {path}") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"{path}: a directory, not a checkpoint file") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from exc
    if not magic:
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or corrupt (empty file)")
    # NOTE: np.load takes anything that is neither a zip nor a .npy for a pickle; say what it is.
    if not magic.startswith(b"PK") and not magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: not a checkpoint (not a .npz archive)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a checkpoint archive (a bare .npy array)")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
        if "meta" not in arrays:
            raise CheckpointError(f"{path}: not a tensorgrad checkpoint (no 'meta' entry)")
        header = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError) as exc:
        raise CheckpointError(
            f"{path}: unreadable checkpoint, truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tensorgrad checkpoint (bad metadata header)")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {header.get('version')!r}, "
            f"this library reads {VERSION}"
        )
    return arrays, header.get("meta", {})


def _section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _compare(path: str, what: str, found: dict, expected: dict) -> None:
    """Raise CheckpointError listing missing/unexpected keys and shape or dtype mismatches."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        problems.append(f"missing {what} entries: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {what} entries: {', '.join(unexpected)}")
    for key, ref in expected.items():
        if key not in found:
            continue
        arr = found[key]
        if arr.shape != ref.shape:
            problems.append(f"{what} {key}: shape {arr.shape} in file but {ref.shape} expected")
        elif arr.dtype != ref.dtype:
            problems.append(f"{what} {key}: dtype {arr.dtype} in file but {ref.dtype} expected")
    if problems:
        raise CheckpointError(f"{path}: does not match: " + "; ".join(problems))


def load(path: str | os.PathLike, model: Module, optimizer: Optimizer | None = None) -> dict:
    """Restore `model` (and `optimizer`) in place from `path`; returns the saved metadata dict.

    Every key, shape and dtype is checked before anything is written; a truncated, corrupt or
    mismatched file raises CheckpointError naming the file and the problem.
    """
    path = os.fspath(path)
    arrays, meta = _read(path)

    unknown = [k for k in arrays if not k.startswith(("model/", "optim/"))]
    if unknown:
        raise CheckpointError(f"{path}: unknown entries {', '.join(unknown)}")
    model_arrays = _section(arrays, "model/")
    _compare(path, "model", model_arrays, model.state_dict())
    if optimizer is not None:
        optim_arrays = _section(arrays, "optim/")
        if not optim_arrays:
            raise CheckpointError(f"{path}: holds no optimiser state to load")
        _compare(path, "optimizer", optim_arrays, optimizer.state_dict())

    try:
        if optimizer is not None:
            optimizer.load_state_dict(optim_arrays)
        model.load_state_dict(model_arrays)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return meta


__all__ = ["CheckpointError", "load", "save"]
