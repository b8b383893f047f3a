"""``metainr demo``: the README's main job on the embedded default (photos shipped with scikit-image)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def demo(
    out: Annotated[Path, Opt("--out", "-o", help="output folder (run, plot, reconstructions)")] = Path(
        "metainr-demo"),
    steps: Annotated[int, Opt(help="outer meta-training steps")] = 300,
    resolution: Annotated[int, Opt(help="patch size")] = 32,
    test_steps: Annotated[str, Opt(help="fitting steps to report")] = "0,1,2,3,5,10",
    quiet: Annotated[bool, Opt(help="no progress bar")] = False,
) -> None:
    """Meta-learn a SIREN init on photo patches, then compare it with a random init on held-out photos."""
    import time

    import torch

    from metainr.cli.common import parse_steps, write_json
    from metainr.meta.fit import fit, render
    from metainr.methods import FieldConfig, MethodConfig
    from metainr.runs.config import RunConfig, TrainConfig
    from metainr.runs.evaluate import RANDOM_INIT_SEED_OFFSET, build_run_learner, compare_inits
    from metainr.runs.trainer import Trainer
    from metainr.signals.datasets import DataSpec
    from metainr.signals.export import image_grid, save_image
    from metainr.viz import plot_psnr_vs_steps

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = RunConfig(
        data=DataSpec(path="embedded", resolution=resolution),
        field=FieldConfig(width=128, depth=4, w0=30.0),
        method=MethodConfig(preset="maml", inner_steps=3, inner_lr=1e-2),
        train=TrainConfig(steps=steps, meta_batch=4, outer_lr=3e-4, eval_every=0, ckpt_every=200,
                          eval_signals=64, log_every=10),
    )
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    trainer = Trainer(cfg, out / "run", resume=True, progress=not quiet)
    print(f"meta-training on {len(trainer.train_set)} patches of {resolution}x{resolution} from photos "
          f"bundled with scikit-image; {len(trainer.test_set)} held-out patches from other photos")
    trainer.train()
    print(f"meta-training took {time.time() - start:.0f} s")

    step_list = parse_steps(test_steps)
    learner, test = trainer.learner, trainer.test_set
    result = compare_inits(cfg, learner, test, step_list)
    write_json(out / "results.json", result)
    print(f"\nheld-out PSNR (dB), same SGD steps (lr {cfg.method.inner_lr}) from each init:")
    print(f"{'steps':>6} {'meta-learned':>13} {'random':>8} {'gain':>7}")
    for s in map(str, step_list):
        m, r = result["meta_init"][s]["psnr"]["mean"], result["random_init"][s]["psnr"]["mean"]
        print(f"{s:>6} {m:13.2f} {r:8.2f} {m - r:+7.2f}")
    plot_psnr_vs_steps(result, out / "psnr_vs_steps.png",
                       title=f"held-out photo patches {resolution}x{resolution}")

    k = cfg.method.inner_steps
    show = test.subset(8)
    random = build_run_learner(cfg, seed=cfg.train.seed + RANDOM_INIT_SEED_OFFSET)
    rows = [show.converter.to_signals(show.values)]
    for lrn in (random, learner):
        fitted = fit(lrn, show.coords, show.values, k, record_steps=[k])
        rows.append(show.converter.to_signals(render(lrn, fitted.params, show.coords)))
    grid = image_grid(rows)  # 32 px patches: enlarge (nearest) so the picture is readable
    save_image(torch.nn.functional.interpolate(grid[None], scale_factor=4, mode="nearest")[0],
               out / "reconstructions.png")
    print(f"\nwrote {out / 'reconstructions.png'} (rows: original, random init + {k} steps, "
          f"meta-learned init + {k} steps), {out / 'psnr_vs_steps.png'}, {out / 'results.json'}")
