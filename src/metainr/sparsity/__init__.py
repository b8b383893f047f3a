"""Sparsity: magnitude / random pruning with fixed masks (Meta-SparseINR), narrow baselines,
per-signal pruning during fitting, and parameter counting."""

from metainr.sparsity.counting import count_params
from metainr.sparsity.masks import prune_learner, pruning_masks

__all__ = ["count_params", "prune_learner", "pruning_masks"]
