"""Which coordinates each inner step sees. Recomputed at every step with the current parameters.

GradNCP (Tack et al. 2023) keeps, per signal, the top-gamma fraction of coordinates by the norm of
the last layer's gradient of that coordinate's loss 1/2 ||y - f(x)||^2, which in closed form is
||e|| * sqrt(||h||^2 + 1) with e = y - f(x) and h the penultimate features: one forward pass, no
per-coordinate gradient tensors, one index set shared by all output channels.
The kept count is ceil(gamma * N) (at least 1).
"""

from __future__ import annotations

import math

import torch

from metainr.meta.parts import ContextSelector, Params


def kept_count(gamma: float, n: int) -> int:
    return max(1, min(n, math.ceil(gamma * n - 1e-9)))


def gather_context(coords: torch.Tensor, values: torch.Tensor, idx: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Select coordinates idx (..., k) from values (..., N, C) and coords (N, d) or (..., N, d)."""
    sel_values = torch.take_along_dim(values, idx.unsqueeze(-1), dim=-2)
    if coords.dim() == values.dim():
        sel_coords = torch.take_along_dim(coords, idx.unsqueeze(-1), dim=-2)
    else:
        sel_coords = coords[idx]
    return sel_coords, sel_values


@torch.no_grad()
def gradncp_scores(learner, params: Params, coords: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Closed-form last-layer per-coordinate gradient norm, (..., N)."""
    detached = {n: p.detach() for n, p in params.items()}
    if learner.chunked(values):  # bounded memory at high resolution
        return torch.cat([gradncp_scores_one(learner, detached, c, v)
                          for c, v in learner.coordinate_chunks(coords, values)], dim=-1)
    return gradncp_scores_one(learner, detached, coords, values)


def gradncp_scores_one(learner, params: Params, coords: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    pred, feats = learner.predict(params, coords, return_features=True)
    err = (values - pred).norm(dim=-1)
    return err * torch.sqrt(feats.pow(2).sum(dim=-1) + 1.0)


class TopFractionSelector(ContextSelector):
    """Keeps the ceil(gamma * N) coordinates with the highest score, per signal."""

    def __init__(self, gamma: float = 0.25):
        super().__init__()
        if not 0 < gamma <= 1:
            raise ValueError(f"context fraction gamma must be in (0, 1], got {gamma}")
        self.gamma = float(gamma)

    def scores(self, learner, params: Params, coords: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def select(self, learner, params, coords, values, step, training):
        scores = self.scores(learner, params, coords, values)
        idx = scores.topk(kept_count(self.gamma, values.shape[-2]), dim=-1, sorted=False).indices
        return gather_context(coords, values, idx)


class GradNCPSelector(TopFractionSelector):
    """GradNCP: the largest last-layer gradient norms."""

    def scores(self, learner, params, coords, values):
        return gradncp_scores(learner, params, coords, values)


class RandomSelector(TopFractionSelector):
    """A uniformly random gamma fraction of the coordinates per signal and step."""

    def scores(self, learner, params, coords, values):
        return torch.rand(values.shape[:-1], device=values.device)


def build_selector(kind: str = "gradncp", gamma: float = 0.25) -> ContextSelector | None:
    if kind == "full":
        return None
    if kind == "gradncp":
        return GradNCPSelector(gamma)
    if kind == "random":
        return RandomSelector(gamma)
    raise ValueError(f"unknown context selector {kind!r} (full, random, gradncp)")
