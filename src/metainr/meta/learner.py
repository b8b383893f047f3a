"""The functional meta-learning core: one inner loop that every method composes.

Inner loop per signal i: theta_{t+1} = theta_t - alpha * shape(grad L_i(theta_t on context_t)).
Outer loss: mean_i [MSE_i(theta_K) + per-signal terms] + global penalties, minimised over the
shared parameters, theta_0, Meta-SGD rates and the parts' own parameters.

The meta-batch runs with one of three strategies (same numbers, different speed/memory):
- ``loop``: one signal at a time, its outer loss back-propagated at once (lowest memory);
- ``batched``: all signals together, per-signal parameters stacked as (B, ...) so each layer is one
  batched matmul; the loss is a sum of per-signal means, so each signal's gradient is its own;
- ``vmap``: ``torch.func.vmap`` of the per-signal loop with ``torch.func.grad``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from metainr.fields.base import Field
from metainr.meta.params import ParamPartition
from metainr.meta.parts import ContextSelector, OuterTerm, Params, UpdateShaper

STRATEGIES = ("loop", "batched", "vmap")
# Fastest strategy per device type, from benchmarks/strategy.py (see benchmarks/results/).
DEFAULT_STRATEGY = {"cpu": "loop", "cuda": "batched"}


def per_signal_mse(pred: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Mean over coordinates and channels: (..., N, C) -> (...)."""
    return (pred - values).pow(2).mean(dim=(-2, -1))


