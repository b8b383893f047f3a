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
    round_: Annotated[int | None, Opt("--round", help="pruning round N (checkpoint round_NN)")] = None,
    prune: Annotated[str | None, Opt(help="prune each signal while fitting: oneshot or imp")] = None,
    density: Annotated[float | None, Opt(help="target weight density for --prune")] = None,
    rescale: Annotated[bool, Opt(help="GradNCP test-time rescaling: full-context gradient, pruned norm")
                       ] = False,
    signals: Annotated[int | None, Opt(help="evaluate only the first N test signals")] = None,
    json_out: Annotated[Path | None, Opt("--json", help="write results JSON here")] = None,
    device: Annotated[str, Opt()] = "auto",
) -> None:
    """Fit every test signal from the meta-learned init and from a random init; report both."""
    from dataclasses import replace

    from metainr.cli.common import parse_steps, rescale_kwargs, write_json
    from metainr.errors import ConfigError
    from metainr.runs.evaluate import compare_inits, open_run
    from metainr.runs.trainer import load_signal_sets
    from metainr.sparsity.counting import count_params

    step_list = parse_steps(steps)
    if round_ is not None:
        checkpoint = f"round_{round_:02d}"
    fit_kwargs = None
    if prune is not None:
        if density is None or not 0 < density <= 1:
            raise ConfigError("--prune needs --density in (0, 1]")
        if prune not in ("oneshot", "imp"):
            raise ConfigError(f"--prune must be oneshot or imp, got {prune!r}")
        from metainr.sparsity.fitting import pruning_hook

        fit_kwargs = {"mask_hook_factory": lambda lrn: pruning_hook(lrn, max(step_list), density, prune)}
    cfg, learner, meta = open_run(run, checkpoint, device)
    if rescale:
        fit_kwargs = {**(fit_kwargs or {}), **rescale_kwargs(learner)}
    if data is not None:
        cfg.data = replace(cfg.data, path=data)
    _, test = load_signal_sets(cfg)
    result = compare_inits(cfg, learner, test.subset(signals), step_list, optimizer, lr,
                           fit_kwargs=fit_kwargs)
    params = count_params(learner)
    if prune:  # each fitted signal keeps round(density * weights) non-zero weights
        params["weights_nonzero"] = max(1, round(density * params["weights_dense"]))
        params["total"] = params["weights_nonzero"] + params["other"]
    result.update(run=str(run), checkpoint_step=meta["step"], data=cfg.data.path, params=params,
                  per_signal_pruning={"mode": prune, "density": density} if prune else None)
    print(f"{'steps':>6} {'meta PSNR':>16} {'random PSNR':>16} {'gain':>7} {'meta SSIM':>10}")
    for s in map(str, step_list):
        m, r = result["meta_init"][s], result["random_init"][s]
        ssim = f"{m['ssim']['mean']:.4f}" if "ssim" in m else "-"
        print(f"{s:>6} {m['psnr']['mean']:8.2f} ± {m['psnr']['std']:5.2f} {r['psnr']['mean']:8.2f} ± "
              f"{r['psnr']['std']:5.2f} {result['psnr_gain_db'][s]:+7.2f} {ssim:>10}")
    if json_out:
        write_json(json_out, result)
