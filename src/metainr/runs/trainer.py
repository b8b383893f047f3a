"""Meta-training runs: a run directory with config, checkpoints, metrics and optional TensorBoard.

Run directory layout::

    RUN/config.json            resolved RunConfig (checked on resume)
    RUN/checkpoints/step_*.safetensors|json
    RUN/metrics.jsonl          one JSON record per log / eval event
    RUN/tb/                    TensorBoard events (optional)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metainr.errors import ConfigError, DivergenceError
from metainr.meta.fit import fit
from metainr.methods import build_learner
from metainr.runs.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from metainr.runs.config import RunConfig
from metainr.runs.distributed import (
    DistInfo,
    all_reduce_grads,
    all_reduce_mean,
    init_distributed,
    local_device,
)
from metainr.signals.batch import SignalSet, materialize

StepCallback = Callable[["Trainer", int], None]


def load_signal_sets(cfg: RunConfig) -> tuple[SignalSet, SignalSet]:
    from metainr.signals.datasets import load_dataset

    train, test = load_dataset(cfg.data)
    return materialize(train, "training split"), materialize(test, "test split")


def batch_indices(seed: int, step: int, n: int, batch: int) -> torch.Tensor:
    """The signals of outer step ``step``: a function of (seed, step) only, so resuming and multiple
    processes see the same meta-batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if batch <= n:
        return torch.randperm(n, generator=g)[:batch]
    return torch.randint(n, (batch,), generator=g)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path | str, resume: bool = True, progress: bool = True,
                 callbacks: list[StepCallback] | None = None,
                 signal_sets: tuple[SignalSet, SignalSet] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        from metainr.methods import train_callbacks

        self.callbacks = list(callbacks or []) + train_callbacks(cfg.method, seed=cfg.train.seed)
        self.device = local_device(cfg.train.device)
        self.dist: DistInfo = init_distributed(self.device)
        if cfg.train.meta_batch % self.dist.world_size:
            raise ConfigError(f"meta-batch {cfg.train.meta_batch} does not split over "
                              f"{self.dist.world_size} processes")
        self._check_run_dir(resume)
        train, test = signal_sets or load_signal_sets(cfg)
        self.train_set, self.test_set = train.to(self.device), test.to(self.device)
        conv = self.train_set.converter
        self.learner = build_learner(cfg.field, cfg.method, conv.coord_dim, conv.channels,
                                     seed=cfg.train.seed, strategy=cfg.train.strategy,
                                     chunk=cfg.train.chunk).to(self.device)
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=cfg.train.outer_lr)
        self.step = 0
        self.last_checkpoint: Path | None = None
        self._writer = None
        torch.manual_seed(cfg.train.seed)
        if resume:
            self._resume()
        if self.dist.is_main:  # only once the run could start: a failed start leaves no config behind
            self.cfg.save(self.run_dir / "config.json")

    # ----------------------------------------------------------------------------- set-up
    def signature(self) -> dict[str, Any]:
        return self.cfg.model_signature()

    def _check_run_dir(self, resume: bool) -> None:
        saved = self.run_dir / "config.json"
        if saved.exists():
            old = RunConfig.load(saved)
            if not resume:
                raise ConfigError(f"{self.run_dir} already holds a run; pass --resume or a new --out")
            mine, theirs = self.cfg.to_dict(), old.to_dict()
            for section in ("data", "field", "method"):
                if mine[section] != theirs[section]:
                    diff = sorted(k for k in mine[section] if mine[section][k] != theirs[section].get(k))
                    raise ConfigError(f"{self.run_dir} holds a run with a different {section} config "
                                      f"({', '.join(diff)}); use a new --out or the same settings")

    def _resume(self) -> None:
        ckpts = list_checkpoints(self.ckpt_dir)
        if not ckpts:
            return
        meta = load_checkpoint(ckpts[-1], self.learner, self.optimizer, self.signature())
        self.step = int(meta["step"])
        self.last_checkpoint = ckpts[-1]
        for cb in self.callbacks:
            if hasattr(cb, "on_resume"):
                cb.on_resume(self, meta)

    # ----------------------------------------------------------------------------- logging
    def log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        record = {"step": self.step, "time": round(time.time(), 3), **record}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.cfg.train.tensorboard:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tb"))
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self._writer.add_scalar(f"{record.get('kind', 'train')}/{k}", v, self.step)

    def save(self, name: str | None = None, extra: dict[str, Any] | None = None) -> Path | None:
        if not self.dist.is_main:
            return None
        state = {}
        for cb in self.callbacks:
            if hasattr(cb, "state"):
                state.update(cb.state(self))
        path = save_checkpoint(self.ckpt_dir, self.step, self.learner, self.optimizer, self.signature(),
                               extra={**state, **(extra or {})}, name=name)
        self.last_checkpoint = path
        self._prune_old_checkpoints()
        return path

    def _prune_old_checkpoints(self) -> None:
        keep = self.cfg.train.keep_checkpoints
        regular = [p for p in list_checkpoints(self.ckpt_dir) if p.name.startswith("step_")]
        for old in regular[:-keep] if keep > 0 else []:
            for suffix in (".json", ".safetensors"):  # JSON first: an orphan tensor file is ignored
                old.with_suffix(suffix).unlink(missing_ok=True)

    # ----------------------------------------------------------------------------- training
    def outer_step(self) -> dict[str, float]:
        cfg = self.cfg.train
        idx = batch_indices(cfg.seed, self.step, len(self.train_set), cfg.meta_batch)
        local = cfg.meta_batch // self.dist.world_size
        idx = idx[self.dist.rank * local:(self.dist.rank + 1) * local].to(self.device)
        values = self.train_set.values[idx]
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.learner.meta_backward(self.train_set.coords, values, global_batch=cfg.meta_batch)
        params = [p for p in self.learner.parameters() if p.requires_grad]
        all_reduce_grads(params, self.dist)
        metrics["loss"] = all_reduce_mean(metrics["loss"], self.dist, self.device)
        metrics["psnr"] = all_reduce_mean(metrics["psnr"], self.dist, self.device)
        if not math.isfinite(metrics["loss"]):
            raise DivergenceError(self._divergence_message("loss"))
        if cfg.grad_clip:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.optimizer.step()
        self.learner.after_outer_step()
        if not all(torch.isfinite(p).all() for p in params):
            raise DivergenceError(self._divergence_message("parameters"))
        self.step += 1
        return metrics

    def _divergence_message(self, what: str) -> str:
        where = (f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint
                 else "no checkpoint yet")
        return (f"training diverged at step {self.step} (non-finite {what}); {where}; "
                "try a lower --outer-lr or --inner-lr")

    def train(self, until: int | None = None) -> dict[str, Any]:
        cfg = self.cfg.train
        until = cfg.steps if until is None else until
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=until, initial=self.step, desc="meta-train", dynamic_ncols=True)
        last: dict[str, float] = {}
        start = time.time()
        try:
            while self.step < until:
                if cfg.max_minutes is not None and time.time() - start > 60 * cfg.max_minutes:
                    self.log({"kind": "stop", "reason": f"time budget of {cfg.max_minutes} min reached"})
                    break
                last = self.outer_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['loss']:.4g}", psnr=f"{last['psnr']:.2f}")
                if self.step % cfg.log_every == 0 or self.step == until:
                    self.log({"kind": "train", **last, "elapsed": round(time.time() - start, 2)})
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < until:
                    self.log({"kind": "eval", **self.evaluate()})
                for cb in self.callbacks:
                    cb(self, self.step)
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
        except KeyboardInterrupt:
            self.save()  # steps are atomic: the state between two steps is consistent
            raise
        finally:
            if bar is not None:
                bar.close()
        summary = {"kind": "eval", **self.evaluate()}
        self.log(summary)
        if not self.last_checkpoint or not self.last_checkpoint.name.endswith(f"{self.step:07d}"):
            self.save()
        if self._writer is not None:
            self._writer.flush()
        return {"train": last, "eval": summary, "step": self.step}

    def evaluate(self, steps: int | None = None) -> dict[str, float]:
        """PSNR on (part of) the test split after the method's inner steps from the current init."""
        steps = self.cfg.method.inner_steps if steps is None else steps
        test = self.test_set.subset(self.cfg.train.eval_signals)
        result = fit(self.learner, test.coords, test.values, steps, record_steps=[0, steps], batch_size=16)
        final = result.psnr[-1]
        return {"test_psnr": float(final.mean()), "test_psnr_std": float(final.std(unbiased=False)),
                "test_psnr_init": float(result.psnr[0].mean()), "inner_steps": steps}
