"""``metainr fit``: fit one signal file from a run's meta-learned init and save the reconstruction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def fit(
    run: Annotated[Path, typer.Argument(help="run directory")],
    signal_file: Annotated[Path, typer.Argument(help="an image file")],
    out: Annotated[Path, Opt("--out", "-o", help="reconstruction image to write (PNG)")],
    resolution: Annotated[int | None, Opt(help="decode at R x R (default: the training resolution)")
                          ] = None,
    steps: Annotated[int | None, Opt(help="fitting steps (default: the method's inner steps)")] = None,
    optimizer: Annotated[str, Opt(help="sgd or adam")] = "sgd",
    lr: Annotated[float | None, Opt()] = None,
    params_out: Annotated[Path | None, Opt("--params", help="also save the fitted params (safetensors)")
                          ] = None,
    rescale: Annotated[bool, Opt(help="GradNCP test-time gradient rescaling")] = False,
    checkpoint: Annotated[str | None, Opt()] = None,
    device: Annotated[str, Opt()] = "auto",
) -> None:
    """Fit SIGNAL_FILE at the run's training resolution, then decode it at any resolution."""
    from metainr.cli.common import rescale_kwargs
    from metainr.errors import DataError
    from metainr.meta.fit import fit as fit_signals
    from metainr.meta.fit import render
    from metainr.runs.checkpoint import atomic_write_bytes
    from metainr.runs.evaluate import open_run
    from metainr.signals.export import save_image
    from metainr.signals.grid import GridConverter, coordinate_grid
    from metainr.signals.image import load_image

    cfg, learner, _ = open_run(run, checkpoint, device)
    if cfg.data.modality != "image":
        raise DataError(f"metainr fit supports image runs; this run is {cfg.data.modality}")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        raise DataError(f"output {out} must be an image file name (e.g. .png)")
    side = cfg.data.patch or cfg.data.resolution
    image = load_image(signal_file, side, channels=cfg.data.channels, center_crop=cfg.data.center_crop,
                       resize_shorter=cfg.data.resize_shorter)
    dev = next(learner.parameters()).device
    conv = GridConverter(image.shape[1:], image.shape[0])
    values = conv.to_values(image[None].to(dev))
    k = cfg.method.inner_steps if steps is None else steps
    extra = rescale_kwargs(learner) if rescale else {}
    result = fit_signals(learner, conv.coords(dev), values, k, optimizer=optimizer, lr=lr,
                         record_steps=[0, k], **extra)
    res = resolution or side
    out_conv = GridConverter((res, res), image.shape[0])
    recon = out_conv.to_signals(render(learner, result.params, coordinate_grid((res, res), device=dev)))
    save_image(recon[0].clamp(0, 1).cpu(), out)
    if params_out:
        from safetensors.torch import save

        atomic_write_bytes(params_out, save({n: p[0].contiguous().cpu() for n, p in result.params.items()}))
    print(f"{signal_file}: PSNR {float(result.psnr[-1, 0]):.2f} dB after {k} steps "
          f"(init {float(result.psnr[0, 0]):.2f} dB); wrote {out} at {res}x{res}")
