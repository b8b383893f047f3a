"""Meta-training throughput and peak memory of the batching strategies of :class:`MetaLearner`.

For each strategy {loop, batched, vmap} x order {second, first} x image resolution, one full outer
step is ``opt.zero_grad(); learner.meta_backward(coords, values); opt.step()`` (Adam) on a
meta-batch of random RGB images fitted by a SIREN (default 5 layers x 256). One warm-up step, then
``--repeats`` timed steps (``--large-repeats`` at resolutions >= ``--large-resolution``; fewer
if the warm-up says they would not fit in ``--max-seconds``). ``seconds_per_step`` is the median
timed step; ``signals_per_s = meta_batch / seconds_per_step``. On CUDA the device is synchronised
before each timer read.

Every configuration runs in a fresh Python subprocess (this script re-invoked with a hidden
``--single``) so that memory numbers do not leak between configurations:

- CUDA: ``peak_mem_mb = torch.cuda.max_memory_allocated() - memory_allocated()`` at the baseline
  (after model, optimiser and data creation, with the peak stats reset there);
  ``peak_mem_total_mb`` is the absolute ``max_memory_allocated()``.
- CPU: ``peak_mem_mb`` is the increase of the process's RSS *high-water mark*
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its value at the same baseline. Since the
  high-water mark includes the import of torch, allocations below that earlier peak are invisible,
  so small configurations can read ~0; allocator caching is included (it is real memory use).
  glibc's dynamic mmap threshold keeps freed large buffers in the heap, which inflates the mark for
  ``loop`` (graph built and freed once per signal): 128 px first order read 698 MiB by default and
  172 MiB with ``--malloc-mmap-threshold 131072`` (batched: 502 vs 494 MiB).

A configuration is skipped (not run) when a smaller resolution of the same strategy x order timed
out or when its time, extrapolated from the largest finished resolution (x pixel count), exceeds
``--max-seconds``; a running one stops timing once its budget is used (at least one timed step)
and is killed at ``--max-seconds`` plus a start-up allowance of 60 s.

Output: ``benchmarks/results/strategy_<device>.json`` (records, a per-resolution ``fastest``
summary, metadata: exact command and environment) and ``strategy_<device>.png``.

Example: ``python benchmarks/strategy.py --repeats 2``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS_DIR,
    env_info,
    git_commit,
    pyplot,
    resolve_device,
    save_figure,
    synchronize,
    write_results,
)

STRATEGIES = ("loop", "batched", "vmap")
ORDERS = ("second", "first")
RESULT_MARK = "@@STRATEGY_RESULT@@ "
# Fixed per-subprocess cost (interpreter start, torch import, model build) when predicting skips.
STARTUP_SECONDS = 5.0
# Extra time a worker gets beyond --max-seconds before it is killed (imports on a loaded machine).
STARTUP_ALLOWANCE = 60.0
TIMING_NOTE = ("median of timed outer steps (zero_grad + meta_backward + Adam step) after 1 warm-up step; "
               "signals_per_s = meta_batch / seconds_per_step")
MEMORY_NOTE = {
    "cuda": "cuda: torch.cuda.max_memory_allocated() minus memory_allocated() at the baseline (after "
            "model/optimiser/data creation, peak stats reset there)",
    "cpu": "cpu: increase of the RSS high-water mark (resource.getrusage(RUSAGE_SELF).ru_maxrss) over its "
           "value after model/optimiser/data creation, one fresh subprocess per configuration; includes "
           "allocator caching; allocations below the earlier import-time peak are not visible",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 178],
                   help="square image sizes (pixels per side)")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    p.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS),
                   help="second = full MAML gradient, first = first-order approximation")
    p.add_argument("--width", type=int, default=256, help="SIREN hidden width")
    p.add_argument("--depth", type=int, default=5, help="SIREN number of linear layers")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--meta-batch", type=int, default=3, help="signals per outer step")
    p.add_argument("--inner-steps", type=int, default=2)
    p.add_argument("--meta-sgd", action="store_true", help="learn per-parameter inner learning rates")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads in each worker (default: torch's own choice)")
    p.add_argument("--repeats", type=int, default=3, help="timed outer steps after one warm-up step")
    p.add_argument("--large-resolution", type=int, default=160,
                   help="resolutions >= this use --large-repeats")
    p.add_argument("--large-repeats", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="wall-clock budget per configuration (subprocess killed beyond it)")
    p.add_argument("--chunk", type=int, default=None,
                   help="MetaLearner(chunk=...): coordinates per chunk of the graph-free full-context passes")
    p.add_argument("--malloc-mmap-threshold", type=int, default=None, metavar="BYTES",
                   help="CPU/glibc: set MALLOC_MMAP_THRESHOLD_ in the workers (e.g. 131072) so freed large "
                        "buffers go back to the OS; otherwise glibc's dynamic threshold keeps freed heap "
                        "pages resident and inflates the RSS high-water mark (notably for 'loop')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None,
                   help="results JSON (default benchmarks/results/strategy_<device>.json); plot next to it")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--replot", type=Path, default=None, metavar="JSON",
                   help="only redraw the plot of an existing results file (written next to it)")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)  # worker mode: JSON config
    args = p.parse_args(argv)
    if min(args.resolutions) < 1 or args.repeats < 1 or args.large_repeats < 1 or args.meta_batch < 1:
        p.error("resolutions, repeats and meta-batch must be positive")
    return args


# ------------------------------------------------------------------------------------------ worker
def _rss_mb() -> float:
    """RSS high-water mark of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def run_single(cfg: dict[str, Any]) -> dict[str, Any]:
    """Build, warm up and time one configuration in this process; returns its record."""
    from metainr.fields import Siren
    from metainr.meta import MetaLearner, ParamPartition
    from metainr.signals.grid import GridConverter

    t_start = time.perf_counter()
    device = torch.device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    res, batch, channels = cfg["resolution"], cfg["meta_batch"], cfg["channels"]

    field = Siren(2, channels, width=cfg["width"], depth=cfg["depth"])
    partition = ParamPartition(field, meta_sgd=cfg["meta_sgd"], seed=cfg["seed"])
    extra = {"chunk": cfg["chunk"]} if cfg.get("chunk") else {}  # only learners that support it
    learner = MetaLearner(field, partition, inner_steps=cfg["inner_steps"],
                          first_order=cfg["order"] == "first", strategy=cfg["strategy"], **extra).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-5)
    grid = GridConverter((res, res), channels)
    coords = grid.coords(device=device)
    values = grid.to_values(torch.rand(batch, channels, res, res, generator=torch.Generator().manual_seed(
        cfg["seed"])).to(device))

    def outer_step() -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        stats = learner.meta_backward(coords, values)
        opt.step()
        learner.after_outer_step()
        return stats

    # Baseline: model, optimiser (state is created lazily by the first step, so it counts) and data.
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_mb = torch.cuda.memory_allocated(device) / 2**20
    else:
        base_mb = _rss_mb()

    t0 = time.perf_counter()
    stats = outer_step()
    synchronize(device)
    warmup = time.perf_counter() - t0

    repeats = cfg["repeats"]
    remaining = cfg["max_seconds"] - (time.perf_counter() - t_start) - 1.0
    fit = max(1, int(remaining / warmup)) if warmup > 0 else repeats
    repeats = max(1, min(repeats, fit))
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        stats = outer_step()
        synchronize(device)
        times.append(time.perf_counter() - t0)

    if device.type == "cuda":
        total_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        total_mb = _rss_mb()
    sec = statistics.median(times)
    return {
        "strategy": cfg["strategy"], "order": cfg["order"], "resolution": res,
        "status": "ok",
        "signals_per_s": batch / sec,
        "seconds_per_step": sec,
        "min_seconds_per_step": min(times),
        "peak_mem_mb": max(0.0, total_mb - base_mb),
        "peak_mem_total_mb": total_mb,
        "baseline_mem_mb": base_mb,
        "warmup_seconds": warmup,
        "step_seconds": times,
        "repeats": repeats,
        "loss": stats["loss"],
        "points": res * res,
        "torch_threads": torch.get_num_threads(),
    }


