"""``metainr eval``: PSNR/SSIM on the test split from the meta-learned and a random init."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory")],
    data: Annotated[str | None, Opt(help="data path (default: the run's own)")] = None,
    steps: Annotated[str, Opt(help="step counts to report, comma-separated")] = "2",
    optimizer: Annotated[str, Opt(help="sgd (the learned inner rates) or adam")] = "sgd",
    lr: Annotated[float | None, Opt(help="learning rate (default: inner rate for sgd, 1e-4 adam)")] = None,
    checkpoint: Annotated[str | None, Opt(help="checkpoint name or path (default newest)")] = None,
    signals: Annotated[int | None, Opt(help="evaluate only the first N test signals")] = None,
    json_out: Annotated[Path | None, Opt("--json", help="write results JSON here")] = None,
    device: Annotated[str, Opt()] = "auto",
) -> None:
    """Fit every test signal from the meta-learned init and from a random init; report both."""
    from dataclasses import replace

    from metainr.cli.common import parse_steps, write_json
    from metainr.runs.evaluate import compare_inits, open_run
    from metainr.runs.trainer import load_signal_sets

    step_list = parse_steps(steps)
    cfg, learner, meta = open_run(run, checkpoint, device)
    if data is not None:
        cfg.data = replace(cfg.data, path=data)
    _, test = load_signal_sets(cfg)
    result = compare_inits(cfg, learner, test.subset(signals), step_list, optimizer, lr)
    result.update(run=str(run), checkpoint_step=meta["step"], data=cfg.data.path)
    print(f"{'steps':>6} {'meta PSNR':>16} {'random PSNR':>16} {'gain':>7} {'meta SSIM':>10}")
    for s in map(str, step_list):
        m, r = result["meta_init"][s], result["random_init"][s]
        ssim = f"{m['ssim']['mean']:.4f}" if "ssim" in m else "-"
        print(f"{s:>6} {m['psnr']['mean']:8.2f} ± {m['psnr']['std']:5.2f} {r['psnr']['mean']:8.2f} ± "
              f"{r['psnr']['std']:5.2f} {result['psnr_gain_db'][s]:+7.2f} {ssim:>10}")
    if json_out:
        write_json(json_out, result)
