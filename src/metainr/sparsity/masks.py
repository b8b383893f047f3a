"""Global pruning masks over all prunable weight matrices (biases are never pruned).

Each call removes exactly ``round(fraction * remaining)`` of the still-unmasked weights, ranked
globally across layers: by magnitude (Meta-SparseINR) or at random (the Random Pruning baseline).
Weights may carry a leading batch dimension (one network per signal, for per-signal pruning
during fitting); then the ranking and the count are per signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def _scores(weights: Mapping[str, torch.Tensor], kind: str, generator: torch.Generator | None,
            batch: bool) -> list[torch.Tensor]:
    out = []
    for w in weights.values():
        if kind == "magnitude":
            s = w.detach().abs()
        elif kind == "random":
            s = torch.rand(w.shape, generator=generator).to(w.device)
        else:
            raise ValueError(f"unknown pruning kind {kind!r} (magnitude or random)")
        out.append(s.reshape(w.shape[0], -1) if batch else s.reshape(1, -1))
    return out


def pruning_masks(weights: Mapping[str, torch.Tensor], fraction: float | None = None,
                  masks: Mapping[str, torch.Tensor] | None = None, kind: str = "magnitude",
                  generator: torch.Generator | None = None, batch: bool = False,
                  keep: int | None = None) -> dict[str, torch.Tensor]:
    """New masks after removing ``fraction`` of the remaining weights (or keeping exactly ``keep``)."""
    names = list(weights)
    old = [(masks or {}).get(n, torch.ones_like(weights[n])).expand_as(weights[n]).to(weights[n].dtype)
           for n in names]
    scores = _scores(weights, kind, generator, batch)
    flat_scores = torch.cat(scores, dim=1)
    flat_mask = torch.cat([m.reshape(flat_scores.shape[0], -1) for m in old], dim=1)
    remaining = flat_mask.sum(dim=1)
    flat_scores = torch.where(flat_mask > 0, flat_scores, torch.full_like(flat_scores, float("inf")))
    if keep is not None:
        n_remove = (remaining - keep).clamp_min(0).long()
    else:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"pruning fraction must be in [0, 1], got {fraction}")
        n_remove = torch.round(remaining * float(fraction)).long()
    new_flat = flat_mask.clone()
    for row in range(flat_scores.shape[0]):
        k = int(n_remove[row])
        if k > 0:
            idx = torch.topk(flat_scores[row], k, largest=False).indices  # exactly k, ties broken by index
            new_flat[row, idx] = 0
    out, offset = {}, 0
    for n, m in zip(names, old):
        size = m[0].numel() if batch else m.numel()
        out[n] = new_flat[:, offset:offset + size].reshape(m.shape)
        offset += size
    return out


def prunable_weights(learner) -> dict[str, torch.Tensor]:
    """The stored (meta-learned) weight matrices that pruning applies to."""
    part = learner.partition
    stored = part.all_network_params()
    return {n: stored[n] for n in learner.field.prunable() if n in stored}


@torch.no_grad()
def prune_learner(learner, fraction: float, kind: str = "magnitude", generator: torch.Generator | None = None,
                  optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
    """Prune the learner's weights in place, fix the masks, and clear optimiser moments there."""
    weights = prunable_weights(learner)
    current = learner.partition.mask_dict() or {}
    new = pruning_masks(weights, fraction, current, kind=kind, generator=generator)
    for name, mask in new.items():
        learner.partition.set_mask(name, mask)
        if optimizer is not None:
            state = optimizer.state.get(weights[name], {})
            for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
                if key in state:
                    state[key].mul_(mask)
    kept = sum(int(m.sum()) for m in new.values())
    total = sum(m.numel() for m in new.values())
    return {"kept_weights": kept, "total_weights": total, "density": kept / total}