def single_main(args: argparse.Namespace) -> None:
    cfg = json.loads(args.single)
    try:
        rec = run_single(cfg)
    except torch.cuda.OutOfMemoryError as exc:
        rec = {**_cfg_key(cfg), "status": "oom", "error": str(exc).splitlines()[0]}
    except MemoryError as exc:
        rec = {**_cfg_key(cfg), "status": "oom", "error": repr(exc)}
    print(RESULT_MARK + json.dumps(rec), flush=True)


def _cfg_key(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"strategy": cfg["strategy"], "order": cfg["order"], "resolution": cfg["resolution"]}


# ------------------------------------------------------------------------------------------ driver
def run_in_subprocess(cfg: dict[str, Any], timeout: float, mmap_threshold: int | None = None
                      ) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", json.dumps(cfg)]
    env = dict(os.environ)
    if mmap_threshold is not None:  # glibc: fixed threshold, no dynamic growth (see --malloc-mmap-threshold)
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**_cfg_key(cfg), "status": "timeout", "error": f"killed after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            rec = json.loads(line[len(RESULT_MARK):])
            rec["wall_seconds"] = wall
            return rec
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    status = "killed" if proc.returncode < 0 else "error"  # e.g. SIGKILL from the OOM killer
    return {**_cfg_key(cfg), "status": status, "returncode": proc.returncode, "error": "\n".join(tail),
            "wall_seconds": wall}


