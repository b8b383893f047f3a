"""The explicit partition of a field's parameters (after Functa): shared, adapted init, learning rates.

- ``shared``: meta-learned, identical for every signal, never adapted in the inner loop.
- ``init``: meta-learned start values theta_0 of the per-signal (adapted) parameters.
- ``fixed_init``: start values of adapted parameters that are not meta-learned (modulations start at 0).
- ``lrs``: Meta-SGD learning rates, one per adapted entry, or a fixed scalar.
Fixed binary ``masks`` (buffers) multiply weights in the forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from metainr.fields.base import Field


class _BufferDict(nn.Module):
    """Named tensors that travel with the module (device, state_dict) but are not trained."""

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        for k, v in (tensors or {}).items():
            self.register_buffer(k, v.clone())

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._buffers[key]  # type: ignore[return-value]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.register_buffer(key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._buffers

    def keys(self):
        return self._buffers.keys()

    def items(self):
        return self._buffers.items()

    def __len__(self) -> int:
        return len(self._buffers)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._buffers)  # type: ignore[arg-type]


class ParamPartition(nn.Module):
    def __init__(self, field: Field, adapt: str | Iterable[str] = "all", meta_sgd: bool = False,
                 inner_lr: float = 1e-2, lr_init_range: tuple[float, float] = (0.005, 0.1),
                 lr_clip: tuple[float, float] = (0.0, 1.0), seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        network = field.init_params(gen)
        per_signal = field.signal_params()
        names = resolve_adapt(adapt, list(network), list(per_signal))
        self.adapt_names: list[str] = names
        self.shared = nn.ParameterDict({k: nn.Parameter(v) for k, v in network.items() if k not in names})
        self.init = nn.ParameterDict({k: nn.Parameter(v) for k, v in network.items() if k in names})
        self.fixed_init = _BufferDict({k: v for k, v in per_signal.items() if k in names})
        self.inner_lr = float(inner_lr)
        self.lr_clip = (float(lr_clip[0]), float(lr_clip[1]))
        self.meta_sgd = bool(meta_sgd)
        lo, hi = lr_init_range
        self.lrs = nn.ParameterDict({
            k: nn.Parameter(torch.rand(self.start(k).shape, generator=gen) * (hi - lo) + lo)
            for k in names} if meta_sgd else {})
        self.masks = _BufferDict()

    def start(self, name: str) -> torch.Tensor:
        return self.init[name] if name in self.init else self.fixed_init[name]

    def start_params(self) -> dict[str, torch.Tensor]:
        return {k: self.start(k) for k in self.adapt_names}

    def lr(self, name: str) -> torch.Tensor | float:
        if self.meta_sgd:
            return self.lrs[name].clamp(*self.lr_clip)
        return self.inner_lr

    def shared_params(self) -> dict[str, torch.Tensor]:
        return dict(self.shared.items())

    def mask_dict(self) -> dict[str, torch.Tensor] | None:
        return self.masks.as_dict() or None

    def set_mask(self, name: str, mask: torch.Tensor) -> None:
        """Fix a binary mask on a weight and zero the masked entries of its stored value."""
        target = self.shared[name] if name in self.shared else self.init[name]
        mask = mask.to(dtype=target.dtype, device=target.device)
        if mask.shape != target.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, expected {tuple(target.shape)}")
        self.masks[name] = mask
        with torch.no_grad():
            target.mul_(mask)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Re-zero masked entries (after an optimiser step, whose momentum could move them)."""
        for name, mask in self.masks.items():
            target = self.shared[name] if name in self.shared else self.init[name]
            target.mul_(mask)

    def all_network_params(self) -> dict[str, torch.Tensor]:
        return {**dict(self.shared.items()), **dict(self.init.items())}


def resolve_adapt(adapt: str | Iterable[str], network: list[str], per_signal: list[str]) -> list[str]:
    """'all' = every network parameter; 'signal' = the field's per-signal parameters (modulations,
    latent); otherwise an explicit list of names."""
    if isinstance(adapt, str):
        if adapt == "all":
            return list(network) + list(per_signal)
        if adapt in ("signal", "modulations", "latent"):
            if not per_signal:
                raise ValueError(f"adapt={adapt!r} needs a field with per-signal parameters (modulations)")
            return list(per_signal)
        adapt = [a.strip() for a in adapt.split(",") if a.strip()]
    names = list(adapt)
    unknown = [n for n in names if n not in network and n not in per_signal]
    if unknown:
        raise ValueError(f"unknown parameter(s) to adapt: {unknown}; known: {network + per_signal}")
    return names
