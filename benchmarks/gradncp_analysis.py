"""What GradNCP's context selection picks, and how well its closed-form score tracks the full gradient.

Example (a trained GradNCP run; a tiny one for a smoke test):
    metainr train --method gradncp --data celeba --resolution 32 --width 64 --depth 3 --inner-steps 4 \\
        --steps 20 --out /tmp/gncp --quiet --eval-every 0
    python benchmarks/gradncp_analysis.py --run /tmp/gncp --images 4 --steps 0,4,8,15 --name smoke

    python benchmarks/gradncp_analysis.py --run runs/<gradncp run> --name celeba32

1. Selection picture: for the first ``--images`` test images, runs the inner loop from the meta-learned
   init (first order, no graph) with the run's selector fraction gamma and inner learning rate
   (``--rescale``: GradNCP's meta-test gradient rescaling), and at every step recomputes the kept
   top-gamma coordinates exactly like ``GradNCPSelector`` (``gradncp_scores`` + ``topk``). Writes a grid:
   rows = images, columns = original + the kept pixels at each of ``--steps`` (others dimmed), with the
   full-context PSNR at that step. The paper reports coarse shape first, then detail: ``edge_ratio``
   (mean image-gradient magnitude of the kept pixels / of all pixels) quantifies it.
2. Score correlation: at step 0 and the last of ``--steps``, per coordinate, (a) the closed-form
   last-layer score ||e|| sqrt(||h||^2 + 1) and (b) the norm over ALL adapted parameters of the
   gradient of 1/2 ||y_i - f(x_i)||^2 (per-coordinate gradients via ``torch.func.vmap`` over coordinate
   chunks). Reports Pearson (raw and of logs) and Spearman correlation per image and their mean, and the
   overlap of the top-gamma sets chosen by (a) and (b) (Jaccard; recall = |A and B| / k; a random set
   would give recall gamma, Jaccard gamma / (2 - gamma)). Also checks that the last-layer part of (b)
   equals (a). Log-log scatter plot.
3. results/gradncp_analysis_<name>.json with all numbers; figures gradncp_selection_<name>.png and
   gradncp_score_correlation_<name>.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, env_info, pyplot, save_figure, write_results  # noqa: E402

DIM = 0.15  # brightness of the pixels outside the kept context in the selection picture


def parse_steps(text: str) -> list[int]:
    steps = sorted({int(s) for s in text.split(",") if s.strip()})
    if not steps or steps[0] < 0:
        raise SystemExit(f"--steps needs non-negative integers, got {text!r}")
    return steps


def load_test_images(cfg, count: int):
    """The first ``count`` test images as a SignalSet (decodes only those, not the training split)."""
    from metainr.signals.batch import materialize
    from metainr.signals.datasets import InMemoryDataset, load_dataset

    _, test = load_dataset(cfg.data)
    count = min(count, len(test))
    items = torch.stack([test[i] for i in range(count)])
    return materialize(InMemoryDataset(items, test.names[:count], cfg.data.modality), "test split")


def edge_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Finite-difference gradient magnitude of the grey image, (B, C, H, W) -> (B, H*W)."""
    grey = images.mean(dim=1)
    gx = torch.zeros_like(grey)
    gy = torch.zeros_like(grey)
    gx[:, :, 1:-1] = (grey[:, :, 2:] - grey[:, :, :-2]) / 2
    gy[:, 1:-1, :] = (grey[:, 2:, :] - grey[:, :-2, :]) / 2
    return torch.sqrt(gx ** 2 + gy ** 2).flatten(1)