def skip_reason(cfg: dict[str, Any], done: list[dict[str, Any]], max_seconds: float) -> str | None:
    same = [r for r in done if r["strategy"] == cfg["strategy"] and r["order"] == cfg["order"]
            and r["resolution"] < cfg["resolution"]]
    for r in same:
        if r["status"] in ("timeout", "oom", "killed", "skipped"):
            return f"{r['status']} at smaller resolution {r['resolution']}"
    ok = [r for r in same if r["status"] == "ok"]
    if not ok:
        return None
    ref = max(ok, key=lambda r: r["resolution"])
    per_step = ref["seconds_per_step"] * (cfg["resolution"] / ref["resolution"]) ** 2
    predicted = STARTUP_SECONDS + 2 * per_step  # warm-up + at least one timed step
    if predicted > max_seconds:
        return f"predicted {predicted:.0f} s > --max-seconds {max_seconds:.0f} (from {ref['resolution']} px)"
    return None


def fastest_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per resolution and order: fastest strategy and every strategy's speed relative to it."""
    out: dict[str, Any] = {}
    for res in sorted({r["resolution"] for r in records}):
        entry: dict[str, Any] = {}
        for order in (*ORDERS, "any"):
            ok = [r for r in records if r["resolution"] == res and r["status"] == "ok"
                  and (order == "any" or r["order"] == order)]
            if not ok:
                continue
            best = max(ok, key=lambda r: r["signals_per_s"])
            entry[order] = {
                "strategy": best["strategy"], **({"order": best["order"]} if order == "any" else {}),
                "signals_per_s": best["signals_per_s"],
                "relative_speed": {_label(r, order == "any"): r["signals_per_s"] / best["signals_per_s"]
                                   for r in ok},
                "lowest_memory": min(ok, key=lambda r: r["peak_mem_mb"])["strategy"]
                if all(r.get("peak_mem_mb") is not None for r in ok) else None,
            }
        out[str(res)] = entry
    return out


def recommended_strategy(records: list[dict[str, Any]]) -> str | None:
    """Strategy with the highest geometric-mean speed relative to the per-(resolution, order) best,
    over the (resolution, order) cells where every strategy finished."""
    cells: dict[tuple[int, str], dict[str, float]] = {}
    for r in records:
        if r["status"] == "ok":
            cells.setdefault((r["resolution"], r["order"]), {})[r["strategy"]] = r["signals_per_s"]
    strategies = {r["strategy"] for r in records}
    full = [c for c in cells.values() if set(c) == strategies]
    if not full:
        return None
    score = {s: sum(math.log(c[s] / max(c.values())) for c in full) for s in strategies}
    return max(score, key=score.get)


def _label(r: dict[str, Any], with_order: bool) -> str:
    return f"{r['strategy']}/{r['order']}" if with_order else r["strategy"]


