"""Two CPU processes under torchrun (gloo) give the single-process meta-gradient; only rank 0 writes."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed

from metainr.methods import build_learner

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build")

STEPS = 3
META_BATCH = 4  # 2 signals per process

SCRIPT = textwrap.dedent(f"""
    import json, os, sys
    from pathlib import Path

    import torch

    from metainr.methods import FieldConfig, MethodConfig
    from metainr.runs.config import RunConfig, TrainConfig
    from metainr.runs.distributed import shutdown
    from metainr.runs.trainer import Trainer
    from metainr.signals.batch import materialize
    from metainr.signals.datasets import DataSpec, InMemoryDataset


    def signal_sets():
        g = torch.Generator().manual_seed(0)
        signals = torch.rand(10, 3, 8, 8, generator=g)
        return (materialize(InMemoryDataset(signals[:8])), materialize(InMemoryDataset(signals[8:])))


    def config():
        return RunConfig(data=DataSpec(path="embedded", resolution=8),
                         field=FieldConfig(width=16, depth=3),
                         method=MethodConfig(inner_steps=2, inner_lr=1e-2),
                         train=TrainConfig(steps={STEPS}, meta_batch={META_BATCH}, outer_lr=1e-3,
                                           eval_every=0, eval_signals=2, ckpt_every=1, log_every=1,
                                           strategy="loop", device="cpu", seed=3))


    def main(out):
        torch.set_num_threads(1)
        out = Path(out)
        rank = int(os.environ.get("RANK", "0"))
        # One run directory per rank, so anything rank 1 writes would be seen.
        trainer = Trainer(config(), out / f"run{{rank}}", progress=False, signal_sets=signal_sets())
        summary = trainer.train()
        state = {{k: v.clone() for k, v in trainer.learner.state_dict().items()}}
        torch.save(state, out / f"state{{rank}}.pt")
        (out / f"info{{rank}}.json").write_text(json.dumps(
            {{"rank": trainer.dist.rank, "world": trainer.dist.world_size, "step": summary["step"],
              "loss": summary["train"]["loss"]}}))
        shutdown(trainer.dist)


    if __name__ == "__main__":
        main(sys.argv[1])
""")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_match_one(tmp_path, monkeypatch):
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    dist_out.mkdir()
    single_out.mkdir()

    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max-restarts", "0", str(script), str(dist_out)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 120 s; output:\n{e.stdout}\n{e.stderr}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"

    # The single-process reference, in this process, with the same global meta-batch and seed.
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    reference = runpy.run_path(str(script), run_name="reference")
    reference["main"](str(single_out))

    infos = [json.loads((dist_out / f"info{r}.json").read_text()) for r in (0, 1)]
    assert [(i["rank"], i["world"], i["step"]) for i in infos] == [(0, 2, STEPS), (1, 2, STEPS)]
    single_info = json.loads((single_out / "info0.json").read_text())
    assert single_info["world"] == 1
    assert infos[0]["loss"] == pytest.approx(single_info["loss"], rel=1e-5)

    rank0 = torch.load(dist_out / "state0.pt")
    rank1 = torch.load(dist_out / "state1.pt")
    single = torch.load(single_out / "state0.pt")
    cfg = reference["config"]()
    start = build_learner(cfg.field, cfg.method, 2, 3, seed=cfg.train.seed).state_dict()
    assert rank0.keys() == rank1.keys() == single.keys() == start.keys()
    assert max(float((rank0[k] - start[k]).abs().max()) for k in start) > 1e-4  # training moved them
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), f"ranks disagree on {k}"
        torch.testing.assert_close(rank0[k], single[k], rtol=0, atol=1e-6, msg=f"{k} differs from 1 process")

    # Only rank 0 writes the run: config, metrics, checkpoints.
    run0 = dist_out / "run0"
    assert (run0 / "config.json").exists() and (run0 / "metrics.jsonl").exists()
    assert len(list((run0 / "checkpoints").glob("step_*.json"))) == STEPS
    assert not (dist_out / "run1").exists() or not any((dist_out / "run1").rglob("*"))
