"""The contract every network satisfies so the meta-learning core can drive it functionally."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class Field:
    """A neural field f(params, coords) -> values, with parameters held outside the object.

    Parameters may carry a leading batch dimension (one copy per signal) or not (shared by all
    signals); ``forward`` broadcasts the two, so a meta-batch runs as batched matmuls.
    """

    in_dim: int
    out_dim: int

    def init_params(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Fresh network parameters (meta-learned or shared)."""
        raise NotImplementedError

    def signal_params(self) -> dict[str, torch.Tensor]:
        """Per-signal parameters that exist only to be adapted (e.g. modulations), at their start value."""
        return {}

    def prunable(self) -> list[str]:
        """Names of weight matrices that sparsity methods may mask (biases are never pruned)."""
        return []

    def forward(self, params: Mapping[str, torch.Tensor], coords: torch.Tensor,
                masks: Mapping[str, torch.Tensor] | None = None,
                return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor arguments, so a run can rebuild the same field."""
        raise NotImplementedError


def batched_bias(b: torch.Tensor, base_ndim: int = 1) -> torch.Tensor:
    """A per-signal vector (B, n) broadcasts over the coordinate axis as (B, 1, n)."""
    return b.unsqueeze(-2) if b.dim() > base_ndim else b
