"""GradNCP's bootstrapped correction, an outer-loss term.

From theta_K, take L more first-order SGD steps on the full context (own learning rate) from a
detached copy: theta_boot (no gradient flows into it). The term is
lambda * ||theta_K - theta_boot||_2, the unsquared L2 norm over all adapted parameters, per signal
(the outer loss averages it over the meta-batch).
"""

from __future__ import annotations

import torch

from metainr.meta.parts import OuterTerm, Params


class BootstrapCorrection(OuterTerm):
    def __init__(self, steps: int = 5, lr: float = 5e-2, weight: float = 100.0):
        super().__init__()
        self.steps, self.lr, self.weight = int(steps), float(lr), float(weight)

    def target(self, learner, adapted: Params, coords: torch.Tensor, values: torch.Tensor) -> Params:
        boot = {n: p.detach() for n, p in adapted.items()}
        for _ in range(self.steps):
            grads = learner.inner_grads(boot, coords, values, create_graph=False)
            boot = {n: (p - self.lr * grads[n]).detach() for n, p in boot.items()}
        return boot

    def forward(self, learner, adapted, coords, values):
        boot = self.target(learner, adapted, coords, values)
        batch = values.shape[0] if values.dim() == 3 else None
        sq = []
        for n, p in adapted.items():
            diff = p - boot[n]
            sq.append(diff.reshape(batch, -1).pow(2).sum(-1) if batch is not None else diff.pow(2).sum())
        return self.weight * torch.stack(sq).sum(0).clamp_min(1e-24).sqrt()
