"""Checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

A checkpoint ``step_000123`` is ``step_000123.safetensors`` (learner, optimiser moments, RNG state)
plus ``step_000123.json`` (step, optimiser hyper-parameters, config signature, metrics). The JSON is
written last, so a checkpoint without it is incomplete and ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from metainr.errors import CheckpointError


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); mkstemp's 0o600 would
    make configs, checkpoints and outputs unreadable to anyone else."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(f.fileno(), _new_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def signature_hash(signature: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "state_keys": {}}
    for idx, st in state["state"].items():
        meta["state_keys"][str(idx)] = sorted(st)
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    return tensors, meta


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {int(idx): {k: tensors[f"optim.{idx}.{k}"] for k in keys}
             for idx, keys in meta["state_keys"].items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: Path, step: int, learner: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, signature: dict[str, Any],
                    extra: dict[str, Any] | None = None, name: str | None = None) -> Path:
    from safetensors.torch import save

    directory = Path(directory)
    name = name or f"step_{step:07d}"
    tensors = {f"learner.{k}": v.detach().cpu().contiguous() for k, v in learner.state_dict().items()}
    meta: dict[str, Any] = {"step": step, "signature": signature_hash(signature), "extra": extra or {},
                            "format": 1}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    atomic_write_bytes(directory / f"{name}.safetensors", save(tensors))
    atomic_write_text(directory / f"{name}.json", json.dumps(meta, indent=1) + "\n")
    return directory / name


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (both files present), oldest first by step."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for meta in directory.glob("*.json"):
        if (directory / f"{meta.stem}.safetensors").exists():
            try:
                step = json.loads(meta.read_text())["step"]
            except (json.JSONDecodeError, KeyError):
                continue
            found.append((step, meta.stat().st_mtime, directory / meta.stem))
    return [p for _, _, p in sorted(found)]


def load_checkpoint(path: Path, learner: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    signature: dict[str, Any] | None, restore_rng: bool = True) -> dict[str, Any]:
    """Load into ``learner`` (and ``optimizer``); returns the JSON metadata."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path.with_suffix(".safetensors")))
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} is missing a file: {e.filename}") from None
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged: {e}") from None
    if signature is not None and meta.get("signature") != signature_hash(signature):
        raise CheckpointError(f"checkpoint {path} was made with a different network/method config "
                              "than this run; use the run's own config.json")
    state = {k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")}
    _ensure_masks(learner, state)
    try:
        learner.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this model: {first}") from None
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    if restore_rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta


def _ensure_masks(learner: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Masks are created by pruning during training, so a fresh learner may lack their buffers."""
    partition = getattr(learner, "partition", None)
    if partition is None:
        return
    prefix = "partition.masks."
    for key, value in state.items():
        if key.startswith(prefix) and key[len(prefix):] not in partition.masks:
            partition.masks[key[len(prefix):]] = value.clone()