def plot(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = pyplot()
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"loop": "tab:blue", "batched": "tab:orange", "vmap": "tab:green"}
    styles = {"second": ("-", "o"), "first": ("--", "s")}
    for strategy in STRATEGIES:
        for order in ORDERS:
            ok = sorted((r for r in records if r["strategy"] == strategy and r["order"] == order
                         and r["status"] == "ok"), key=lambda r: r["resolution"])
            if not ok:
                continue
            ls, marker = styles[order]
            kw = dict(color=colors[strategy], linestyle=ls, marker=marker,
                      label=f"{strategy} / {order} order")
            xs = [r["resolution"] for r in ok]
            ax_speed.plot(xs, [r["signals_per_s"] for r in ok], **kw)
            ax_mem.plot(xs, [max(r["peak_mem_mb"], 1e-1) for r in ok], **kw)
    for ax, ylabel in ((ax_speed, "signals / s (outer step)"), (ax_mem, "peak memory increase (MiB)")):
        ax.set_xlabel("resolution (pixels per side)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        res = sorted({r["resolution"] for r in records})
        ax.set_xticks(res, [str(x) for x in res])
        ax.set_xticks([], minor=True)
    ax_speed.legend(fontsize=8)
    ax_speed.set_title("meta-training throughput")
    ax_mem.set_title("peak memory")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_title(args: argparse.Namespace | dict[str, Any], device: torch.device | str,
               env: dict[str, Any] | None = None) -> str:
    cfg = vars(args) if isinstance(args, argparse.Namespace) else args
    env = env or env_info(device)
    threads = cfg.get("threads") or env["torch_threads"]
    plural = "s" if threads != 1 else ""
    return (f"MetaLearner strategies on {env.get('device_name') or device} ({threads} thread{plural}), "
            f"SIREN {cfg['depth']}x{cfg['width']}, meta-batch {cfg['meta_batch']}, "
            f"{cfg['inner_steps']} inner steps, torch {env['torch']}")


def replot(path: Path) -> None:
    """Redraw the plot of an existing results JSON (``--replot``), without running anything."""
    doc = json.loads(path.read_text())
    title = plot_title(doc["config"], doc["env"]["device"], doc["env"])
    png = plot(doc["records"], path.with_suffix(".png"), title)
    print(f"wrote {png}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.single is not None:
        single_main(args)
        return
    if args.replot is not None:
        replot(args.replot)
        return
    device = resolve_device(args.device)
    out = args.output or RESULTS_DIR / f"strategy_{device.type}.json"
    base_cfg = {"device": str(device), "width": args.width, "depth": args.depth, "channels": args.channels,
                "meta_batch": args.meta_batch, "inner_steps": args.inner_steps, "meta_sgd": args.meta_sgd,
                "threads": args.threads, "seed": args.seed, "max_seconds": args.max_seconds,
                "chunk": args.chunk}
    records: list[dict[str, Any]] = []
    env_start = env_info(device)  # the code that runs; git_end below shows commits made meanwhile
    t_all = time.perf_counter()
    for res in sorted(args.resolutions):
        for order in args.orders:
            for strategy in args.strategies:
                cfg = {**base_cfg, "strategy": strategy, "order": order, "resolution": res,
                       "repeats": args.large_repeats if res >= args.large_resolution else args.repeats}
                reason = skip_reason(cfg, records, args.max_seconds)
                if reason:
                    rec = {**_cfg_key(cfg), "status": "skipped", "error": reason}
                else:
                    rec = run_in_subprocess(cfg, timeout=args.max_seconds + STARTUP_ALLOWANCE,
                                            mmap_threshold=args.malloc_mmap_threshold)
                for k in ("signals_per_s", "seconds_per_step", "peak_mem_mb"):
                    rec.setdefault(k, None)
                records.append(rec)
                if rec["status"] == "ok":
                    msg = (f"{rec['signals_per_s']:8.3f} signals/s  {rec['seconds_per_step']:8.3f} s/step  "
                           f"peak +{rec['peak_mem_mb']:8.1f} MiB  (x{rec['repeats']})")
                else:
                    msg = f"{rec['status']}: {rec.get('error')}"
                print(f"[{time.perf_counter() - t_all:7.1f}s] {res:4d}px {order:6s} {strategy:7s} {msg}",
                      flush=True)
                payload = {
                    "benchmark": "strategy",
                    "config": {k: v for k, v in vars(args).items()
                               if k not in ("single", "output", "replot")},
                    "timing": TIMING_NOTE,
                    "memory_method": MEMORY_NOTE[device.type],
                    "records": records,
                    "fastest": fastest_summary(records),
                    "recommended_default": recommended_strategy(records),
                    "total_seconds": time.perf_counter() - t_all,
                    "git_end": git_commit(),
                }
                # Rewritten after each configuration, so partial results survive an interruption.
                write_results(out, payload, device=device, env=env_start)
    print(f"wrote {out}")
    if not args.no_plot:
        png = plot(records, out.with_suffix(".png"), plot_title(args, device))
        print(f"wrote {png}")
    for res, entry in fastest_summary(records).items():
        parts = [f"{order}: {e['strategy']}" + (f"/{e['order']}" if order == "any" else "")
                 for order, e in entry.items()]
        print(f"fastest at {res:>4s}px  " + ("  ".join(parts) or "(nothing finished)"))
    print(f"recommended default for {device.type}: {recommended_strategy(records)}")


if __name__ == "__main__":
    main()
