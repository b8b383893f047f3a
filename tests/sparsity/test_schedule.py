"""The Meta-SparseINR / Random Pruning schedule around meta-training: round checkpoints at the right
densities, exact resume mid-schedule (also after a crash between a round checkpoint and its
pruning), random masks with the same counts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from metainr.methods import FieldConfig, MethodConfig, apply_preset, pruning_config, train_callbacks
from metainr.runs.checkpoint import list_checkpoints
from metainr.runs.config import RunConfig, TrainConfig
from metainr.runs.trainer import Trainer
from metainr.signals.batch import materialize
from metainr.signals.datasets import DataSpec, InMemoryDataset
from metainr.sparsity.schedule import PruningConfig, PruningSchedule

PRUNABLE = ("w0", "w1", "w2")
TOTAL = 2 * 16 + 16 * 16 + 16 * 3   # weights of a width-16, depth-3 SIREN on RGB images
ROUNDS = 3



def signal_sets():
    g = torch.Generator().manual_seed(0)
    signals = torch.rand(10, 3, 8, 8, generator=g)
    return materialize(InMemoryDataset(signals[:8])), materialize(InMemoryDataset(signals[8:]))


def make_cfg(preset: str = "metasparse", **train) -> RunConfig:
    fcfg, mcfg = apply_preset(preset, FieldConfig(width=16, depth=3), MethodConfig(inner_steps=2))
    # like the CLI: a fresh options dict (the preset's own dict is never mutated)
    schedule = {"dense_steps": 2, "round_steps": 2, "rounds": ROUNDS}
    mcfg.options = {**mcfg.options, "pruning": {**mcfg.options["pruning"], **schedule}}
    steps = pruning_config(mcfg).total_steps
    tcfg = TrainConfig(**{**dict(steps=steps, meta_batch=4, outer_lr=1e-3, eval_every=0, eval_signals=2,
                                 ckpt_every=1000, log_every=1, strategy="loop"), **train})
    return RunConfig(data=DataSpec(path="embedded", resolution=8), field=fcfg, method=mcfg, train=tcfg)


def trainer(cfg: RunConfig, run_dir) -> Trainer:
    return Trainer(cfg, run_dir, resume=True, progress=False, signal_sets=signal_sets())


def expected_kept() -> list[int]:
    out, rem = [TOTAL], TOTAL
    for _ in range(ROUNDS):
        rem -= round(0.2 * rem)
        out.append(rem)
    return out


def ckpt_masks(path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path.with_suffix(".safetensors")))
    return {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith("learner.partition.masks.")}


def ckpt_weights(path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(path.with_suffix(".safetensors")))
    return {n: tensors[f"learner.partition.init.{n}"] for n in PRUNABLE}


def final_state(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.learner.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory):
    """One uninterrupted run per kind, shared by the tests below."""
    out = {}
    for preset in ("metasparse", "random-prune"):
        run_dir = tmp_path_factory.mktemp(preset) / "run"
        t = trainer(make_cfg(preset), run_dir)
        t.train()
        out[preset] = (t, run_dir, final_state(t))
    return out


def test_config_and_callbacks():
    cfg = make_cfg()
    pc = pruning_config(cfg.method)
    assert pc == PruningConfig(kind="magnitude", fraction=0.2, rounds=3, dense_steps=2, round_steps=2)
    assert pc.total_steps == 8 and [pc.boundary(r) for r in range(4)] == [2, 4, 6, 8]
    assert pc.density(3) == pytest.approx(0.512)
    cbs = train_callbacks(cfg.method, seed=5)
    assert len(cbs) == 1 and isinstance(cbs[0], PruningSchedule) and cbs[0].seed == 5
    assert train_callbacks(apply_preset("maml")[1]) == []
    assert pruning_config(make_cfg("random-prune").method).kind == "random"
    sched = PruningSchedule(pc)
    assert [sched.expected_prunings(s) for s in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]


@pytest.mark.parametrize("preset", ["metasparse", "random-prune"])
def test_round_checkpoints_densities(whole_runs, preset):
    t, run_dir, _ = whole_runs[preset]
    assert t.step == 8
    ckpt_dir = run_dir / "checkpoints"
    kept = expected_kept()
    for r in range(ROUNDS + 1):
        path = ckpt_dir / f"round_{r:02d}"
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["step"] == 2 + 2 * r
        assert meta["extra"]["prunings"] == r
        assert meta["extra"]["params"]["weights_nonzero"] == kept[r]
        assert meta["extra"]["params"]["weights_dense"] == TOTAL
        masks = ckpt_masks(path)
        if r == 0:
            assert masks == {}      # the dense phase has no masks yet
            continue
        assert set(masks) == set(PRUNABLE)
        n_kept = int(sum(m.sum() for m in masks.values()))
        assert n_kept == kept[r]
        assert abs(n_kept / TOTAL - 0.8 ** r) < 1.5 * r / TOTAL
        for n, w in ckpt_weights(path).items():
            assert torch.all(w[masks[n] == 0] == 0)
        if r > 1:   # nested: masks only ever remove more
            prev = ckpt_masks(ckpt_dir / f"round_{r - 1:02d}")
            for n in PRUNABLE:
                assert torch.all(masks[n] <= prev[n])
    # the final step checkpoint is after the last round, still with its masks
    last = list_checkpoints(ckpt_dir)[-1]
    meta = json.loads(last.with_suffix(".json").read_text())
    assert meta["step"] == 8 and meta["extra"]["prunings"] == ROUNDS
    assert int(sum(m.sum() for m in ckpt_masks(last).values())) == kept[-1]
    # the learner in memory: exactly sparse, as many prune events logged as rounds
    for n in PRUNABLE:
        w = t.learner.partition.init[n].detach()
        assert torch.all(w[t.learner.partition.masks[n] == 0] == 0)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    prunes = [rec for rec in records if rec.get("kind") == "prune"]
    assert [p["prunings"] for p in prunes] == [1, 2, 3]
    assert [p["step"] for p in prunes] == [2, 4, 6]
    assert [p["kept_weights"] for p in prunes] == kept[1:]


def test_random_prune_differs_with_same_counts(whole_runs):
    mag_dir, rnd_dir = whole_runs["metasparse"][1], whole_runs["random-prune"][1]
    for r in range(1, ROUNDS + 1):
        a = ckpt_masks(mag_dir / "checkpoints" / f"round_{r:02d}")
        b = ckpt_masks(rnd_dir / "checkpoints" / f"round_{r:02d}")
        assert int(sum(m.sum() for m in a.values())) == int(sum(m.sum() for m in b.values()))
        assert any(not torch.equal(a[n], b[n]) for n in PRUNABLE)
    # the magnitude masks removed the smallest weights of the round's (dense) init; random did not
    dense_w = ckpt_weights(mag_dir / "checkpoints" / "round_00")
    masks = ckpt_masks(mag_dir / "checkpoints" / "round_01")
    flat_w = torch.cat([dense_w[n].reshape(-1) for n in PRUNABLE]).abs()
    flat_m = torch.cat([masks[n].reshape(-1) for n in PRUNABLE])
    assert flat_w[flat_m == 0].max() <= flat_w[flat_m == 1].min()


@pytest.mark.parametrize("until", [3, 4])
@pytest.mark.parametrize("preset", ["metasparse", "random-prune"])
def test_resume_mid_schedule_equals_uninterrupted(tmp_path, whole_runs, preset, until):
    cfg = make_cfg(preset)
    first = trainer(cfg, tmp_path / "split")
    first.train(until=until)
    assert first.step == until
    del first
    second = trainer(cfg, tmp_path / "split")
    assert second.step == until
    second.train()
    assert second.step == 8
    assert_same_state(final_state(second), whole_runs[preset][2])
    for r in range(ROUNDS + 1):
        assert (tmp_path / "split" / "checkpoints" / f"round_{r:02d}.json").exists()
        a = ckpt_masks(tmp_path / "split" / "checkpoints" / f"round_{r:02d}")
        b = ckpt_masks(whole_runs[preset][1] / "checkpoints" / f"round_{r:02d}")
        assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("preset", ["metasparse", "random-prune"])
def test_resume_after_crash_between_round_checkpoint_and_pruning(tmp_path, whole_runs, preset):
    """Only the (pre-pruning) round checkpoint survives: resuming must prune first, as the schedule says."""
    cfg = make_cfg(preset)
    first = trainer(cfg, tmp_path / "crash")
    first.train(until=4)
    ckpt_dir = tmp_path / "crash" / "checkpoints"
    for p in ckpt_dir.glob("step_*"):
        p.unlink()
    assert list_checkpoints(ckpt_dir)[-1].name == "round_01"
    second = trainer(cfg, tmp_path / "crash")
    assert second.step == 4
    assert second.callbacks[-1].prunings == 2
    assert int(sum(m.sum() for m in second.learner.partition.masks.as_dict().values())) == expected_kept()[2]
    second.train()
    assert_same_state(final_state(second), whole_runs[preset][2])


def test_round_checkpoints_not_rotated_away(tmp_path):
    t = trainer(make_cfg(ckpt_every=1, keep_checkpoints=2), tmp_path / "run")
    t.train()
    names = sorted(p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints"))
    assert names == ["round_00", "round_01", "round_02", "round_03", "step_0000007", "step_0000008"]
