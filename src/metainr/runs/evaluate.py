"""Evaluation of a run: the meta-learned init against a random init, same steps and optimiser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metainr.meta.fit import fit, render
from metainr.meta.learner import MetaLearner
from metainr.methods import build_learner
from metainr.runs.checkpoint import list_checkpoints, load_checkpoint
from metainr.runs.config import RunConfig
from metainr.runs.distributed import local_device
from metainr.signals.batch import SignalSet

RANDOM_INIT_SEED_OFFSET = 7919  # a random init that differs from the run's own starting point


def open_run(run_dir: Path | str, checkpoint: str | None = None, device: str = "auto"
             ) -> tuple[RunConfig, MetaLearner, dict[str, Any]]:
    """The run's config and its learner loaded from ``checkpoint`` (name or path; default newest)."""
    from metainr.errors import CheckpointError

    run_dir = Path(run_dir)
    cfg = RunConfig.load(run_dir / "config.json")
    ckpts = list_checkpoints(run_dir / "checkpoints")
    if checkpoint is None:
        if not ckpts:
            raise CheckpointError(f"run {run_dir} has no complete checkpoint yet")
        path = ckpts[-1]
    else:
        path = Path(checkpoint)
        if not path.with_suffix(".json").exists():
            path = run_dir / "checkpoints" / Path(checkpoint).name
        path = path.with_suffix("")
    learner = build_run_learner(cfg)
    meta = load_checkpoint(path, learner, None, cfg.model_signature(), restore_rng=False)
    dev = local_device(device)
    return cfg, learner.to(dev), meta


def build_run_learner(cfg: RunConfig, seed: int | None = None) -> MetaLearner:
    in_dim = {"image": 2, "audio": 1}.get(cfg.data.modality, 2)
    return build_learner(cfg.field, cfg.method, in_dim, cfg.data.channels,
                         seed=cfg.train.seed if seed is None else seed, strategy=cfg.train.strategy,
                         chunk=cfg.train.chunk)


def _stats(x: torch.Tensor) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std(unbiased=False)), "n": int(x.numel())}


def fit_metrics(learner: MetaLearner, signals: SignalSet, steps: list[int], optimizer: str = "sgd",
                lr: float | None = None, batch_size: int = 16, with_ssim: bool = True,
                fit_kwargs: dict[str, Any] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """PSNR (and SSIM for images) per recorded step count: {step: {psnr: stats, ssim: stats}}."""
    from metainr.metrics import ssim

    ssims: dict[int, list[torch.Tensor]] = {s: [] for s in steps}
    conv = signals.converter
    image_like = with_ssim and conv.coord_dim == 2

    def record(step: int, params, coords, values) -> None:
        if image_like:
            pred = render(learner, params, coords).clamp(0, 1)
            ssims[step].append(ssim(conv.to_signals(pred), conv.to_signals(values)))

    kwargs = dict(fit_kwargs or {})
    factory = kwargs.pop("mask_hook_factory", None)  # hooks bound to this learner (per-signal pruning)
    if factory is not None:
        kwargs["mask_hook"] = factory(learner)
    result = fit(learner, signals.coords, signals.values, max(steps), optimizer=optimizer, lr=lr,
                 record_steps=steps, batch_size=batch_size, on_record=record, **kwargs)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, step in enumerate(result.record_steps):
        out[str(step)] = {"psnr": _stats(result.psnr[row])}
        if image_like:
            out[str(step)]["ssim"] = _stats(torch.cat(ssims[step]))
    return out


def compare_inits(cfg: RunConfig, learner: MetaLearner, signals: SignalSet, steps: list[int],
                  optimizer: str = "sgd", lr: float | None = None, batch_size: int = 16,
                  fit_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Meta-learned vs random init after the same steps with the same optimiser."""
    device = next(learner.parameters()).device
    random = build_run_learner(cfg, seed=cfg.train.seed + RANDOM_INIT_SEED_OFFSET).to(device)
    signals = signals.to(device)
    meta = fit_metrics(learner, signals, steps, optimizer, lr, batch_size, fit_kwargs=fit_kwargs)
    rand = fit_metrics(random, signals, steps, optimizer, lr, batch_size, fit_kwargs=fit_kwargs)
    gain = {s: meta[s]["psnr"]["mean"] - rand[s]["psnr"]["mean"] for s in meta}
    return {"optimizer": optimizer, "lr": lr if lr is not None else "inner", "n_signals": len(signals),
            "steps": steps, "meta_init": meta, "random_init": rand, "psnr_gain_db": gain}
