"""Plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path | str) -> None:
    import io

    from metainr.runs.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix[1:] or "png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())


def plot_psnr_vs_steps(result: dict[str, Any], path: Path | str, title: str = "") -> None:
    """PSNR (mean ± std) vs fitting steps for the meta-learned and the random init."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("meta_init", "meta-learned init"), ("random_init", "random init")):
        steps = sorted(int(s) for s in result[key])
        mean = [result[key][str(s)]["psnr"]["mean"] for s in steps]
        std = [result[key][str(s)]["psnr"]["std"] for s in steps]
        ax.errorbar(steps, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xlabel(f"fitting steps ({result.get('optimizer', 'sgd')})")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)
