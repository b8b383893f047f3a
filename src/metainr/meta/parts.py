"""Extension points of the inner loop. A method is a choice of these around one loop.

Each part is an ``nn.Module`` so its own parameters (gates, learned rates) are meta-learned by the
outer optimiser and saved with the learner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from metainr.meta.learner import MetaLearner

Params = dict[str, torch.Tensor]


class UpdateShaper(nn.Module):
    """Transforms the inner gradient before the SGD step (e.g. hard-concrete gates z * grad)."""

    def begin(self, learner: MetaLearner, batch_size: int, training: bool) -> Any:
        """Per meta-batch state (e.g. sampled gates); called once before the inner loop."""
        return None

    def shape(self, grads: Params, state: Any, step: int) -> Params:
        return grads

    def penalty(self, learner: MetaLearner) -> torch.Tensor | None:
        """A global outer-loss term (e.g. expected L0), added once per meta-batch."""
        return None


class ContextSelector(nn.Module):
    """Chooses which coordinates an inner step sees (full context when absent)."""

    def select(self, learner: MetaLearner, params: Params, coords: torch.Tensor, values: torch.Tensor,
               step: int, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return coords, values


class OuterTerm(nn.Module):
    """A per-signal outer-loss term computed from the adapted parameters theta_K."""

    def forward(self, learner: MetaLearner, adapted: Params, coords: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:  # (B,)
        raise NotImplementedError
