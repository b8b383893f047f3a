"""Checkpoints: exact round trips (learner, Adam moments, RNG, masks), atomic writes, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metainr.errors import CheckpointError
from metainr.methods import FieldConfig, MethodConfig, apply_preset, build_learner
from metainr.runs import checkpoint as ckpt
from metainr.runs.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from metainr.runs.config import RunConfig

WIDTH, DEPTH = 16, 3



def make_cfg(width: int = WIDTH, preset: str = "maml") -> RunConfig:
    fcfg, mcfg = apply_preset(preset, FieldConfig(width=width, depth=DEPTH), MethodConfig(inner_steps=1))
    return RunConfig(field=fcfg, method=mcfg)


def make_learner(cfg: RunConfig, seed: int = 0):
    return build_learner(cfg.field, cfg.method, 2, 3, seed=seed, strategy="batched")


def trained(cfg: RunConfig, steps: int = 2):
    """A learner and an Adam optimiser with non-trivial state (a few outer steps on random data)."""
    learner = make_learner(cfg)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    coords = torch.rand(16, 2, generator=g) * 2 - 1
    values = torch.rand(2, 16, 3, generator=g)
    for _ in range(steps):
        opt.zero_grad()
        learner.meta_backward(coords, values)
        opt.step()
        learner.after_outer_step()
    return learner, opt


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_restores_learner_optimizer_step_and_rng(tmp_path):
    cfg = make_cfg(preset="meta-sgd")  # learned rates: more parameter groups in the Adam state
    learner, opt = trained(cfg)
    torch.manual_seed(123)
    torch.rand(3)  # some RNG position that is not a fresh seed
    path = save_checkpoint(tmp_path, 7, learner, opt, cfg.model_signature(), extra={"note": "x"})
    expected_draw = torch.rand(5)
    assert path == tmp_path / "step_0000007"
    assert files(tmp_path) == ["step_0000007.json", "step_0000007.safetensors"]

    fresh = make_learner(cfg, seed=99)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.5)
    torch.manual_seed(0)
    meta = load_checkpoint(path, fresh, fresh_opt, cfg.model_signature())
    assert meta["step"] == 7 and meta["extra"] == {"note": "x"}
    assert torch.equal(torch.rand(5), expected_draw)  # RNG restored

    src, dst = learner.state_dict(), fresh.state_dict()
    assert src.keys() == dst.keys()
    for k in src:
        assert torch.equal(src[k], dst[k]), k

    src_opt, dst_opt = opt.state_dict(), fresh_opt.state_dict()
    assert dst_opt["param_groups"][0]["lr"] == 1e-3
    assert src_opt["state"].keys() == dst_opt["state"].keys() and src_opt["state"]
    for idx, st in src_opt["state"].items():
        assert set(st) == set(dst_opt["state"][idx]) >= {"step", "exp_avg", "exp_avg_sq"}
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(dst_opt["state"][idx][k])), (idx, k)

    # One more identical step from both: the moments are attached to the right parameters.
    for lrn, o in ((learner, opt), (fresh, fresh_opt)):
        for p in lrn.parameters():
            p.grad = torch.ones_like(p) * 0.1
        o.step()
    for (k, a), b in zip(learner.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_restore_rng_false_leaves_rng_alone(tmp_path):
    cfg = make_cfg()
    learner, opt = trained(cfg, steps=1)
    path = save_checkpoint(tmp_path, 1, learner, None, cfg.model_signature())
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_checkpoint(path, make_learner(cfg), None, cfg.model_signature(), restore_rng=False)
    assert torch.equal(torch.rand(3), expected)


def test_masks_survive_into_a_fresh_learner(tmp_path):
    cfg = make_cfg()
    learner, opt = trained(cfg, steps=1)
    g = torch.Generator().manual_seed(3)
    mask = (torch.rand(WIDTH, WIDTH, generator=g) > 0.5).float()
    learner.partition.set_mask("w1", mask)
    path = save_checkpoint(tmp_path, 1, learner, opt, cfg.model_signature())

    fresh = make_learner(cfg, seed=4)
    assert "w1" not in fresh.partition.masks
    load_checkpoint(path, fresh, torch.optim.Adam(fresh.parameters()), cfg.model_signature())
    assert torch.equal(fresh.partition.masks["w1"], mask)
    assert fresh.partition.mask_dict() is not None
    w1 = fresh.partition.init["w1"]
    assert torch.all(w1[mask == 0] == 0)
    coords = torch.rand(10, 2) * 2 - 1
    start = learner.start_params(None)
    assert torch.equal(fresh.predict(fresh.start_params(None), coords), learner.predict(start, coords))
    # The mask keeps applying after loading: an optimiser step cannot revive pruned weights.
    with torch.no_grad():
        w1.add_(1.0)
    fresh.after_outer_step()
    assert torch.all(w1[mask == 0] == 0)


def test_saves_leave_no_temporary_files(tmp_path):
    cfg = make_cfg()
    learner, opt = trained(cfg, steps=1)
    for step in (1, 2):
        save_checkpoint(tmp_path, step, learner, opt, cfg.model_signature())
    save_checkpoint(tmp_path, 2, learner, opt, cfg.model_signature(), name="pruned_round_1")  # overwrite
    save_checkpoint(tmp_path, 2, learner, opt, cfg.model_signature(), name="pruned_round_1")
    assert files(tmp_path) == ["pruned_round_1.json", "pruned_round_1.safetensors",
                               "step_0000001.json", "step_0000001.safetensors",
                               "step_0000002.json", "step_0000002.safetensors"]


def test_failed_atomic_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    ckpt.atomic_write_text(target, "old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ckpt.atomic_write_text(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert files(tmp_path) == ["a.json"]


@pytest.mark.parametrize("other", [dict(width=2 * WIDTH), dict(preset="meta-sgd"), dict(preset="maml-fo")])
def test_checkpoint_from_another_config_is_refused(tmp_path, other):
    cfg = make_cfg()
    learner, opt = trained(cfg, steps=1)
    path = save_checkpoint(tmp_path, 1, learner, opt, cfg.model_signature())
    other_cfg = make_cfg(**other)
    target = make_learner(other_cfg)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, target, None, other_cfg.model_signature())
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "different" in msg


@pytest.mark.parametrize("other", [dict(width=2 * WIDTH), dict(preset="meta-sgd")])
def test_checkpoint_that_does_not_fit_is_refused_without_signature(tmp_path, other):
    """Even without a signature check, a shape/key mismatch is a one-line CheckpointError."""
    cfg = make_cfg()
    learner, _ = trained(cfg, steps=1)
    path = save_checkpoint(tmp_path, 1, learner, None, cfg.model_signature())
    other_cfg = make_cfg(**other)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, make_learner(other_cfg), None, None)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "bad_json", "no_tensors"])
def test_damaged_checkpoint_raises_checkpoint_error(tmp_path, damage):
    cfg = make_cfg()
    learner, opt = trained(cfg, steps=1)
    path = save_checkpoint(tmp_path, 1, learner, opt, cfg.model_signature())
    tensors = path.with_suffix(".safetensors")
    data = tensors.read_bytes()
    if damage == "truncate":
        tensors.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        tensors.write_bytes((bytes(range(256)) * (len(data) // 256 + 1))[: len(data)])
    elif damage == "empty":
        tensors.write_bytes(b"")
    elif damage == "bad_json":
        path.with_suffix(".json").write_text("{not json")
    else:
        tensors.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, make_learner(cfg), torch.optim.Adam(make_learner(cfg).parameters()),
                        cfg.model_signature())
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_list_checkpoints_ignores_incomplete(tmp_path):
    cfg = make_cfg()
    learner, _ = trained(cfg, steps=1)
    assert list_checkpoints(tmp_path / "missing") == []
    for step in (2, 10, 3):
        save_checkpoint(tmp_path, step, learner, None, cfg.model_signature())
    save_checkpoint(tmp_path, 12, learner, None, cfg.model_signature(), name="pruned_round_1")
    # Interrupted between the two writes: tensors present, JSON missing.
    save_checkpoint(tmp_path, 20, learner, None, cfg.model_signature())
    (tmp_path / "step_0000020.json").unlink()
    # JSON without tensors, and an unreadable JSON.
    (tmp_path / "step_0000030.json").write_text(json.dumps({"step": 30}))
    save_checkpoint(tmp_path, 40, learner, None, cfg.model_signature())
    (tmp_path / "step_0000040.json").write_text("{")
    # Unrelated JSON files in the folder.
    (tmp_path / "notes.json").write_text("{}")

    found = list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step_0000002", "step_0000003", "step_0000010", "pruned_round_1"]


@pytest.mark.skipif(not hasattr(ckpt.os, "fchmod"), reason="POSIX file modes")
def test_atomic_writes_honour_the_umask(tmp_path):
    """Like open(): 0o666 less the umask, not mkstemp's private 0o600."""
    old = ckpt.os.umask(0o022)
    try:
        ckpt.atomic_write_text(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        ckpt.os.umask(0o077)
        ckpt.atomic_write_text(tmp_path / "b.json", "{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        ckpt.os.umask(old)
