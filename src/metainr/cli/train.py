"""``metainr train``: meta-learn an init on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def train(
    out: Annotated[Path, Opt("--out", "-o", help="run directory (config, checkpoints, metrics)")],
    data: Annotated[str, Opt(help="image/audio folder, file list, a name under $METAINR_DATA, or 'embedded'")
                    ] = "embedded",
    resolution: Annotated[int, Opt(help="signals are resized to R x R (images)")] = 32,
    method: Annotated[str, Opt(help="method preset: maml, maml-fo, meta-sgd, functa, modulations, ...")
                      ] = "maml",
    config: Annotated[Path | None, Opt(help="JSON RunConfig to start from (flags override it)")] = None,
    data_preset: Annotated[str | None, Opt(help="dataset preprocessing preset, e.g. celeba, cifar10")
                           ] = None,
    modality: Annotated[str, Opt(help="image | audio")] = "image",
    center_crop: Annotated[int | None, Opt(help="centre-crop to this size first (CelebA: 178)")] = None,
    patch: Annotated[int | None, Opt(help="train on random patches of this size")] = None,
    test_size: Annotated[float | None, Opt(help="held-out count (>=1) or fraction (<1)")] = None,
    limit: Annotated[int | None, Opt(help="use at most this many training files")] = None,
    width: Annotated[int | None, Opt(help="hidden width")] = None,
    depth: Annotated[int | None, Opt(help="number of linear layers")] = None,
    w0: Annotated[float | None, Opt(help="SIREN frequency")] = None,
    offset: Annotated[float | None, Opt(help="output offset (+0.5 in GradNCP/Functa)")] = None,
    inner_steps: Annotated[int | None, Opt(help="inner SGD steps K")] = None,
    inner_lr: Annotated[float | None, Opt(help="inner learning rate")] = None,
    meta_sgd: Annotated[bool | None, Opt("--meta-sgd/--no-meta-sgd", help="learn per-entry rates")] = None,
    first_order: Annotated[bool | None, Opt("--first-order/--second-order")] = None,
    steps: Annotated[int | None, Opt(help="outer steps")] = None,
    meta_batch: Annotated[int | None, Opt(help="signals per outer step")] = None,
    outer_lr: Annotated[float | None, Opt(help="outer Adam learning rate")] = None,
    grad_clip: Annotated[float | None, Opt(help="outer gradient-norm clip (0: off)")] = None,
    strategy: Annotated[str | None, Opt(help="meta-batch strategy: auto, loop, batched, vmap")] = None,
    chunk: Annotated[int | None, Opt(help="coordinates per chunk in full-context passes (memory)")] = None,
    seed: Annotated[int | None, Opt()] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda")] = None,
    eval_every: Annotated[int | None, Opt()] = None,
    ckpt_every: Annotated[int | None, Opt()] = None,
    prune_rounds: Annotated[int | None, Opt(help="pruning rounds (metasparse / random-prune)")] = None,
    prune_fraction: Annotated[float | None, Opt(help="fraction of remaining weights pruned per round")
                              ] = None,
    dense_steps: Annotated[int | None, Opt(help="dense meta-training steps before pruning")] = None,
    round_steps: Annotated[int | None, Opt(help="meta-training steps after each pruning")] = None,
    max_minutes: Annotated[float | None, Opt(help="stop after this many minutes (checkpoint kept)")] = None,
    tensorboard: Annotated[bool, Opt(help="write TensorBoard logs to RUN/tb")] = False,
    resume: Annotated[bool, Opt("--resume/--no-resume", help="continue from RUN's newest checkpoint")] = True,
    quiet: Annotated[bool, Opt(help="no progress bar")] = False,
) -> None:
    """Meta-learn an initialisation (and rates, masks, gates per method) on a dataset."""
    from dataclasses import replace

    from metainr.cli.common import info
    from metainr.methods import apply_preset
    from metainr.runs.config import RunConfig
    from metainr.runs.trainer import Trainer
    from metainr.signals.datasets import preset_for

    cfg = RunConfig.load(config) if config else RunConfig()
    data_over = preset_for(data_preset or data)
    data_over.update(path=data, resolution=resolution, modality=modality)
    for k, v in dict(center_crop=center_crop, patch=patch, limit=limit).items():
        if v is not None:
            data_over[k] = v
    if test_size is not None:
        data_over["test_size"] = int(test_size) if test_size >= 1 else test_size
    cfg.data = replace(cfg.data, **data_over)
    field_over = {k: v for k, v in dict(width=width, depth=depth, w0=w0, output_offset=offset).items()
                  if v is not None}
    method_over = {k: v for k, v in dict(inner_steps=inner_steps, inner_lr=inner_lr, meta_sgd=meta_sgd,
                                         first_order=first_order).items() if v is not None}
    cfg.field, cfg.method = apply_preset(method, cfg.field, cfg.method, field_over, method_over)
    if "pruning" in cfg.method.options:
        from metainr.methods import pruning_config

        pruning = {k: v for k, v in dict(rounds=prune_rounds, fraction=prune_fraction,
                                         dense_steps=dense_steps, round_steps=round_steps).items()
                   if v is not None}
        cfg.method.options = {**cfg.method.options,
                              "pruning": {**cfg.method.options["pruning"], **pruning}}
        if steps is None:  # the schedule defines the length of the run
            steps = pruning_config(cfg.method).total_steps
    train_over = {k: v for k, v in dict(steps=steps, meta_batch=meta_batch, outer_lr=outer_lr,
                                        strategy=strategy, chunk=chunk, seed=seed, device=device,
                                        eval_every=eval_every,
                                        ckpt_every=ckpt_every, max_minutes=max_minutes).items()
                  if v is not None}
    if grad_clip is not None:
        train_over["grad_clip"] = grad_clip or None
    cfg.train = replace(cfg.train, tensorboard=tensorboard, **train_over)
    trainer = Trainer(cfg, out, resume=resume, progress=not quiet)
    if trainer.dist.is_main:
        info(f"run {out}: {len(trainer.train_set)} train / {len(trainer.test_set)} test signals, "
             f"starting at step {trainer.step} of {cfg.train.steps}")
    summary = trainer.train()
    if trainer.dist.is_main:
        ev = summary["eval"]
        print(f"step {summary['step']}: test PSNR {ev['test_psnr']:.2f} dB after {ev['inner_steps']} inner "
              f"steps (init {ev['test_psnr_init']:.2f} dB); checkpoint {trainer.last_checkpoint}")
    from metainr.runs.distributed import shutdown

    shutdown(trainer.dist)
