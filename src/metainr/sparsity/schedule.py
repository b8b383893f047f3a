"""Iterative pruning around meta-training (Meta-SparseINR and the Random Pruning baseline).

Dense meta-training for ``dense_steps``; then ``rounds`` times: prune ``fraction`` of the remaining
weights (global magnitude, or random) and continue meta-training the masked network for
``round_steps`` (no rewind). At the end of the dense phase and of every round a checkpoint
``round_XX`` (XX = number of prunings) is kept, so every sparsity level can be evaluated or resumed.
The schedule is a function of the step, so a resumed run prunes exactly where it would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metainr.sparsity.masks import prune_learner


@dataclass
class PruningConfig:
    kind: str = "magnitude"      # magnitude (Meta-SparseINR) | random (Random Pruning)
    fraction: float = 0.2        # of the remaining weights, per round
    rounds: int = 20
    dense_steps: int = 150_000
    round_steps: int = 30_000

    @property
    def total_steps(self) -> int:
        return self.dense_steps + self.rounds * self.round_steps

    def density(self, prunings: int) -> float:
        return (1.0 - self.fraction) ** prunings

    def boundary(self, r: int) -> int:
        """Step at which round r ends (r = 0: the dense phase)."""
        return self.dense_steps + r * self.round_steps


class PruningSchedule:
    """A trainer callback: saves ``round_XX`` checkpoints and prunes at round boundaries."""

    def __init__(self, cfg: PruningConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.prunings = 0

    def expected_prunings(self, step: int) -> int:
        """Prunings done once training has passed ``step`` (boundary actions included)."""
        if step < self.cfg.dense_steps:
            return 0
        return min(self.cfg.rounds, (step - self.cfg.dense_steps) // self.cfg.round_steps + 1)

    def _prune(self, trainer) -> None:
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.prunings)
        stats = prune_learner(trainer.learner, self.cfg.fraction, self.cfg.kind, gen, trainer.optimizer)
        self.prunings += 1
        trainer.log({"kind": "prune", "prunings": self.prunings, **stats})

    def __call__(self, trainer, step: int) -> None:
        for r in range(self.cfg.rounds + 1):
            if step == self.cfg.boundary(r) and self.prunings == r:
                trainer.save(name=f"round_{r:02d}", extra=self.state(trainer))
                if r < self.cfg.rounds:
                    self._prune(trainer)
                return

    def state(self, trainer=None) -> dict[str, Any]:
        from metainr.sparsity.counting import count_params

        out: dict[str, Any] = {"prunings": self.prunings}
        if trainer is not None:
            out["params"] = count_params(trainer.learner)
        return out

    def on_resume(self, trainer, meta: dict[str, Any]) -> None:
        self.prunings = int(meta.get("extra", {}).get("prunings", 0))
        # A crash between a round checkpoint and its pruning: prune now, as the schedule says.
        while self.prunings < self.expected_prunings(trainer.step) and self.prunings < self.cfg.rounds:
            self._prune(trainer)
