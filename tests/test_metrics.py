"""Per-signal metrics."""

from __future__ import annotations

import math

import pytest
import torch

from metainr.metrics import ms_ssim, mse_per_signal, psnr, ssim, summarize


def test_mse_per_signal():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.5
    pred[1, 0] += 1.0  # one channel of three wrong by 1
    assert torch.allclose(mse_per_signal(pred, target), torch.tensor([0.25, 1 / 3]))
    with pytest.raises(ValueError):
        mse_per_signal(pred, target[:1])


def test_psnr_matches_hand_computation():
    target = torch.full((2, 1, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1, :, :4] += 0.2  # MSE 0.04 / 2 = 0.02 -> -10 log10(0.02)
    expected = torch.tensor([20.0, -10 * math.log10(0.02)])
    assert torch.allclose(psnr(pred, target), expected, atol=1e-4)


def test_psnr_clamps_prediction_and_caps_at_100_db():
    target = torch.tensor([[[1.0, 0.0]]])
    assert psnr(torch.tensor([[[1.7, -0.3]]]), target).item() == pytest.approx(100.0)  # clamped: exact
    assert psnr(target.clone(), target).item() == pytest.approx(100.0)
    # out-of-range prediction error is measured after clamping: 0.5 above 1 counts as 0
    half = psnr(torch.tensor([[[1.5, 0.5]]]), target).item()
    assert half == pytest.approx(-10 * math.log10(0.125), abs=1e-4)


def test_ssim_identical_is_one_and_noise_lowers_it():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 32, 32, generator=g)
    assert torch.allclose(ssim(img, img), torch.ones(3), atol=1e-5)
    noisy = img + 0.1 * torch.randn(img.shape, generator=g)
    noisier = img + 0.3 * torch.randn(img.shape, generator=g)
    s1, s2 = ssim(noisy, img), ssim(noisier, img)
    assert s1.shape == (3,) and (s1 < 0.99).all() and (s2 < s1).all()


def test_ssim_small_images_use_a_smaller_window():
    img = torch.rand(2, 1, 8, 8)
    assert torch.allclose(ssim(img, img), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="3x3"):
        ssim(torch.rand(1, 1, 2, 8), torch.rand(1, 1, 2, 8))
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))


def test_ms_ssim():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(2, 3, 64, 64, generator=g)
    assert torch.allclose(ms_ssim(img, img), torch.ones(2), atol=1e-5)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    assert (ms_ssim(noisy, img) < 0.99).all()
    with pytest.raises(ValueError, match="larger than 32"):
        ms_ssim(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_summarize():
    s = summarize(torch.tensor([1.0, 2.0, 3.0]))
    assert s == {"mean": pytest.approx(2.0), "std": pytest.approx(1.0), "n": 3}
    assert summarize(torch.tensor([5.0])) == {"mean": 5.0, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        summarize(torch.tensor([]))
