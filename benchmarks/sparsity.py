"""Meta-SparseINR vs its baselines: test PSNR against #params (the paper's main comparison).

    python benchmarks/sparsity.py --config cpu      # CelebA 32x32, shorter schedules (~1 h on 2 cores)
    python benchmarks/sparsity.py --config paper    # CelebA 178x178, SIREN 5x256, w0 200 (GPU)

Methods, all evaluated identically on the held-out split:
- metasparse: MAML dense phase, then rounds of 20% global magnitude pruning + continued MAML;
- random-prune: the same schedule from the same dense init, random masks;
- dense-narrow: the widest dense SIREN with #params <= the level's target, meta-learned for the
  dense phase's outer steps (cpu config) or as many as the metasparse model at that level (paper);
- maml-oneshot / maml-imp: the dense MAML init, each test signal pruned to the level's weight
  density while it is fitted (once half way / iteratively in the first half);
- scratch: a random init of the dense-narrow network, fitted.
#params = non-zero weights + biases (the per-signal pruning baselines: the target count).
Fitting: (a) Adam lr 1e-4 for 100 steps, (b) SGD lr 1e-2 for 2 steps.
Writes results/sparsity_<config>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, pyplot, save_figure, write_results  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "cpu": dict(data="celeba", resolution=32, width=128, depth=4, w0=30.0, outer_lr=1e-4, meta_batch=3,
                dense_steps=1200, round_steps=120, rounds=20, levels=[0, 4, 8, 12, 16, 20],
                eval_signals=25, narrow_steps="dense"),
    "paper": dict(data="celeba", resolution=178, width=256, depth=5, w0=200.0, outer_lr=1e-5,
                  meta_batch=3,
                  dense_steps=150_000, round_steps=30_000, rounds=20, levels=[0, 3, 6, 10, 13, 16, 20],
                  eval_signals=100, narrow_steps="matched"),
}
METHODS = ["metasparse", "random-prune", "dense-narrow", "maml-oneshot", "maml-imp", "scratch"]
FITS = {"adam100": dict(optimizer="adam", lr=1e-4, steps=100),
        "sgd2": dict(optimizer="sgd", lr=1e-2, steps=2)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--data", default=None, help="override the config's data path")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=Path("runs"), help="where the runs are written")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply all step counts (quick checks)")
    ap.add_argument("--eval-signals", type=int, default=None, help="override the number of test signals")
    ap.add_argument("--name", default=None, help="results name (default sparsity_<config>)")
    args = ap.parse_args(argv)

    from metainr.methods import FieldConfig, MethodConfig, apply_preset
    from metainr.runs.checkpoint import load_checkpoint
    from metainr.runs.config import RunConfig, TrainConfig
    from metainr.runs.evaluate import build_run_learner
    from metainr.runs.trainer import Trainer, load_signal_sets
    from metainr.signals.datasets import DataSpec, preset_for
    from metainr.sparsity.counting import count_params
    from metainr.sparsity.narrow import narrow_width

    c = dict(CONFIGS[args.config])
    if args.data:
        c["data"] = args.data
    if args.eval_signals:
        c["eval_signals"] = args.eval_signals
    name = args.name or f"sparsity_{args.config}"
    dense, per_round = max(1, int(c["dense_steps"] * args.scale)), max(1, int(c["round_steps"] * args.scale))
    base = RunConfig(
        data=DataSpec(**{**preset_for(c["data"]), "path": c["data"], "resolution": c["resolution"]}),
        field=FieldConfig(width=c["width"], depth=c["depth"], w0=c["w0"]),
        method=MethodConfig(inner_steps=2, inner_lr=1e-2),
        train=TrainConfig(meta_batch=c["meta_batch"], outer_lr=c["outer_lr"], eval_every=0,
                          ckpt_every=10**9, device=args.device, log_every=100),
    )
    t0 = time.time()
    sets = load_signal_sets(base)
    test = sets[1].subset(c["eval_signals"])
    work = args.work / name
    if work.exists():
        shutil.rmtree(work)
    timings: dict[str, float] = {}

    def pruned_run(kind: str, start_from: Path | None = None) -> Trainer:
        fcfg, mcfg = apply_preset("metasparse" if kind == "magnitude" else "random-prune", base.field,
                                  base.method)
        mcfg.options = {"pruning": {"kind": kind, "dense_steps": dense, "round_steps": per_round,
                                    "rounds": c["rounds"]}}
        total = dense + c["rounds"] * per_round
        cfg = replace(base, field=fcfg, method=mcfg, train=replace(base.train, steps=total))
        trainer = Trainer(cfg, work / kind, resume=False, progress=sys.stderr.isatty(), signal_sets=sets)
        if start_from is not None:  # share the dense phase: continue from the other run's round_00
            load_checkpoint(start_from, trainer.learner, trainer.optimizer, signature=None)
            trainer.step = dense
            for cb in trainer.callbacks:
                cb(trainer, trainer.step)
        start = time.time()
        trainer.train()
        timings[kind] = time.time() - start
        return trainer

    magnitude = pruned_run("magnitude")
    pruned_run("random", start_from=work / "magnitude" / "checkpoints" / "round_00")

    def round_learner(kind: str, r: int):
        cfg = RunConfig.load(work / kind / "config.json")
        lrn = build_run_learner(cfg)
        load_checkpoint(work / kind / "checkpoints" / f"round_{r:02d}", lrn, None, signature=None,
                        restore_rng=False)
        return lrn.to(magnitude.device)

    def evaluate(learner, name: str, fit_extra=None) -> dict[str, Any]:
        from metainr.meta.fit import fit

        out = {}
        for key, f in FITS.items():
            kwargs = {}
            if fit_extra is not None:
                kwargs["mask_hook"] = fit_extra(learner, f["steps"])
            dev = magnitude.device
            res = fit(learner, test.coords.to(dev), test.values.to(dev), f["steps"], optimizer=f["optimizer"],
                      lr=f["lr"], record_steps=[f["steps"]], batch_size=50, **kwargs)
            ps = res.psnr[-1]
            out[key] = {"mean": float(ps.mean()), "std": float(ps.std(unbiased=False))}
        print(f"  {name:>13}: adam100 {out['adam100']['mean']:.2f} dB, sgd2 {out['sgd2']['mean']:.2f} dB",
              flush=True)
        return out

    from metainr.sparsity.fitting import pruning_hook

    dense_learner = round_learner("magnitude", 0)
    dense_counts = count_params(dense_learner)
    levels = []
    for r in c["levels"]:
        ms = round_learner("magnitude", r)
        counts = count_params(ms)
        target = counts["total"]
        density = counts["weights_nonzero"] / counts["weights_dense"]
        print(f"round {r}: weight density {density:.4f}, #params {target}", flush=True)
        entry: dict[str, Any] = {"round": r, "weight_density": density, "params": {}, "psnr": {}}
        entry["params"]["metasparse"] = target
        entry["psnr"]["metasparse"] = evaluate(ms, "metasparse")
        rp = round_learner("random", r)
        entry["params"]["random-prune"] = count_params(rp)["total"]
        entry["psnr"]["random-prune"] = evaluate(rp, "random-prune")
        keep = max(1, round(density * dense_counts["weights_dense"]))
        per_signal = keep + dense_counts["other"]
        dense_result = evaluate(dense_learner, "maml (dense)") if r == 0 else None
        for mode in ("oneshot", "imp"):
            entry["params"][f"maml-{mode}"] = per_signal
            entry["psnr"][f"maml-{mode}"] = dense_result or evaluate(
                dense_learner, f"maml-{mode}",
                fit_extra=lambda lrn, steps, mode=mode, d=density: pruning_hook(lrn, steps, d, mode))
        width = c["width"] if r == 0 else narrow_width(target, 2, 3, c["depth"])
        budget = dense if c["narrow_steps"] == "dense" else dense + r * per_round
        ncfg = replace(base, field=replace(base.field, width=width), train=replace(base.train, steps=budget))
        entry["narrow_width"] = width
        if r == 0:  # the full-width network is the dense MAML model itself
            entry["params"]["dense-narrow"] = dense_counts["total"]
            entry["psnr"]["dense-narrow"] = dense_result
        else:
            start = time.time()
            narrow = Trainer(ncfg, work / f"narrow_w{width}", resume=False, progress=sys.stderr.isatty(),
                             signal_sets=sets)
            narrow.train()
            timings[f"narrow_w{width}"] = time.time() - start
            entry["params"]["dense-narrow"] = count_params(narrow.learner)["total"]
            entry["psnr"]["dense-narrow"] = evaluate(narrow.learner, "dense-narrow")
        scratch = build_run_learner(ncfg, seed=12345).to(magnitude.device)
        entry["params"]["scratch"] = count_params(scratch)["total"]
        entry["psnr"]["scratch"] = evaluate(scratch, "scratch")
        levels.append(entry)

    payload = {"name": name,
               "config": {**c, "dense_steps": dense, "round_steps": per_round},
               "params_counted": "non-zero weights + all biases "
                                 "(per-signal pruning: target weights + biases)",
               "fits": FITS, "n_test": len(test), "levels": levels, "train_seconds": timings,
               "total_seconds": round(time.time() - t0, 1)}
    out = write_results(RESULTS_DIR / f"{name}.json", payload, device=magnitude.device)
    out.with_suffix(".md").write_text(markdown_table(payload))
    plot(payload, out.with_suffix(".png"))
    print(markdown_table(payload))


def markdown_table(payload: dict[str, Any]) -> str:
    lines = [f"# {payload['name']}", "", f"#params = {payload['params_counted']}. "
             f"PSNR (dB) on {payload['n_test']} held-out images, mean.", ""]
    for key in FITS:
        lines += [f"## {key}", "", "| round | density | " + " | ".join(METHODS) + " |",
                  "|---|---|" + "---|" * len(METHODS)]
        for e in payload["levels"]:
            cells = [f"{e['psnr'][m][key]['mean']:.2f} ({e['params'][m]})" for m in METHODS]
            lines.append(f"| {e['round']} | {e['weight_density']:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Cells: PSNR (#params).")
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, FITS):
        for m in METHODS:
            xs = [e["params"][m] for e in payload["levels"]]
            ys = [e["psnr"][m][key]["mean"] for e in payload["levels"]]
            ax.plot(xs, ys, marker="o", label=m)
        ax.set_xscale("log")
        ax.set_xlabel("#params (non-zero weights + biases)")
        ax.set_ylabel("test PSNR (dB)")
        ax.set_title(f"{payload['name']}: {key}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
