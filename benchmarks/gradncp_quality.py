"""GradNCP vs MAML at equal meta-training wall-clock: test PSNR as training proceeds.

    python benchmarks/gradncp_quality.py --data celeba --resolution 64 --minutes 12     # CPU config
    python benchmarks/gradncp_quality.py --config afhq512 --device cuda                 # GPU configs
    python benchmarks/gradncp_quality.py --config celebahq1024 --device cuda

Methods (SIREN 5x256, w0 30, +0.5 offset, inner SGD lr 1e-2; the authors' settings otherwise):
- maml: K=4 full-context steps (GradNCP's compute-matched baseline);
- random-context: K=16 steps on a random 25% of the coordinates;
- gradncp: K=16 steps on the top-25% gradient-norm context + bootstrapped correction (L=5, lambda=100).
Each trains for the same wall-clock budget, evaluated every budget/segments minutes (evaluation time
not counted) on held-out images with 16 SGD test steps; context methods use test-time gradient
rescaling. Writes results/gradncp_quality_<name>.json and .png.
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
    "celeba64": dict(data="celeba", resolution=64, minutes=12.0, meta_batch=3, outer_lr=1e-4, chunk=None),
    "afhq512": dict(data="afhq_512", resolution=512, minutes=120.0, meta_batch=2, outer_lr=1e-5, chunk=65536),
    "celebahq1024": dict(data="celeba_hq_1024", resolution=1024, minutes=240.0, meta_batch=1, outer_lr=1e-5,
                         chunk=65536),
}
METHODS = {
    "maml": ("maml", {"inner_steps": 4}),
    "random-context": ("random-context", {}),
    "gradncp": ("gradncp", {}),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="celeba64")
    ap.add_argument("--data", default=None)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None, help="meta-training wall-clock per method")
    ap.add_argument("--segments", type=int, default=4, help="evaluations during training")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--test-steps", type=int, default=16)
    ap.add_argument("--eval-signals", type=int, default=50)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=Path("runs"))
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)

    from metainr.context.rescale import rescaled_gradients
    from metainr.meta.fit import fit
    from metainr.methods import FieldConfig, MethodConfig, apply_preset
    from metainr.runs.config import RunConfig, TrainConfig
    from metainr.runs.trainer import Trainer, load_signal_sets
    from metainr.signals.datasets import DataSpec, preset_for

    c = dict(CONFIGS[args.config])
    for key in ("data", "resolution", "minutes"):
        if getattr(args, key) is not None:
            c[key] = getattr(args, key)
    name = args.name or f"{args.config}"
    base = RunConfig(
        data=DataSpec(**{**preset_for(c["data"]), "path": c["data"], "resolution": c["resolution"]}),
        field=FieldConfig(width=args.width, depth=args.depth, w0=30.0, output_offset=0.5),
        method=MethodConfig(inner_lr=1e-2),
        train=TrainConfig(steps=10**9, meta_batch=c["meta_batch"], outer_lr=c["outer_lr"], eval_every=0,
                          ckpt_every=10**9, eval_signals=4, device=args.device, chunk=c["chunk"],
                          log_every=25),
    )
    sets = load_signal_sets(base)
    test = sets[1].subset(args.eval_signals)
    curves: dict[str, list[dict[str, float]]] = {}
    for method in args.methods:
        preset, over = METHODS[method]
        fcfg, mcfg = apply_preset(preset, base.field, base.method, method_overrides=over)
        seg = c["minutes"] / args.segments
        cfg = replace(base, field=fcfg, method=mcfg, train=replace(base.train, max_minutes=seg))
        run_dir = args.work / f"gradncp_quality_{name}" / method
        if run_dir.exists():
            shutil.rmtree(run_dir)
        trainer = Trainer(cfg, run_dir, resume=False, progress=sys.stderr.isatty(), signal_sets=sets)
        rescale = {"use_context": True, "grad_hook": rescaled_gradients} if trainer.learner.context else {}
        trained = 0.0
        curve = []
        for _ in range(args.segments):
            start = time.time()
            trainer.train(until=10**9)
            trained += time.time() - start
            res = fit(trainer.learner, test.coords.to(trainer.device), test.values.to(trainer.device),
                      args.test_steps, record_steps=[args.test_steps], batch_size=10, **rescale)
            point = {"train_seconds": round(trained, 1), "outer_steps": trainer.step,
                     "psnr": float(res.psnr[-1].mean()), "psnr_std": float(res.psnr[-1].std(unbiased=False))}
            curve.append(point)
            print(f"{method}: {point}", flush=True)
        curves[method] = curve
    final = {m: v[-1]["psnr"] for m, v in curves.items()}
    summary = {"final_psnr": final}
    if "gradncp" in final and "maml" in final:
        summary["gradncp_minus_maml_db"] = final["gradncp"] - final["maml"]
        summary["target_0.5db_met"] = final["gradncp"] - final["maml"] >= 0.5
    payload = {"name": f"gradncp_quality_{name}", "config": c, "methods": METHODS, "n_test": len(test),
               "test_steps": args.test_steps, "test_rescaling": "on for context methods",
               "curves": curves, "summary": summary}
    out = write_results(RESULTS_DIR / f"gradncp_quality_{name}.json", payload)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m, v in curves.items():
        ax.plot([p["train_seconds"] / 60 for p in v], [p["psnr"] for p in v], marker="o", label=m)
    ax.set_xlabel("meta-training wall-clock (min)")
    ax.set_ylabel(f"test PSNR after {args.test_steps} steps (dB)")
    ax.set_title(f"{name}: equal wall-clock")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out.with_suffix(".png"))
    print(summary)


if __name__ == "__main__":
    main()
