"""#params as the papers count them: non-zero weights plus biases actually stored."""

from __future__ import annotations

import torch


def count_params(learner) -> dict[str, int]:
    """Counts of the stored network (shared + meta-learned init) of ``learner``.

    ``weights_nonzero`` counts entries of prunable weight matrices that are non-zero after masking;
    ``other`` counts every other network parameter (biases, modulation maps); ``total`` is their sum.
    Per-signal-only parameters (modulations, latents) and learning rates are not counted here.
    """
    part = learner.partition
    masks = part.mask_dict() or {}
    prunable = set(learner.field.prunable())
    nonzero = dense = other = 0
    for name, p in part.all_network_params().items():
        if name in prunable:
            w = p.detach() * masks[name] if name in masks else p.detach()
            nonzero += int(torch.count_nonzero(w))
            dense += p.numel()
        else:
            other += p.numel()
    return {"weights_nonzero": nonzero, "weights_dense": dense, "other": other, "total": nonzero + other}
