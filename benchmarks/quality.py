"""Meta-init vs random init on held-out images after a wall-clock-bounded MAML run (issue: foundation).

Example (the committed CelebA results):
    python benchmarks/quality.py --data celeba --resolution 32 --minutes 15
    python benchmarks/quality.py --data celeba --resolution 64 --minutes 15

Reports PSNR on the test split after 2 inner SGD steps from the meta-learned init, from a random init
with the same steps, and from a random init after 100 Adam steps (lr 1e-4 as in the papers' evaluation,
and 1e-3). Writes results/quality_<name>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, pyplot, save_figure, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="celeba")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=15.0, help="meta-training wall-clock budget")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--w0", type=float, default=30.0)
    ap.add_argument("--inner-steps", type=int, default=2)
    ap.add_argument("--inner-lr", type=float, default=1e-2)
    ap.add_argument("--outer-lr", type=float, default=1e-4)
    ap.add_argument("--meta-batch", type=int, default=3)
    ap.add_argument("--strategy", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--run-dir", type=Path, default=None, help="default: runs/quality_<name>")
    ap.add_argument("--name", default=None)
    ap.add_argument("--adam-signals", type=int, default=25, help="test images for the Adam baselines")
    ap.add_argument("--eval-only", action="store_true",
                    help="evaluate the existing run in --run-dir (its newest checkpoint) without training")
    args = ap.parse_args(argv)

    from metainr.methods import FieldConfig, MethodConfig
    from metainr.runs.config import RunConfig, TrainConfig
    from metainr.runs.evaluate import RANDOM_INIT_SEED_OFFSET, build_run_learner, fit_metrics
    from metainr.runs.trainer import Trainer
    from metainr.signals.datasets import DataSpec, preset_for

    name = args.name or f"{Path(args.data).name}{args.resolution}"
    run_dir = args.run_dir or Path("runs") / f"quality_{name}"
    cfg = RunConfig(
        data=DataSpec(**{**preset_for(args.data), "path": args.data, "resolution": args.resolution}),
        field=FieldConfig(width=args.width, depth=args.depth, w0=args.w0),
        method=MethodConfig(preset="maml", inner_steps=args.inner_steps, inner_lr=args.inner_lr),
        train=TrainConfig(steps=10**7, meta_batch=args.meta_batch, outer_lr=args.outer_lr, eval_every=0,
                          ckpt_every=500, max_minutes=args.minutes, strategy=args.strategy,
                          device=args.device, log_every=50),
    )
    if args.eval_only:
        trainer = Trainer(cfg, run_dir, resume=True, progress=False)
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train_seconds = max((r.get("elapsed", 0.0) for r in records if r.get("kind") == "train"), default=0.0)
    else:
        if run_dir.exists():  # a benchmark is a fresh run, never a resumed one
            import shutil

            shutil.rmtree(run_dir)
        start = time.time()
        trainer = Trainer(cfg, run_dir, resume=False, progress=sys.stderr.isatty())
        trainer.train()
        train_seconds = time.time() - start
    test = trainer.test_set
    k = args.inner_steps
    random = build_run_learner(cfg, seed=cfg.train.seed + RANDOM_INIT_SEED_OFFSET).to(trainer.device)
    # only the comparisons the targets need: SGD steps from both inits, 100 Adam steps from random
    sgd = {"meta_init": fit_metrics(trainer.learner, test, [0, 1, k], "sgd", batch_size=25),
           "random_init": fit_metrics(random, test, [0, 1, k], "sgd", batch_size=25)}
    # 100 Adam steps cost 50x two SGD steps: the Adam baseline runs on the first --adam-signals images
    sub = test.subset(args.adam_signals)
    adam = {"random_init": fit_metrics(random, sub, [0, 10, 25, 50, 100], "adam", lr=1e-4, batch_size=25)}
    adam3 = {"random_init": fit_metrics(random, sub, [100], "adam", lr=1e-3, batch_size=25)}
    meta_sub = fit_metrics(trainer.learner, sub, [k], "sgd", batch_size=25)[str(k)]["psnr"]["mean"]
    meta_k = sgd["meta_init"][str(k)]["psnr"]["mean"]
    rand_k = sgd["random_init"][str(k)]["psnr"]["mean"]
    rand_adam = adam["random_init"]["100"]["psnr"]["mean"]
    summary = {
        f"meta_init_{k}_sgd_steps": meta_k,
        f"random_init_{k}_sgd_steps": rand_k,
        "random_init_100_adam_1e-4": rand_adam,
        "random_init_100_adam_1e-3": adam3["random_init"]["100"]["psnr"]["mean"],
        "gain_vs_random_same_steps_db": meta_k - rand_k,
        f"meta_init_{k}_sgd_steps_on_adam_subset": meta_sub,
        "gain_vs_random_100_adam_db": meta_sub - rand_adam,
        "target_gain_10db_met": meta_k - rand_k >= 10.0,
        "target_beats_100_adam_met": meta_sub > rand_adam,
    }
    payload = {"name": f"quality_{name}", "config": cfg.to_dict(), "adam_signals": len(sub),
               "outer_steps": trainer.step,
               "train_seconds": round(train_seconds, 1), "n_test": len(test), "summary": summary,
               "sgd": sgd, "adam_1e-4": adam, "adam_1e-3": adam3,
               "note": "adam results: random init only, on the first adam_signals test images; "
                       "the meta-init comparison on those images is in summary"}
    out = write_results(RESULTS_DIR / f"quality_{name}.json", payload, device=trainer.device)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, res, title in ((axes[0], sgd, f"SGD lr {args.inner_lr}"), (axes[1], adam, "Adam lr 1e-4")):
        for key, label in (("meta_init", "meta-learned init"), ("random_init", "random init")):
            if key not in res:
                continue
            steps = sorted(int(s) for s in res[key])
            ax.errorbar(steps, [res[key][str(s)]["psnr"]["mean"] for s in steps],
                        yerr=[res[key][str(s)]["psnr"]["std"] for s in steps], marker="o", capsize=3,
                        label=label)
        if key == "random_init" and "meta_init" not in res:
            ax.axhline(meta_k, color="C0", ls="--", label=f"meta-learned init after {k} SGD steps")
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel("fitting steps")
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, out.with_suffix(".png"))
    print(f"{name}: {trainer.step} outer steps in {train_seconds:.0f} s")
    for key, val in summary.items():
        print(f"  {key}: {val:.2f}" if isinstance(val, float) else f"  {key}: {val}")


if __name__ == "__main__":
    main()
