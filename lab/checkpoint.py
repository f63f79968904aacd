"""Checkpoints: written atomically, read safely (tensors and plain data only), restored onto any device.

A checkpoint holds the model, the optimizer, the schedule state, the iteration, the elapsed time, the RNG states
and the current logging window's accumulators (so a run stopped mid-window logs exactly what an uninterrupted one
would). It is loaded with `weights_only=True` onto the CPU first: a file holding anything else (a pickled
callable could run code) is refused, and RNG states stay CPU byte tensors whatever the training device.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

import torch
from .errors import CheckpointError  # noqa: F401 (re-exported)

CHECKPOINT = "checkpoint.pt"
FORMAT = 2          # 2: with the logging window's accumulators; 1 (no "format" key): without
REQUIRED = ("model", "optimizer", "step", "schedule", "elapsed_s", "rng")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: the state goes to a temporary file, is flushed to disk, then renamed over `path`, so a
    crash or a kill mid-write leaves the previous checkpoint intact. A failed write (a full disk) removes the
    temporary file and raises CheckpointError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, (OSError, RuntimeError)):
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
            raise CheckpointError(f"checkpoint {path} could not be saved: {cause}") from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, every tensor on the CPU. CheckpointError when the file holds objects other than
    tensors and plain data (it is never unpickled), is truncated or unreadable, or is not a lab checkpoint."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data, so it is not loaded (loading it "
            f"could run code)" + (f": {detail}" if detail else "")
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # torch reports truncated or foreign files as RuntimeError, KeyError, EOFError ...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, or not a checkpoint): "
                              f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a Degradation Lab checkpoint (it holds a {type(state).__name__})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a Degradation Lab checkpoint (missing: {', '.join(missing)})")
    return state


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed from (None when it can)."""
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        return str(exc)
    return None


def rng_state(device: torch.device) -> dict:
    """The RNG states a resumed run needs: the CPU generator's and, on a GPU, that device's."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(rng: dict, device: torch.device) -> None:
    """Restore RNG states saved by `rng_state`. The generators want CPU byte tensors, wherever the states were
    loaded to."""
    torch.set_rng_state(_cpu_bytes(rng["cpu"]))
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(_cpu_bytes(rng["cuda"]), device)


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.uint8)


def restore(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> dict:
    """Load the checkpoint at `path` into `net` and `optimizer` (on `device`) and restore the RNG states;
    returns the checkpoint's other entries (step, schedule, elapsed_s, window, ...). CheckpointError when the
    file is unsafe, unreadable or belongs to another model."""
    state = load_checkpoint(path)
    try:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # moves the momentum buffers to the parameters' device
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this run's model: {_first_line(exc)}") from None
    restore_rng(state["rng"], device)
    return state
