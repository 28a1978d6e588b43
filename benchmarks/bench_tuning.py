"""What running trials under Ray Tune costs and gains: trial overhead and concurrent vs sequential wall time.

    .venv/bin/python benchmarks/bench_tuning.py [--trials 8] [--concurrent 2] [--epochs 3]

One grid of 8 SE placements × reductions on `c2d_resnet_tiny` and tiny synthetic motion clips, run
twice in one process, each trial on one torch thread:
  * sequential: the 8 trial configs through `training.fit`, one after another (imports warmed first;
    4 before the search and 4 after it, so drifting load on a shared machine hits both sides);
  * concurrent: the same 8 as a Ray Tune search (`tuning.search.run_search`, FIFO scheduler, 2 trials
    at a time on a local 2-CPU Ray instance).
Trial overhead = the moment the trial could start -> its first training step (`timing/first_step_at`,
reported by the trial): for the first `concurrent` trials the call of `run_search` (so the space
check, the parent run, the trial actor's start and its imports count), for later ones the end of
the trial whose slot they take (actor reset, child run, budget check, fit's setup). Also printed:
from Tune's `on_trial_start` (actor already up) to the first step.
The concurrent wall time runs from calling `run_search` (space check, parent run, actor starts and
imports included) to the end of the last trial; the report and the registration of the best model
that follow (one torch.export) are printed apart, as the sequential loop does neither.
Bars: mean overhead <= 5 s per trial; concurrent <= 0.75 x sequential. Exit 1 on FAIL.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

OVERHEAD_BAR_S = 5.0
SPEEDUP_BAR = 0.75


def search_config(videos: Path, epochs: int, concurrent: int, trials: int):
    from tuning.config import validate_search_config

    placements = ["se-stage2", "se-stage3", "se-stage4", "se-all"]
    reductions = [2, 4, 8, 16][: max(1, trials // len(placements))]
    return validate_search_config({
        "name": "bench-tuning",
        "data": {"kind": "video", "dataset": "folder", "root": str(videos), "batch_size": 4, "clip_len": 4,
                 "frame_interval": 2, "short_side": 32, "crop_size": 32, "test_clips": 1},
        "model": {"family": "se", "backbone": "c2d_resnet_tiny", "placement": "se-stage3", "reduction": 4},
        "optim": {"lr": 0.05},
        "trainer": {"max_epochs": epochs, "accelerator": "cpu", "enable_progress_bar": False},
        "tracking": {"figures": False, "log_model": False, "experiment": "bench"},
        "search": {"metric": "val/acc", "mode": "max", "max_concurrent_trials": concurrent,
                   "scheduler": {"kind": "fifo"}, "resources": {"cpu": 1},
                   "space": {"model.placement": {"grid": placements}, "model.reduction": {"grid": reductions}}},
    })


def run_sequential(cfg, indices: range) -> float:
    from training.fit import fit
    from tuning.config import plan_search, trial_config

    points = plan_search(cfg).points
    started = time.monotonic()
    for index in indices:
        point = points[index]
        trial = trial_config(cfg.base_raw(), point)
        trial = trial.model_copy(update={"name": f"sequential-{index}", "tracking": trial.tracking.model_copy(
            update={"log_model": False, "register_as": None})})
        fit(trial)
    return time.monotonic() - started


def run_concurrent(cfg, concurrent: int) -> tuple[float, float, list[float], list[float]]:
    """(seconds to the last trial's end, seconds of run_search, overheads from the free slot,
    overheads from Tune's trial start)."""
    from ray import tune

    from tuning.search import run_search

    starts: dict[str, float] = {}
    ends: list[float] = []

    class TrialTimes(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            starts.setdefault(trial.trial_id, time.time())

        def on_trial_complete(self, iteration, trials, trial, **info):
            ends.append(time.time())

    started = time.time()
    result = run_search(cfg, callbacks=[TrialTimes()])
    whole = time.time() - started
    # FIFO with `concurrent` slots: the k-th trial to start takes the slot freed by the (k-concurrent)-th end.
    slot_free = [started] * concurrent + sorted(ends)
    from_slot, from_start = [], []
    for index, (trial_id, start) in enumerate(sorted(starts.items(), key=lambda item: item[1])):
        first_step = _first_step(Path(result.storage) / f"trial-{trial_id}" / "result.json")
        if first_step is not None:
            from_slot.append(first_step - slot_free[index])
            from_start.append(first_step - start)
    return max(ends) - started, whole, from_slot, from_start


def _first_step(path: Path) -> float | None:
    import json

    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        value = json.loads(line).get("timing/first_step_at")
        if value is not None:
            return value
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as home:
        os.environ["ATTNLAB_HOME"] = home
        return run(args, Path(home))


def run(args, home: Path) -> int:
    import torch

    torch.set_num_threads(1)
    from datamodules.synthetic import make_motion_videos

    videos = make_motion_videos(home / "videos", num_classes=2, videos_per_class=24, frames=16, size=(32, 32))
    cfg = search_config(videos, args.epochs, args.concurrent, args.trials)
    # Warm the imports and the MLflow store, as a long-lived process would have them.
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401

    from training import tracking

    tracking.experiment_id(tracking.tracking_uri(), "bench")
    # Half the sequential fits before the search and half after, so a change in the load of the
    # shared machine during the run weighs on both sides alike.
    half = args.trials // 2
    sequential = run_sequential(cfg, range(half))

    import ray

    ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False)
    try:
        concurrent, whole, overheads, after_start = run_concurrent(cfg, args.concurrent)
    finally:
        ray.shutdown()
    sequential += run_sequential(cfg, range(half, args.trials))

    mean_overhead = statistics.mean(overheads) if overheads else float("nan")
    ratio = concurrent / sequential
    overhead_ok = bool(overheads) and mean_overhead <= OVERHEAD_BAR_S
    ratio_ok = ratio <= SPEEDUP_BAR
    load = os.getloadavg()[0]
    print()
    print(f"{'measure':46} {'value':>10} {'bar':>10} result")
    print(f"{f'sequential fit, {args.trials} trials':46} {sequential:9.1f}s {'':>10}")
    print(f"{f'Tune search, {args.trials} trials, {args.concurrent} concurrent':46} {concurrent:9.1f}s {'':>10}")
    print(f"{'  + report and best-model registration':46} {whole - concurrent:9.1f}s")
    print(f"{'concurrent / sequential':46} {ratio:10.2f} {f'<= {SPEEDUP_BAR}':>10} {'PASS' if ratio_ok else 'FAIL'}")
    print(f"{'trial overhead: free slot -> first step, mean':46} {mean_overhead:9.2f}s {f'<= {OVERHEAD_BAR_S:.0f}s':>10} "
          f"{'PASS' if overhead_ok else 'FAIL'}")
    if overheads:
        print(f"{'trial overhead: median / max':46} {statistics.median(overheads):9.2f}s {max(overheads):9.2f}s")
        print(f"{'  Tune trial start (actor up) -> first step':46} {statistics.mean(after_start):9.2f}s")
    print(f"load average {load:.1f} on {os.cpu_count()} cores during the run")
    passed = overhead_ok and ratio_ok
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