def _rows(x: torch.Tensor, values: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """Slice signals i:j of coords that are either shared (N, d) or per signal (B, N, d)."""
    return x[i:j] if x.dim() == values.dim() else x


class MetaLearner(nn.Module):
    def __init__(self, field: Field, partition: ParamPartition, inner_steps: int = 2,
                 first_order: bool = False, shapers: Iterable[UpdateShaper] = (),
                 context: ContextSelector | None = None, outer_terms: Iterable[OuterTerm] = (),
                 strategy: str = "auto", chunk: int | None = None):
        super().__init__()
        self.field = field
        self.partition = partition
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.shapers = nn.ModuleList(shapers)
        self.context = context
        self.outer_terms = nn.ModuleList(outer_terms)
        if strategy != "auto" and strategy not in STRATEGIES:
            raise ValueError(f"unknown batching strategy {strategy!r}; choose auto or one of {STRATEGIES}")
        self.strategy = strategy
        # Coordinates per chunk for full-context passes that keep no graph (first-order steps, the
        # outer loss, metrics): bounds their memory at high resolution; None = one pass.
        self.chunk = chunk

    # ----------------------------------------------------------------- evaluation of the field
    def network_params(self, adapted: Params) -> Params:
        return {**self.partition.shared_params(), **adapted}

    def masks(self, extra: Params | None = None) -> Params | None:
        """The fixed masks, times optional per-signal masks (B, ...) (pruning during fitting)."""
        fixed = self.partition.mask_dict()
        if not extra:
            return fixed
        merged = dict(fixed or {})
        for name, m in extra.items():
            merged[name] = merged[name] * m if name in merged else m
        return merged

    def predict(self, adapted: Params, coords: torch.Tensor, return_features: bool = False,
                masks: Params | None = None):
        return self.field.forward(self.network_params(adapted), coords, self.masks(masks),
                                  return_features=return_features)

    def signal_loss(self, adapted: Params, coords: torch.Tensor, values: torch.Tensor,
                    masks: Params | None = None) -> torch.Tensor:
        return per_signal_mse(self.predict(adapted, coords, masks=masks), values)

    def start_params(self, batch_size: int | None) -> Params:
        """theta_0 for a batch: (B, ...) views of the init (or unbatched when batch_size is None)."""
        out = {}
        for name, p in self.partition.start_params().items():
            q = p if batch_size is None else p.expand(batch_size, *p.shape)
            if not q.requires_grad:  # fixed starts (modulations) still need an inner gradient
                q = q.clone().requires_grad_(True)
            out[name] = q
        return out

    # ----------------------------------------------------------------------------- inner loop
    def inner_grads(self, adapted: Params, coords: torch.Tensor, values: torch.Tensor,
                    create_graph: bool, functional: bool = False, masks: Params | None = None) -> Params:
        """Per-signal gradients of the inner loss. ``create_graph`` keeps second-order terms."""
        names = list(adapted)
        if functional:  # inside torch.func.vmap
            def loss_fn(a: Params) -> torch.Tensor:
                return self.signal_loss(a, coords, values, masks).sum()
            src = adapted if create_graph else {n: p.detach() for n, p in adapted.items()}
            grads = torch.func.grad(loss_fn)(src)
            return grads if create_graph else {n: g.detach() for n, g in grads.items()}
        if create_graph:
            loss = self.signal_loss(adapted, coords, values, masks).sum()
            grads = torch.autograd.grad(loss, [adapted[n] for n in names], create_graph=True)
        else:  # first order / meta-test: differentiate detached leaves, nothing kept
            leaves = {n: p.detach().requires_grad_(True) for n, p in adapted.items()}
            with torch.enable_grad():
                if self.chunked(values):
                    return self._chunked_grads(leaves, coords, values, masks)
                loss = self.signal_loss(leaves, coords, values, masks).sum()
                grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        return dict(zip(names, grads))

    def chunked(self, values: torch.Tensor) -> bool:
        return self.chunk is not None and values.shape[-2] > self.chunk

    def coordinate_chunks(self, coords: torch.Tensor, values: torch.Tensor):
        n = values.shape[-2]
        for i in range(0, n, self.chunk or n):
            yield coords[..., i:i + self.chunk, :], values[..., i:i + self.chunk, :]

    def _chunked_grads(self, leaves: Params, coords: torch.Tensor, values: torch.Tensor,
                       masks: Params | None) -> Params:
        """Gradients of the per-signal mean loss, accumulated over coordinate chunks."""
        total = values.shape[-2] * values.shape[-1]
        for c, v in self.coordinate_chunks(coords, values):
            part = (self.predict(leaves, c, masks=masks) - v).pow(2).sum() / total
            part.backward()
        return {n: p.grad for n, p in leaves.items()}

    def sgd_step(self, adapted: Params, grads: Params) -> Params:
        return {n: p - self.partition.lr(n) * grads[n] for n, p in adapted.items()}

    def begin(self, batch_size: int, training: bool) -> list[Any]:
        return [s.begin(self, batch_size, training) for s in self.shapers]

    def shape_grads(self, grads: Params, states: Sequence[Any], step: int) -> Params:
        for shaper, state in zip(self.shapers, states):
            grads = shaper.shape(grads, state, step)
        return grads

    def select_context(self, adapted: Params, coords: torch.Tensor, values: torch.Tensor, step: int,
                       training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context is None:
            return coords, values
        return self.context.select(self, adapted, coords, values, step, training)

    def inner_loop(self, adapted: Params, coords: torch.Tensor, values: torch.Tensor, steps: int,
                   states: Sequence[Any], training: bool, create_graph: bool,
                   functional: bool = False) -> Params:
        for step in range(steps):
            ctx_coords, ctx_values = self.select_context(adapted, coords, values, step, training)
            grads = self.inner_grads(adapted, ctx_coords, ctx_values, create_graph, functional)
            adapted = self.sgd_step(adapted, self.shape_grads(grads, states, step))
        return adapted

    def adapt(self, coords: torch.Tensor, values: torch.Tensor, steps: int | None = None,
              training: bool = False, create_graph: bool | None = None) -> Params:
        """Adapt theta_0 to a batch of signals (values (B, N, C)); returns per-signal params (B, ...)."""
        steps = self.inner_steps if steps is None else steps
        if create_graph is None:
            create_graph = training and not self.first_order
        states = self.begin(values.shape[0], training)
        return self.inner_loop(self.start_params(values.shape[0]), coords, values, steps, states,
                               training, create_graph)

    def _adapt_vmap(self, coords: torch.Tensor, values: torch.Tensor, create_graph: bool) -> Params:
        states = self.begin(values.shape[0], True)
        start = self.partition.start_params()

        def one(c: torch.Tensor, v: torch.Tensor, st: list[Any]) -> Params:
            return self.inner_loop(dict(start), c, v, self.inner_steps, st, True, create_graph,
                                   functional=True)

        coord_dim = 0 if coords.dim() == values.dim() else None
        state_dims = [0 if s is not None else None for s in states]
        return torch.func.vmap(one, in_dims=(coord_dim, 0, state_dims), randomness="different")(
            coords, values, states)

    # ----------------------------------------------------------------------------- outer loss
    def resolve_strategy(self, device: torch.device) -> str:
        if self.strategy != "auto":
            return self.strategy
        return DEFAULT_STRATEGY.get(device.type, "batched")

    def outer_loss(self, adapted: Params, coords: torch.Tensor, values: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-signal outer loss (B,) and the MSE of the clamped output (B,) for PSNR."""
        pred = self.predict(adapted, coords)
        loss = per_signal_mse(pred, values)
        for term in self.outer_terms:
            loss = loss + term(self, adapted, coords, values)
        with torch.no_grad():
            clamped = per_signal_mse(pred.detach().clamp(0, 1), values)
        return loss, clamped

    def _chunked_outer_backward(self, adapted: Params, coords: torch.Tensor, values: torch.Tensor,
                                denom: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer backward pass with the full-context forward split over coordinate chunks.

        dLoss/dtheta_K is accumulated chunk by chunk on detached copies of theta_K (shared params
        get their direct gradient at the same time), then pushed once through the inner loop:
        the same gradient as one pass, without holding every coordinate's activations.
        """
        leaves = {n: p.detach().requires_grad_(True) for n, p in adapted.items()}
        total = values.shape[-2] * values.shape[-1]
        loss = torch.zeros(values.shape[0], device=values.device, dtype=values.dtype)
        mse = torch.zeros_like(loss)
        for c, v in self.coordinate_chunks(coords, values):
            pred = self.predict(leaves, c)
            part = (pred - v).pow(2).sum(dim=(-2, -1)) / total
            (part.sum() / denom).backward()
            loss += part.detach()
            mse += (pred.detach().clamp(0, 1) - v).pow(2).sum(dim=(-2, -1)) / total
        for term in self.outer_terms:
            extra = term(self, leaves, coords, values)
            (extra.sum() / denom).backward()
            loss += extra.detach()
        names = [n for n in adapted if leaves[n].grad is not None and adapted[n].requires_grad]
        torch.autograd.backward([adapted[n] for n in names], [leaves[n].grad for n in names])
        return loss, mse

    def meta_backward(self, coords: torch.Tensor, values: torch.Tensor, global_batch: int | None = None
                      ) -> dict[str, float]:
        """Accumulate the outer gradient of this (part of the) meta-batch into ``.grad``.

        ``global_batch`` is the meta-batch size over all processes, so gradients summed across
        processes equal the single-process gradient of the mean loss.
        """
        batch = values.shape[0]
        denom = float(global_batch or batch)
        strategy = self.resolve_strategy(values.device)
        create_graph = not self.first_order
        losses, mses = [], []
        if strategy == "vmap":
            chunks = [(0, batch)]
        else:
            step = 1 if strategy == "loop" else batch
            chunks = [(i, min(i + step, batch)) for i in range(0, batch, step)]
        for i, j in chunks:
            c, v = _rows(coords, values, i, j), values[i:j]
            if strategy == "vmap":
                adapted = self._adapt_vmap(c, v, create_graph)
            else:
                adapted = self.adapt(c, v, training=True, create_graph=create_graph)
            if self.chunked(v):
                loss, mse = self._chunked_outer_backward(adapted, c, v, denom)
            else:
                loss, mse = self.outer_loss(adapted, c, v)
                (loss.sum() / denom).backward()
            losses.append(loss.detach())
            mses.append(mse)
        penalty = self.global_penalty()
        if penalty is not None:
            (penalty * (batch / denom)).backward()
        loss_all, mse_all = torch.cat(losses), torch.cat(mses)
        psnr = -10 * torch.log10(mse_all.clamp_min(1e-10))
        out = {"loss": float(loss_all.mean()), "psnr": float(psnr.mean()), "batch": batch}
        if penalty is not None:
            out["penalty"] = float(penalty.detach())
        return out

    def global_penalty(self) -> torch.Tensor | None:
        terms = [t for t in (s.penalty(self) for s in self.shapers) if t is not None]
        return torch.stack(terms).sum() if terms else None

    def after_outer_step(self) -> None:
        """Keep invariants the optimiser step may break (masked entries exactly zero)."""
        self.partition.apply_masks()
        for shaper in self.shapers:
            if hasattr(shaper, "after_outer_step"):
                shaper.after_outer_step()
