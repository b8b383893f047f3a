"""GradNCP meta-test gradient rescaling: step along the full-context gradient, scaled to the norm of
the pruned-context gradient (norms over all adapted parameters, per signal)."""

from __future__ import annotations

import torch

from metainr.meta.parts import Params


def _per_signal_norm(grads: Params, batch: int) -> torch.Tensor:
    return torch.sqrt(sum(g.reshape(batch, -1).pow(2).sum(-1) for g in grads.values()))


def rescaled_gradients(learner, params: Params, coords: torch.Tensor, values: torch.Tensor,
                       grads_sub: Params, step: int) -> Params:
    """A :data:`metainr.meta.fit.GradHook`: g_full * ||g_sub|| / ||g_full||."""
    batch = values.shape[0]
    full = learner.inner_grads(params, coords, values, create_graph=False)
    scale = _per_signal_norm(grads_sub, batch) / _per_signal_norm(full, batch).clamp_min(1e-12)
    return {n: g * scale.view(batch, *([1] * (g.dim() - 1))) for n, g in full.items()}
