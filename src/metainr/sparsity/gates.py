"""Hard-concrete L0 gates (Louizos et al. 2018) and MSCN's gated inner-loop updates.

Gate parameters log_a per gated entry (or per group, via a broadcastable shape); beta = 2/3,
gamma = -0.1, zeta = 1.1:
- training sample: u ~ U(0, 1), s = sigmoid((log u - log(1 - u) + log_a) / beta),
  z = clamp(s (zeta - gamma) + gamma, 0, 1);
- expected L0 (probability that z != 0): sigmoid(log_a - beta log(-gamma / zeta));
- deterministic test gate: z = clamp(sigmoid(log_a) (zeta - gamma) + gamma, 0, 1), with exact zeros.
MSCN (Schwarz & Teh 2022) puts the gates on the inner-loop updates: theta <- theta - alpha (z * grad),
so the per-signal change theta_K - theta_0 is sparse; on modulations (which start at zero) the same
gating makes the modulations themselves sparse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from metainr.meta.parts import Params, UpdateShaper

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteGate(nn.Module):
    def __init__(self, shape: Sequence[int], init_prob: float = 0.9, beta: float = BETA, gamma: float = GAMMA,
                 zeta: float = ZETA):
        super().__init__()
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)
        # log_a such that the deterministic gate starts near init_prob (open gates, full updates)
        self.log_a = nn.Parameter(torch.full(tuple(shape), math.log(init_prob / (1.0 - init_prob))))

    def sample(self, batch: Sequence[int] = (), u: torch.Tensor | None = None) -> torch.Tensor:
        """A reparameterised sample z of shape (*batch, *shape)."""
        if u is None:
            u = torch.rand(*batch, *self.log_a.shape, device=self.log_a.device).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_a) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def expected_l0(self) -> torch.Tensor:
        """Per-entry probability of a non-zero gate."""
        return torch.sigmoid(self.log_a - self.beta * math.log(-self.gamma / self.zeta))

    def deterministic(self) -> torch.Tensor:
        return (torch.sigmoid(self.log_a) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)


class GatedUpdates(UpdateShaper):
    """Hard-concrete gates on the inner-loop updates of the named adapted parameters.

    ``lam`` weighs the expected fraction of open gates in the outer loss. ``target_density`` (a
    fraction of the gated entries) makes training steer lambda towards it (a multiplicative
    controller) and makes the test gate keep exactly that many entries (top-k of log_a).
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], lam: float = 1e-3,
                 target_density: float | None = None, init_prob: float = 0.9, controller_rate: float = 0.02):
        super().__init__()
        self.gates = nn.ModuleDict({n: HardConcreteGate(s, init_prob) for n, s in shapes.items()})
        self.register_buffer("lam", torch.tensor(float(lam)))
        self.target_density = target_density
        self.controller_rate = float(controller_rate)

    @property
    def num_gated(self) -> int:
        return sum(g.log_a.numel() for g in self.gates.values())

    def expected_density(self) -> torch.Tensor:
        return torch.stack([g.expected_l0().sum() for g in self.gates.values()]).sum() / self.num_gated

    def test_gates(self, learner=None) -> dict[str, torch.Tensor]:
        """Deterministic gates; with ``target_density``, exactly that many open entries.

        Given the learner, entries whose (Meta-SGD) learning rate is exactly zero are ranked last:
        their update is zero whatever the gate, so keeping them would make fewer than the counted
        entries move (the realised density of theta_K - theta_0 would fall short of the target).
        """
        if self.target_density is None:
            return {n: g.deterministic() for n, g in self.gates.items()}
        # one global top-k over all gated entries, so the realised count is exact
        keep = max(1, round(self.target_density * self.num_gated))
        flat = torch.cat([self._rank_scores(n, g, learner).reshape(-1) for n, g in self.gates.items()])
        threshold_idx = torch.topk(flat, keep).indices
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[threshold_idx] = True
        out, offset = {}, 0
        for n, g in self.gates.items():
            size = g.log_a.numel()
            det = g.deterministic()
            # kept entries use at least a small open value so exactly `keep` updates are non-zero
            out[n] = torch.where(chosen[offset:offset + size].view_as(det), det.clamp_min(1e-3),
                                 torch.zeros_like(det))
            offset += size
        return out

    def begin(self, learner, batch_size: int, training: bool) -> Any:
        if training:
            return {n: g.sample((batch_size,)) for n, g in self.gates.items()}
        return {n: z.expand(batch_size, *z.shape) for n, z in self.test_gates(learner).items()}

    @staticmethod
    def _rank_scores(name: str, gate: HardConcreteGate, learner) -> torch.Tensor:
        """log_a, with -inf where the entry (every entry of a group gate) has a zero learning rate."""
        score = gate.log_a.detach()
        partition = getattr(learner, "partition", None)
        if partition is None or name not in partition.adapt_names:
            return score
        lr = partition.lr(name)
        if not torch.is_tensor(lr) or lr.dim() == 0:
            return score
        movable = (lr.detach() != 0).to(score.dtype).sum_to_size(score.shape) > 0
        return score.masked_fill(~movable, float("-inf"))

    def shape(self, grads: Params, state: Any, step: int) -> Params:
        # gates and gradients share their layout ((B, ...) per signal, or one signal under vmap);
        # group gates broadcast over the entries they share
        return {n: g * state[n] if n in state else g for n, g in grads.items()}

    def penalty(self, learner) -> torch.Tensor:
        return self.lam * self.expected_density()

    @torch.no_grad()
    def after_outer_step(self) -> None:
        if self.target_density is None:
            return
        density = float(self.expected_density())
        factor = math.exp(self.controller_rate * (1.0 if density > self.target_density else -1.0))
        self.lam.mul_(factor)


def realised_density(delta: Params) -> float:
    """Fraction of non-zero entries in a per-signal change (counted from actual zeros)."""
    nonzero = sum(int(torch.count_nonzero(d)) for d in delta.values())
    total = sum(d.numel() for d in delta.values())
    return nonzero / max(1, total)
