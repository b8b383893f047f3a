"""Peak memory and time of one meta-training step vs resolution: MAML vs GradNCP at the same K.

    python benchmarks/gradncp_memory.py                         # CPU: 64..1024, K=2, SIREN 5x256
    python benchmarks/gradncp_memory.py --device cuda --inner-steps 4

Each configuration runs in a fresh subprocess (peak RSS on CPU, max_memory_allocated on CUDA).
MAML: K second-order steps on the full context, outer loss on the full context.
GradNCP: K second-order steps on the top-gamma context, bootstrap L first-order full-context steps;
all graph-free full-context passes (outer loss, bootstrap, scores) chunked over coordinates.
Configurations predicted (linearly in the number of pixels, from the smaller ones) to exceed
--limit-gb are not run and are reported as "does not fit"; an address-space limit guards the rest.
Writes results/gradncp_memory_<device>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, pyplot, save_figure, write_results  # noqa: E402


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    from metainr.methods import FieldConfig, apply_preset, build_learner
    from metainr.signals.grid import coordinate_grid

    device = torch.device(cfg["device"])
    torch.manual_seed(0)
    field = FieldConfig(width=cfg["width"], depth=cfg["depth"], output_offset=0.5)
    fcfg, mcfg = apply_preset(cfg["method"], field, None, None, {"inner_steps": cfg["inner_steps"]})
    if cfg["method"] == "gradncp":
        mcfg.options = {**mcfg.options, "context": {"kind": "gradncp", "gamma": cfg["gamma"]}}
    learner = build_learner(fcfg, mcfg, 2, 3, strategy="loop",
                            chunk=cfg["chunk"] if cfg["method"] == "gradncp" else None).to(device)
    res = cfg["resolution"]
    coords = coordinate_grid((res, res), device=device)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    image = torch.stack([torch.sin(8 * xx) * 0.5 + 0.5, yy, xx * yy]).to(device)  # smooth, deterministic
    values = image.flatten(1).T[None].repeat(cfg["batch"], 1, 1)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-5)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        opt.zero_grad()
        learner.meta_backward(coords, values)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"seconds_per_step": min(times), "peak_mem_mb": peak_mb}


def run_subprocess(cfg: dict[str, Any], limit_gb: float, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg),
           "--limit-gb", str(limit_gb)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        status = "out of memory" if "memory" in tail.lower() or proc.returncode in (-9, 137) else "error"
        return {"status": status, "detail": tail[:300]}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--methods", nargs="+", default=["maml", "gradncp"])
    ap.add_argument("--inner-steps", type=int, default=2)
    ap.add_argument("--gamma", type=float, default=0.25)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=8192, help="GradNCP coordinate chunk (graph-free passes)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit-gb", type=float, default=22.0, help="memory budget (the 24 GB machine)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--keep-other-methods", action="store_true",
                    help="keep records of methods not in --methods from an existing results file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        if args.device == "cpu" or '"cpu"' in args.worker:
            limit = int(args.limit_gb * 2**30) + 2**31  # address space: budget + interpreter slack
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(worker(json.loads(args.worker))))
        return

    records: list[dict[str, Any]] = []
    for method in args.methods:
        history: list[tuple[int, float]] = []
        for res in sorted(args.resolutions):
            cfg = {"method": method, "resolution": res, "inner_steps": args.inner_steps, "gamma": args.gamma,
                   "width": args.width, "depth": args.depth, "batch": args.batch, "chunk": args.chunk,
                   "repeats": args.repeats, "threads": args.threads, "device": args.device}
            predicted = None
            if len(history) >= 2:  # memory grows linearly with the pixel count
                (p0, m0), (p1, m1) = history[-2], history[-1]
                slope = (m1 - m0) / (p1 - p0)
                predicted = m1 + slope * (res * res - p1)
            if predicted is not None and predicted > args.limit_gb * 1024:
                rec = {"status": "does not fit (predicted)", "predicted_peak_mem_mb": round(predicted)}
            else:
                rec = run_subprocess(cfg, args.limit_gb, args.timeout)
                if rec["status"] == "ok":
                    history.append((res * res, rec["peak_mem_mb"]))
            rec = {**cfg, **rec}
            print(json.dumps({k: rec[k] for k in ("method", "resolution", "status") if k in rec}
                             | {k: round(v, 2) for k, v in rec.items()
                                if k in ("seconds_per_step", "peak_mem_mb", "predicted_peak_mem_mb")}),
                  flush=True)
            records.append(rec)
    out_path = RESULTS_DIR / f"gradncp_memory_{args.device}.json"
    if args.keep_other_methods and out_path.exists():  # re-measure some methods, keep the rest
        old = json.loads(out_path.read_text())
        records = [r for r in old["records"] if r["method"] not in args.methods] + records
    ratios = {}
    for res in args.resolutions:
        by = {r["method"]: r for r in records if r["resolution"] == res and r.get("status") == "ok"}
        if "maml" in by and "gradncp" in by:
            ratios[str(res)] = by["gradncp"]["peak_mem_mb"] / by["maml"]["peak_mem_mb"]
    payload = {"name": f"gradncp_memory_{args.device}", "records": records,
               "gradncp_over_maml_peak_memory": ratios,
               "memory_measure": "CPU: increase of peak RSS (ru_maxrss) over the value before the first "
                                 "step; CUDA: max_memory_allocated over the value before the first step"}
    out = write_results(out_path, payload, device=args.device)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in sorted({r["method"] for r in records}):
        ok = [r for r in records if r["method"] == method and r.get("status") == "ok"]
        xs = [r["resolution"] for r in ok]
        axes[0].plot(xs, [r["peak_mem_mb"] / 1024 for r in ok], marker="o", label=method)
        axes[1].plot(xs, [r["seconds_per_step"] for r in ok], marker="o", label=method)
        miss = [r for r in records if r["method"] == method and r.get("status") != "ok"]
        for r in miss:
            axes[0].annotate(f"{method}: {r['status']}", (r["resolution"], args.limit_gb), fontsize=7)
    axes[0].axhline(args.limit_gb, color="gray", ls="--", lw=1)
    axes[0].set_ylabel("peak memory (GB)")
    axes[1].set_ylabel("seconds per meta-step")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("resolution (pixels per side)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"MAML vs GradNCP, K={args.inner_steps}, gamma={args.gamma}, "
                 f"SIREN {args.depth}x{args.width}")
    save_figure(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
