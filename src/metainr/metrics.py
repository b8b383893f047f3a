"""Per-signal reconstruction metrics for signals in [0, 1]: MSE, PSNR, SSIM, MS-SSIM.

All take batches (B, C, *shape) and return one value per signal, shape (B,), so callers can report
mean and spread over a test set (:func:`summarize`). PSNR, SSIM and MS-SSIM clamp predictions to
[0, 1] first (the valid signal range, as an image would be saved) and use a peak of 1.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim

MIN_MSE = 1e-10  # caps PSNR at 100 dB instead of inf for exact reconstructions
MS_SSIM_SCALES = 5  # pytorch_msssim's default weights: 5 scales, 4 downsamplings


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim < 2:
        raise ValueError(f"expected a batch (B, C, ...), got shape {tuple(pred.shape)}")


def mse_per_signal(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all but the batch dimension -> (B,). No clamping."""
    _check(pred, target)
    return (pred - target).pow(2).flatten(1).mean(dim=1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per signal, peak 1: -10 log10(MSE(clamp(pred, 0, 1), target)) -> (B,)."""
    mse = mse_per_signal(pred.clamp(0.0, 1.0), target)
    return -10.0 * torch.log10(mse.clamp_min(MIN_MSE))


def _ssim_window(h: int, w: int) -> int:
    """The standard 11 when possible, else the largest odd window that fits the image."""
    side = min(h, w)
    win = min(11, side if side % 2 == 1 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3, got {h}x{w}")
    return win


def _images(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    _check(pred, target)
    if pred.ndim != 4:
        raise ValueError(f"{name} needs images (B, C, H, W), got shape {tuple(pred.shape)}")


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Gaussian window, sigma 1.5, data_range 1) -> (B,).

    The window is 11 (the standard) for images of at least 11 px, else the largest odd size that
    fits, so 8x8 patches still get a value (not comparable with 11-window SSIM of larger images).
    """
    _images(pred, target, "SSIM")
    win = _ssim_window(pred.shape[-2], pred.shape[-1])
    return _ssim(pred.clamp(0.0, 1.0).float(), target.float(), data_range=1.0, size_average=False,
                 win_size=win)


def ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image (5 scales, data_range 1) -> (B,).

    Its 4 downsamplings need the smaller side > (win - 1) * 16: 160 px for the standard window 11.
    Smaller images get the largest odd window that satisfies this (down to 3, i.e. > 32 px);
    smaller than that raises ValueError.
    """
    _images(pred, target, "MS-SSIM")
    side = min(pred.shape[-2], pred.shape[-1])
    factor = 2 ** (MS_SSIM_SCALES - 1)
    win = 11
    while win >= 3 and side <= (win - 1) * factor:
        win -= 2
    if win < 3:
        raise ValueError(f"MS-SSIM needs images larger than {2 * factor} px on the shorter side, "
                         f"got {pred.shape[-2]}x{pred.shape[-1]}")
    return _ms_ssim(pred.clamp(0.0, 1.0).float(), target.float(), data_range=1.0, size_average=False,
                    win_size=win)


def summarize(values: torch.Tensor) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for a single value) and count of per-signal values."""
    v = values.detach().flatten().double()
    n = v.numel()
    if n == 0:
        raise ValueError("cannot summarize an empty set of values")
    std = v.std().item() if n > 1 else 0.0
    return {"mean": v.mean().item(), "std": std, "n": n}