def ranks(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    out[x.argsort()] = torch.arange(x.numel(), dtype=x.dtype, device=x.device)
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.double() - a.double().mean()
    b = b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def top_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> dict[str, float]:
    sa = torch.zeros_like(a, dtype=torch.bool)
    sb = torch.zeros_like(b, dtype=torch.bool)
    sa[a.topk(k).indices] = True
    sb[b.topk(k).indices] = True
    inter = int((sa & sb).sum())
    return {"jaccard": inter / (2 * k - inter), "recall": inter / k}


def per_coordinate_grad_norms(learner, params, coords: torch.Tensor, values: torch.Tensor,
                              last_layer: list[str], chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Norms over all adapted parameters (and over ``last_layer`` only) of grad 1/2 ||y_i - f(x_i)||^2.

    ``params``: one signal's (unbatched) adapted parameters; coords (N, d), values (N, C) -> (N,), (N,).
    """
    def loss(p, x, y):
        pred = learner.predict(p, x.unsqueeze(0)).squeeze(0)
        return 0.5 * (y - pred).pow(2).sum()

    def norms(p, x, y):
        g = torch.func.grad(loss)(p, x, y)
        full = sum(v.pow(2).sum() for v in g.values())
        last = sum(g[n].pow(2).sum() for n in last_layer) if last_layer else torch.zeros_like(full)
        return full.sqrt(), last.sqrt()

    batched = torch.func.vmap(norms, in_dims=(None, 0, 0))
    full, last = [], []
    with torch.no_grad():
        for i in range(0, values.shape[0], chunk):
            f, lst = batched(params, coords[i:i + chunk], values[i:i + chunk])
            full.append(f)
            last.append(lst)
    return torch.cat(full), torch.cat(last)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="run directory of a trained GradNCP run")
    ap.add_argument("--checkpoint", default=None, help="checkpoint name or path (default: newest)")
    ap.add_argument("--images", type=int, default=4, help="test images to analyse (the first ones)")
    ap.add_argument("--steps", default="0,4,8,15", help="inner steps to show / analyse")
    ap.add_argument("--gamma", type=float, default=None, help="kept fraction (default: the run's selector)")
    ap.add_argument("--rescale", action="store_true", help="GradNCP meta-test gradient rescaling")
    ap.add_argument("--chunk", type=int, default=None,
                    help="coordinates per vmap chunk for per-coordinate gradients (default: ~64 MB)")
    ap.add_argument("--scatter-points", type=int, default=4000, help="points per image in the scatter plot")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--name", default=None, help="default: the run directory's name")
    args = ap.parse_args(argv)

    from metainr.context.selectors import GradNCPSelector, gather_context, gradncp_scores, kept_count
    from metainr.meta.fit import evaluate_psnr
    from metainr.runs.evaluate import open_run

    env = env_info()
    steps = parse_steps(args.steps)
    last_step = steps[-1]
    corr_steps = sorted({0, last_step})
    name = args.name or args.run.resolve().name
    cfg, learner, meta = open_run(args.run, args.checkpoint, device=args.device)
    learner.eval()
    device = next(learner.parameters()).device
    env["device"] = str(device)
    if cfg.data.modality != "image":
        raise SystemExit(f"the selection picture needs an image run, got modality {cfg.data.modality!r}")
    if args.gamma is not None:
        gamma = args.gamma
    elif isinstance(learner.context, GradNCPSelector):
        gamma = learner.context.gamma
    else:
        raise SystemExit(f"run {args.run} has no GradNCP selector (preset {cfg.method.preset!r}); "
                         "pass --gamma to analyse it anyway")

    test = load_test_images(cfg, args.images).to(device)
    conv = test.converter
    coords, values = test.coords, test.values
    n_img, n_coords = values.shape[0], values.shape[1]
    k = kept_count(gamma, n_coords)

    # ---------------------------------------------------------------- 1. the inner loop and its selections
    params = {n: p.detach() for n, p in learner.start_params(n_img).items()}
    kept: dict[int, torch.Tensor] = {}          # step -> (B, N) bool
    psnr: dict[int, torch.Tensor] = {}
    saved: dict[int, tuple[dict, torch.Tensor]] = {}  # step -> (params, closed-form scores)
    for step in range(last_step + 1):
        scores = gradncp_scores(learner, params, coords, values)
        idx = scores.topk(k, dim=-1, sorted=False).indices
        if step in steps:
            mask = torch.zeros_like(scores, dtype=torch.bool)
            mask.scatter_(-1, idx, True)
            kept[step] = mask
            psnr[step] = evaluate_psnr(learner, params, coords, values)
        if step in corr_steps:
            saved[step] = (params, scores)
        if step == last_step:
            break
        ctx_coords, ctx_values = gather_context(coords, values, idx)
        grads = learner.inner_grads(params, ctx_coords, ctx_values, create_graph=False)
        if args.rescale:
            from metainr.context.rescale import rescaled_gradients

            grads = rescaled_gradients(learner, params, coords, values, grads, step)
        with torch.no_grad():
            params = {n: p.detach() for n, p in learner.sgd_step(params, grads).items()}

    images = conv.to_signals(values).clamp(0, 1)  # (B, C, H, W)
    edges = edge_magnitude(images)
    selection = {}
    for step in steps:
        m = kept[step]
        selection[str(step)] = {
            "psnr": psnr[step].tolist(),
            "psnr_mean": float(psnr[step].mean()),
            "edge_ratio": ((edges * m).sum(1) / m.sum(1) / edges.mean(1).clamp_min(1e-12)).tolist(),
            "jaccard_with_step0": ((m & kept[steps[0]]).sum(1) / (m | kept[steps[0]]).sum(1)).tolist(),
        }
        selection[str(step)]["edge_ratio_mean"] = sum(selection[str(step)]["edge_ratio"]) / n_img

    # ---------------------------------------------------------------- 2. closed form vs full gradient
    depth = cfg.field.depth
    last_layer = [n for n in (f"w{depth - 1}", f"b{depth - 1}") if n in params]
    n_params = sum(p[0].numel() for p in params.values())
    chunk = args.chunk or max(1, min(n_coords, 2 ** 24 // n_params))
    correlation: dict[str, dict] = {}
    scatter: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for step in corr_steps:
        p_all, closed_all = saved[step]
        rows, pts = [], []
        for i in range(n_img):
            a = closed_all[i]
            b, b_last = per_coordinate_grad_norms(learner, {n: p[i] for n, p in p_all.items()}, coords,
                                                  values[i], last_layer, chunk)
            tiny = 1e-30
            row = {
                "image": test.names[i],
                "pearson": pearson(a, b),
                "pearson_log": pearson(a.clamp_min(tiny).log(), b.clamp_min(tiny).log()),
                "spearman": pearson(ranks(a), ranks(b)),
                **top_overlap(a, b, k),
                "last_layer_share_of_sq_norm": float((b_last.pow(2) / b.pow(2).clamp_min(tiny)).mean()),
                "last_layer_check_max_rel_err": float(((b_last - a).abs() / a.clamp_min(1e-12)).max())
                if last_layer else None,
            }
            rows.append(row)
            pts.append((a.cpu(), b.cpu()))
        keys = ["pearson", "pearson_log", "spearman", "jaccard", "recall", "last_layer_share_of_sq_norm"]
        mean = {key: sum(r[key] for r in rows) / len(rows) for key in keys}
        correlation[str(step)] = {"per_image": rows, "mean": mean}
        scatter[step] = pts

    payload = {
        "name": f"gradncp_analysis_{name}",
        "run": str(args.run.resolve()),
        "checkpoint_step": meta.get("step"),
        "preset": cfg.method.preset,
        "resolution": cfg.data.resolution,
        "field": {"width": cfg.field.width, "depth": depth, "w0": cfg.field.w0},
        "adapted_params": n_params,
        "inner_lr": cfg.method.inner_lr,
        "meta_sgd": cfg.method.meta_sgd,
        "rescale": args.rescale,
        "steps": steps,
        "correlation_steps": corr_steps,
        "gamma": gamma,
        "kept": k,
        "coordinates": n_coords,
        "images": test.names,
        "random_set_baseline": {"recall": k / n_coords, "jaccard": k / (2 * n_coords - k)},
        "selection": selection,
        "correlation": correlation,
    }
    out = write_results(RESULTS_DIR / f"gradncp_analysis_{name}.json", payload, env=env)

    # ---------------------------------------------------------------- figures
    plt = pyplot()
    cols = 1 + len(steps)
    fig, axes = plt.subplots(n_img, cols, figsize=(1.9 * cols, 1.9 * n_img), squeeze=False)
    shown = images.permute(0, 2, 3, 1).cpu()
    grey = shown.shape[-1] == 1
    shape = conv.shape
    for i in range(n_img):
        img = shown[i].squeeze(-1) if grey else shown[i]
        axes[i][0].imshow(img, cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[i][0].set_ylabel(test.names[i][:18], fontsize=7)
        for j, step in enumerate(steps, start=1):
            m = kept[step][i].reshape(shape).cpu().float()
            dimmed = shown[i] * (DIM + (1 - DIM) * m.unsqueeze(-1))
            axes[i][j].imshow(dimmed.squeeze(-1) if grey else dimmed, cmap="gray" if grey else None,
                              vmin=0, vmax=1)
            axes[i][j].set_xlabel(f"{float(psnr[step][i]):.1f} dB", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("original", fontsize=8)
    for j, step in enumerate(steps, start=1):
        axes[0][j].set_title(f"step {step}", fontsize=8)
    fig.suptitle(f"GradNCP kept context (top {gamma:.0%}), {name}", fontsize=9)
    save_figure(fig, RESULTS_DIR / f"gradncp_selection_{name}.png")

    fig, axes = plt.subplots(1, len(corr_steps), figsize=(4.6 * len(corr_steps), 4.2), squeeze=False)
    gen = torch.Generator().manual_seed(0)
    for ax, step in zip(axes[0], corr_steps):
        for i, (a, b) in enumerate(scatter[step]):
            sub = torch.randperm(a.numel(), generator=gen)[:args.scatter_points]
            ax.scatter(a[sub].clamp_min(1e-12), b[sub].clamp_min(1e-12), s=2, alpha=0.4,
                       label=test.names[i][:18])
        lo = min(float(a.clamp_min(1e-12).min()) for a, _ in scatter[step])
        hi = max(float(b.max()) for _, b in scatter[step])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        mean = correlation[str(step)]["mean"]
        ax.set_title(f"step {step}: Spearman {mean['spearman']:.3f}, Pearson {mean['pearson']:.3f}, "
                     f"top-{gamma:.0%} Jaccard {mean['jaccard']:.2f}", fontsize=8)
        ax.set_xlabel("closed-form last-layer score ||e|| sqrt(||h||^2+1)")
        ax.set_ylabel("full-parameter per-coordinate gradient norm")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, markerscale=3)
    save_figure(fig, RESULTS_DIR / f"gradncp_score_correlation_{name}.png")

    print(f"{name}: {n_img} images, {n_coords} coordinates, gamma {gamma} (k={k}), steps {steps} -> {out}")
    for step in steps:
        s = selection[str(step)]
        print(f"  step {step:3d}: PSNR {s['psnr_mean']:.2f} dB, edge ratio {s['edge_ratio_mean']:.2f}")
    for step in corr_steps:
        mean = correlation[str(step)]["mean"]
        print(f"  corr step {step}: " + ", ".join(f"{key} {val:.3f}" for key, val in mean.items()))


if __name__ == "__main__":
    main()
