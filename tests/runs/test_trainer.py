"""Trainer: exact resume, run-directory checks, divergence handling, metrics and TensorBoard logs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from metainr.errors import ConfigError, DataError, DivergenceError
from metainr.methods import FieldConfig, MethodConfig, apply_preset
from metainr.runs.checkpoint import list_checkpoints
from metainr.runs.config import RunConfig, TrainConfig
from metainr.runs.trainer import Trainer
from metainr.signals.batch import materialize
from metainr.signals.datasets import DataSpec, InMemoryDataset


def signal_sets(n_train: int = 8, n_test: int = 2, side: int = 8):
    g = torch.Generator().manual_seed(0)
    signals = torch.rand(n_train + n_test, 3, side, side, generator=g)
    return (materialize(InMemoryDataset(signals[:n_train])),
            materialize(InMemoryDataset(signals[n_train:])))


def make_cfg(preset: str = "maml", width: int = 16, options: dict | None = None, **train) -> RunConfig:
    fcfg, mcfg = apply_preset(preset, FieldConfig(width=width, depth=3), MethodConfig())
    mcfg = replace(mcfg, inner_steps=2, options=mcfg.options if options is None else options)
    tcfg = TrainConfig(**{**dict(steps=6, meta_batch=4, outer_lr=1e-3, eval_every=0, eval_signals=2,
                                 ckpt_every=3, log_every=1, strategy="loop"), **train})
    return RunConfig(data=DataSpec(path="embedded", resolution=8), field=fcfg, method=mcfg, train=tcfg)


def trainer(cfg: RunConfig, run_dir, resume: bool = True) -> Trainer:
    return Trainer(cfg, run_dir, resume=resume, progress=False, signal_sets=signal_sets())


TINY_PRUNING = {"pruning": {"kind": "random", "fraction": 0.5, "rounds": 2, "dense_steps": 2,
                             "round_steps": 2}}  # prunes at steps 2 and 4: on both sides of the resume


@pytest.mark.parametrize("preset,options", [("maml", None), ("random-context", None),
                                            ("metasparse", TINY_PRUNING)],
                         ids=["maml", "random-context", "pruning"])
def test_resume_equals_uninterrupted(tmp_path, preset, options):
    """random-context draws from the global RNG in every inner step, so it is only exact if the RNG
    state is restored; the pruning schedule adds masks and round checkpoints across the resume."""
    cfg = make_cfg(preset, options=options)
    whole = trainer(cfg, tmp_path / "whole")
    whole.train()
    assert whole.step == 6

    first = trainer(cfg, tmp_path / "split")
    first.train(until=3)
    assert first.step == 3
    assert list_checkpoints(tmp_path / "split" / "checkpoints")[-1].name == "step_0000003"
    del first
    torch.manual_seed(12345)  # the process's RNG is elsewhere now; resuming must restore it
    second = trainer(cfg, tmp_path / "split")
    assert second.step == 3
    second.train()
    assert second.step == 6

    a, b = whole.learner.state_dict(), second.learner.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = whole.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[idx][k], sb[idx][k]), (idx, k)
    if options:
        assert len(second.learner.partition.masks) > 0
        names = sorted(p.name for p in list_checkpoints(tmp_path / "split" / "checkpoints"))
        assert sorted(p.name for p in list_checkpoints(tmp_path / "whole" / "checkpoints")) == names


def test_run_dir_with_other_config_refuses_to_resume(tmp_path):
    run = tmp_path / "run"
    trainer(make_cfg(steps=1, ckpt_every=1), run).train()
    saved = (run / "config.json").read_text()

    with pytest.raises(ConfigError, match="different field config.*width"):
        trainer(make_cfg(width=32, steps=1), run)
    with pytest.raises(ConfigError, match="different method config"):
        trainer(make_cfg("meta-sgd", steps=1), run)
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer(make_cfg(steps=1), run, resume=False)
    assert (run / "config.json").read_text() == saved  # refused runs leave the config alone

    # Training settings may change on resume (e.g. more steps).
    more = trainer(make_cfg(steps=2, ckpt_every=1), run)
    assert more.step == 1
    more.train()
    assert RunConfig.load(run / "config.json").train.steps == 2


def test_failed_start_leaves_no_run_behind(tmp_path):
    """A start that fails (here: bad data) must not leave a config.json that blocks a corrected retry."""
    run = tmp_path / "run"
    bad = make_cfg()
    bad.data = replace(bad.data, path=str(tmp_path / "missing"))
    with pytest.raises(DataError, match="not found"):
        Trainer(bad, run, progress=False)
    assert not (run / "config.json").exists()
    trainer(make_cfg(), run)  # the retry with other data settings is accepted


@pytest.mark.parametrize("what", ["loss", "parameters"])
def test_divergence_names_last_good_checkpoint(tmp_path, what):
    run = tmp_path / "run"
    t = trainer(make_cfg(steps=10, ckpt_every=2), run)
    t.train(until=2)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    if what == "loss":
        t.learner.partition.inner_lr = 1e30  # adapted weights blow up -> non-finite outer loss
    else:  # an optimiser step that overflows a weight (the loss before it was still finite)
        step = t.optimizer.step

        def overflowing_step(*args, **kwargs):
            out = step(*args, **kwargs)
            with torch.no_grad():
                t.learner.partition.init["w1"][0, 0] = float("inf")
            return out

        t.optimizer.step = overflowing_step
    with pytest.raises(DivergenceError) as err:
        t.train()
    msg = str(err.value)
    assert "\n" not in msg and f"non-finite {what}" in msg
    assert "last good checkpoint" in msg and str(run / "checkpoints" / "step_0000002") in msg
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert t.step == 2


def test_divergence_before_any_checkpoint(tmp_path):
    t = trainer(make_cfg(steps=2), tmp_path / "run")
    t.learner.partition.inner_lr = 1e30
    with pytest.raises(DivergenceError, match="no checkpoint yet"):
        t.train()
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == []


def test_config_and_metrics_are_written(tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg(steps=4, ckpt_every=2, log_every=2, eval_every=2)
    summary = trainer(cfg, run).train()
    assert RunConfig.load(run / "config.json").to_dict() == cfg.to_dict()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [2, 4]
    assert all({"loss", "psnr", "grad_norm", "elapsed", "time"} <= r.keys() for r in train)
    assert [r["step"] for r in evals] == [2, 4]  # periodic (not at the last step) + final
    assert all({"test_psnr", "test_psnr_init", "inner_steps"} <= r.keys() for r in evals)
    assert summary["step"] == 4 and summary["eval"]["test_psnr"] == evals[-1]["test_psnr"]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_0000002", "step_0000004"]
    assert not list(run.rglob("*.tmp"))


def test_old_checkpoints_are_pruned(tmp_path):
    run = tmp_path / "run"
    trainer(make_cfg(steps=4, ckpt_every=1, keep_checkpoints=2), run).train()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_0000003", "step_0000004"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_0000003.json", "step_0000003.safetensors", "step_0000004.json", "step_0000004.safetensors"]


def test_tensorboard_events_written(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    run = tmp_path / "run"
    trainer(make_cfg(steps=2, ckpt_every=0, tensorboard=True), run).train()
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
