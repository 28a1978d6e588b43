"""`attnlab data check` on 1,000 small videos: files probed per second against a bare decord loop, and from the cache.

Writes --videos small H.264 files (class folders), then per round, interleaved:
- bare: `len(decord.VideoReader(path))` for every file, one after another — the least any probe does;
- check, cold: the data check as `attnlab data check` runs it (listing, probing every file in the
  probe processes with the config's backend, the report), with the probe cache deleted first;
- check, cached: the same again, every file answered by the probe cache.
The check's MLflow logging and table printing are left out: they cost the same for any dataset size.
Each figure is the fastest of --rounds (on a shared machine, noise only slows); the same ratios in
CPU seconds (this process and its probe processes, all threads) are printed beside them as a
load-independent cross-check; the bars use wall-clock figures.
Bars: check (cold) >= 0.9 x bare files/s; check (cached) >= 20 x faster than cold.
Prints the CPU model (lscpu) and exits 1 when a bar is missed.

    .venv/bin/python benchmarks/bench_data_check.py [--videos 1000] [--rounds 3] [--backend auto]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLD_BAR, CACHED_BAR = 0.9, 20.0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown CPU")


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the probe processes)."""
    own, children = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.user + own.system + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-check-") as tmp:
        os.environ["ATTNLAB_HOME"] = str(Path(tmp) / "home")  # a probe cache of its own
        import decord

        from datamodules.probe_cache import default_cache_path
        from datamodules.scan import PROBE_PROCESSES
        from datamodules.synthetic import make_motion_videos
        from training.data_check import DataCheckConfig, check_data

        started = time.perf_counter()
        root = make_motion_videos(Path(tmp) / "videos", num_classes=10, videos_per_class=args.videos // 10,
                                  frames=32, size=(64, 64))
        paths = sorted(str(p) for p in root.rglob("*.mp4"))
        print(f"  wrote {len(paths)} videos (32 frames, 64x64 H.264) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        cfg = DataCheckConfig(data={"kind": "video", "dataset": "folder", "root": str(root), "backend": args.backend,
                                    "clip_len": 8, "frame_interval": 2, "short_side": 64, "crop_size": 56})

        def bare() -> None:
            for path in paths:
                reader = decord.VideoReader(path, ctx=decord.cpu(0))
                len(reader)
                del reader

        def cold() -> None:
            default_cache_path().unlink(missing_ok=True)
            assert check_data(cfg)["files"] == len(paths)

        def cached() -> None:
            assert check_data(cfg)["from_probe_cache"] == len(paths)

        bare()  # warm the page cache and the libraries once
        best = {"bare": float("inf"), "cold": float("inf"), "cached": float("inf")}
        cpu = dict(best)
        for _ in range(args.rounds):
            for name, run in (("bare", bare), ("cold", cold), ("cached", cached)):
                wall, process = time.perf_counter(), cpu_seconds()
                run()
                best[name] = min(best[name], time.perf_counter() - wall)
                cpu[name] = min(cpu[name], cpu_seconds() - process)
    rate = {name: len(paths) / seconds for name, seconds in best.items()}
    cold_ratio, cached_ratio = rate["cold"] / rate["bare"], best["cold"] / best["cached"]
    ok_cold, ok_cached = cold_ratio >= COLD_BAR, cached_ratio >= CACHED_BAR
    backend = cfg.data.backend if cfg.data.backend != "auto" else "decord (auto)"
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"backend {backend}, {PROBE_PROCESSES} probe processes, {len(paths)} files, best of {args.rounds}")
    print(f"{'path':28} {'seconds':>8} {'files/s':>9} {'ratio':>8} {'(cpu)':>7} {'bar':>7}")
    print(f"{'bare decord open + len':28} {best['bare']:8.3f} {rate['bare']:9.0f} {'1.00':>8} {'1.00':>7}")
    print(f"{'data check, cold cache':28} {best['cold']:8.3f} {rate['cold']:9.0f} {cold_ratio:8.2f} "
          f"{cpu['bare'] / cpu['cold']:7.2f} {'>=0.9':>7} {'PASS' if ok_cold else 'FAIL'}")
    print(f"{'data check, probe cache':28} {best['cached']:8.3f} {rate['cached']:9.0f} {cached_ratio:7.1f}x "
          f"{cpu['cold'] / cpu['cached']:6.1f}x {'>=20x':>7} {'PASS' if ok_cached else 'FAIL'}  "
          "(cold seconds / cached seconds)")
    return 0 if ok_cold and ok_cached else 1


if __name__ == "__main__":
    sys.exit(main())
