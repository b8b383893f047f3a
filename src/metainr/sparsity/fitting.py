"""Pruning each signal while it is fitted: the MAML + One-Shot and MAML + IMP baselines.

Both start from a dense meta-learned init and end with every signal at exactly the target number
of non-zero weights (its own global-magnitude mask over all weight matrices).
- One-Shot: a single pruning to the target half way through fitting (step ``steps // 2``).
- IMP: prune ``fraction`` (20%) of the remaining weights at evenly spaced steps in the first half
  of fitting; the last pruning lands exactly on the target.
"""

from __future__ import annotations

import math

from metainr.meta.fit import FitResult, MaskHook, fit
from metainr.sparsity.masks import pruning_masks


def prune_schedule(steps: int, target_density: float, mode: str, fraction: float = 0.2) -> list[int]:
    """The fitting steps at which pruning happens."""
    if mode == "oneshot":
        return [steps // 2]
    if mode == "imp":
        # The tolerance keeps decimal targets like 0.64 = 0.8^2 at 2 rounds (log ratio 2.0000000000000004).
        rounds = max(1, math.ceil(math.log(target_density) / math.log(1.0 - fraction) - 1e-9))
        half = max(1, steps // 2)
        return sorted({max(0, round((i + 1) * half / rounds) - 1) for i in range(rounds)})
    raise ValueError(f"unknown per-signal pruning mode {mode!r} (oneshot or imp)")


def pruning_hook(learner, steps: int, target_density: float, mode: str, fraction: float = 0.2) -> MaskHook:
    prunable = [n for n in learner.field.prunable() if n in learner.partition.adapt_names]
    if not prunable:
        raise ValueError("per-signal pruning needs adapted weight matrices (adapt='all')")
    schedule = prune_schedule(steps, target_density, mode, fraction)
    total = sum(learner.partition.start(n).numel() for n in prunable)
    target_keep = max(1, round(target_density * total))
    last = schedule[-1]

    def hook(step, params, masks):
        if step not in schedule:
            return masks
        weights = {n: params[n] for n in prunable}
        if step != last:
            new = pruning_masks(weights, fraction, masks=masks, batch=True)
            kept = sum(m.reshape(m.shape[0], -1).sum(dim=1) for m in new.values())
            if bool((kept >= target_keep).all()):
                return new
        # The last pruning lands exactly on the target; so does an earlier one whose rounding would
        # overshoot it (e.g. 104 weights at density 0.64: 104 -> 83 -> 66 < round(66.56) = 67).
        return pruning_masks(weights, masks=masks, batch=True, keep=target_keep)

    return hook


def fit_with_pruning(learner, coords, values, steps: int, target_density: float, mode: str,
                     fraction: float = 0.2, **fit_kwargs) -> FitResult:
    """:func:`metainr.meta.fit` with per-signal pruning to ``target_density`` of the weights."""
    hook = pruning_hook(learner, steps, target_density, mode, fraction)
    return fit(learner, coords, values, steps, mask_hook=hook, **fit_kwargs)
