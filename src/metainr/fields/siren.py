"""SIREN (Sitzmann et al. 2020) and its shift-modulated variant (Functa / COIN++ / MSCN).

Depth L means L linear layers, a sine after all but the last: h = sin(w0 (W h + b)).
Parameter names are flat ("w0", "b0", ..., "mod1", ...) so they can key parameter dicts directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from metainr.fields.base import Field, batched_bias


class Siren(Field):
    def __init__(self, in_dim: int, out_dim: int, width: int = 256, depth: int = 5, w0: float = 30.0,
                 w0_first: float | None = None, output_offset: float = 0.0):
        if depth < 2:
            raise ValueError("SIREN depth must be >= 2 (one sine layer and the linear output layer)")
        self.in_dim, self.out_dim, self.width, self.depth = in_dim, out_dim, width, depth
        self.w0 = float(w0)
        self.w0_first = float(w0 if w0_first is None else w0_first)
        self.output_offset = float(output_offset)

    def config(self) -> dict:
        return {"kind": "siren", "in_dim": self.in_dim, "out_dim": self.out_dim, "width": self.width,
                "depth": self.depth, "w0": self.w0, "w0_first": self.w0_first,
                "output_offset": self.output_offset}

    def layer_dims(self) -> list[tuple[int, int]]:
        dims = [self.in_dim] + [self.width] * (self.depth - 1) + [self.out_dim]
        return [(dims[i + 1], dims[i]) for i in range(self.depth)]

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        params = {}
        for i, (fan_out, fan_in) in enumerate(self.layer_dims()):
            # First layer U(-1/fan_in, 1/fan_in); later ones U(-sqrt(6/fan_in)/w0, +); biases alike.
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / self.w0
            params[f"w{i}"] = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
            params[f"b{i}"] = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
        return params

    def prunable(self) -> list[str]:
        return [f"w{i}" for i in range(self.depth)]

    def modulations(self, params: Mapping[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """Shift modulation per hidden layer (None when unmodulated)."""
        return [None] * (self.depth - 1)

    def forward(self, params, coords, masks=None, return_features=False):
        mods = self.modulations(params)
        h = coords
        for i in range(self.depth):
            w = params[f"w{i}"]
            if masks is not None and f"w{i}" in masks:
                w = w * masks[f"w{i}"]  # masked entries contribute nothing and receive no gradient
            pre = torch.matmul(h, w.transpose(-1, -2)) + batched_bias(params[f"b{i}"])
            if i == self.depth - 1:
                out = pre + self.output_offset if self.output_offset else pre
                return (out, h) if return_features else out
            if mods[i] is not None:
                pre = pre + batched_bias(mods[i])
            h = torch.sin((self.w0_first if i == 0 else self.w0) * pre)
        raise AssertionError("unreachable")


class ModulatedSiren(Siren):
    """SIREN with a shift modulation per hidden layer: h = sin(w0 (W h + b + m)).

    With ``latent_dim`` the modulations come from a per-signal latent z by a shared linear map
    m = A z + c (Functa); otherwise the modulations themselves are the per-signal parameters.
    Per-signal parameters start at zero.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, depth: int = 5, w0: float = 30.0,
                 w0_first: float | None = None, output_offset: float = 0.0, latent_dim: int | None = None):
        super().__init__(in_dim, out_dim, width, depth, w0, w0_first, output_offset)
        self.latent_dim = latent_dim

    def config(self) -> dict:
        return {**super().config(), "kind": "modulated_siren", "latent_dim": self.latent_dim}

    @property
    def num_modulations(self) -> int:
        return self.width * (self.depth - 1)

    def init_params(self, generator=None):
        params = super().init_params(generator)
        if self.latent_dim:
            bound = 1.0 / math.sqrt(self.latent_dim)
            params["map_w"] = (torch.rand(self.num_modulations, self.latent_dim, generator=generator) * 2 - 1
                               ) * bound
            params["map_b"] = torch.zeros(self.num_modulations)
        return params

    def signal_params(self):
        if self.latent_dim:
            return {"latent": torch.zeros(self.latent_dim)}
        return {f"mod{i}": torch.zeros(self.width) for i in range(self.depth - 1)}

    def modulations(self, params):
        if not self.latent_dim:
            return [params[f"mod{i}"] for i in range(self.depth - 1)]
        z = params["latent"]
        flat = torch.matmul(z.unsqueeze(-2), params["map_w"].transpose(-1, -2)).squeeze(-2) + params["map_b"]
        return list(flat.split(self.width, dim=-1))

