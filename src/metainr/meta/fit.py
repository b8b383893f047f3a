"""Fitting signals from an init (meta-learned or random) and decoding them at any resolution."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metainr.meta.learner import MetaLearner, Params, per_signal_mse

# A gradient transform at test time, e.g. GradNCP's rescaling: (learner, params, coords, values,
# grads_on_context, step) -> grads to apply.
GradHook = Callable[[MetaLearner, Params, torch.Tensor, torch.Tensor, Params, int], Params]
# Called at every recorded step with (step, params, coords, values) of the current chunk of signals.
RecordHook = Callable[[int, Params, torch.Tensor, torch.Tensor], None]
# Per-signal masks during fitting (pruning while fitting): (step, params, masks or None) -> masks.
MaskHook = Callable[[int, Params, "Params | None"], "Params | None"]


@dataclass
class FitResult:
    params: Params            # per-signal adapted parameters, (B, ...) each (masked entries zero)
    psnr: torch.Tensor        # (len(record_steps), B) PSNR of the clamped output
    record_steps: list[int]   # the step counts at which psnr was recorded (0 = the init)
    masks: Params | None = None  # per-signal masks set by a mask hook


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


@torch.no_grad()
def render(learner: MetaLearner, params: Params, coords: torch.Tensor, chunk: int = 65536,
           masks: Params | None = None) -> torch.Tensor:
    """Evaluate the field on coords (N, d) or (B, N, d) for every signal, chunked over coordinates."""
    outs = [learner.predict(params, coords[..., i:i + chunk, :], masks=masks)
            for i in range(0, coords.shape[-2], chunk)]
    return torch.cat(outs, dim=-2)


@torch.no_grad()
def evaluate_psnr(learner: MetaLearner, params: Params, coords: torch.Tensor, values: torch.Tensor,
                  masks: Params | None = None) -> torch.Tensor:
    if learner.chunk is None or values.shape[-2] <= learner.chunk:
        pred = learner.predict(params, coords, masks=masks).clamp(0, 1)
        return psnr_from_mse(per_signal_mse(pred, values))
    sq = 0.0
    for c, v in learner.coordinate_chunks(coords, values):
        sq = sq + (learner.predict(params, c, masks=masks).clamp(0, 1) - v).pow(2).sum(dim=(-2, -1))
    return psnr_from_mse(sq / (values.shape[-2] * values.shape[-1]))


def fit(learner: MetaLearner, coords: torch.Tensor, values: torch.Tensor, steps: int,
        optimizer: str = "sgd", lr: float | None = None, record_steps: list[int] | None = None,
        use_context: bool = False, grad_hook: GradHook | None = None, batch_size: int | None = None,
        on_record: RecordHook | None = None, mask_hook: MaskHook | None = None) -> FitResult:
    """Fit each signal (values (B, N, C)) from the learner's init for ``steps`` steps.

    ``sgd`` uses the learner's inner learning rates (Meta-SGD rates if learned) unless ``lr`` is
    given; ``adam`` uses a per-signal Adam (elementwise, so a batch is many independent fits).
    Shapers run in test mode (deterministic gates). ``use_context`` applies the learner's context
    selector as in training; ``grad_hook`` replaces the step's gradient (GradNCP rescaling);
    ``mask_hook`` may set per-signal masks before any step (pruning during fitting).
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    record = sorted(set(record_steps if record_steps is not None else range(steps + 1)))
    batch = values.shape[0]
    size = batch_size or batch
    chunks = []
    for i in range(0, batch, size):
        v = values[i:i + size]
        c = coords[i:i + size] if coords.dim() == values.dim() else coords
        chunks.append(_fit_chunk(learner, c, v, steps, optimizer, lr, record, use_context, grad_hook,
                                 on_record, mask_hook))
    params = {n: torch.cat([ch[0][n] for ch in chunks]) for n in chunks[0][0]}
    masks = None
    if chunks[0][2] is not None:
        masks = {n: torch.cat([ch[2][n] for ch in chunks]) for n in chunks[0][2]}
    return FitResult(params=params, psnr=torch.cat([ch[1] for ch in chunks], dim=1), record_steps=record,
                     masks=masks)


def _fit_chunk(learner, coords, values, steps, optimizer, lr, record, use_context, grad_hook, on_record,
               mask_hook):
    states = learner.begin(values.shape[0], training=False)
    params = {n: p.detach().clone() for n, p in learner.start_params(values.shape[0]).items()}
    masks: Params | None = None
    history = []
    opt = None
    if optimizer == "adam":
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(list(params.values()), lr=1e-4 if lr is None else lr)
    for step in range(steps + 1):
        if step in record:
            history.append(evaluate_psnr(learner, params, coords, values, masks))
            if on_record is not None:
                on_record(step, _masked(params, masks), coords, values)
        if step == steps:
            break
        if mask_hook is not None:
            masks = mask_hook(step, _masked(params, masks), masks)
        ctx_c, ctx_v = (learner.select_context(params, coords, values, step, training=False)
                        if use_context else (coords, values))
        grads = learner.inner_grads(params, ctx_c, ctx_v, create_graph=False, masks=masks)
        grads = learner.shape_grads(grads, states, step)
        if grad_hook is not None:
            grads = grad_hook(learner, params, coords, values, grads, step)
        if opt is None:
            with torch.no_grad():
                params = {n: (p - (lr if lr is not None else learner.partition.lr(n)) * grads[n]).detach()
                          for n, p in params.items()}
        else:
            for n, p in params.items():
                p.grad = grads[n]
            opt.step()
    return _masked(params, masks), torch.stack(history), masks


def _masked(params: Params, masks: Params | None) -> Params:
    """Adapted params with per-signal masks applied (Adam moments may move masked raw entries,
    which the forward pass ignores; the reported params are exactly sparse)."""
    out = {n: p.detach() for n, p in params.items()}
    for n, m in (masks or {}).items():
        if n in out:
            out[n] = out[n] * m
    return out
