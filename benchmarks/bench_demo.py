"""The demo trained both ways: as shipped (`precision: auto`, `channels_last: auto`) vs fp32 channels-first,
the demo's settings before `auto` existed.

Each run is `training.fit` on the demo config (training/demo.yaml: SE-ResNet-18, 2 epochs x 10k real
Fashion-MNIST images, tested on the 10k test split) in a fresh process and a fresh $ATTNLAB_HOME, so the
`auto` run pays for its one-off hardware measurement, as a first run on a machine does. Model logging and
figures are off in both (the same work either way, not training). The wall time is fit()'s.

Bars: test accuracy within 0.5 points of the fp32 run; wall time <= 0.6x the fp32 run's on CPUs with
AMX-BF16, <= 1.05x elsewhere (where `auto` may keep fp32, it must not cost time). Prints the CPU model.

    .venv/bin/python benchmarks/bench_demo.py [--set data.limit_train=2000 --set data.limit_test=2000 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import bf16_flags, describe

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "training" / "demo.yaml"
ACCURACY_BAR = 0.5  # points of test accuracy
TIME_BARS = {"amx": 0.6, "other": 1.05}
WAYS = {"fp32": ["trainer.precision=32-true", "model.channels_last=false"],
        "auto": ["trainer.precision=auto", "model.channels_last=auto"]}


def train_once(way: str, overrides: list[str]) -> dict:
    """Run inside a fresh process: fit the demo one way; seconds, test accuracy and what auto resolved to."""
    from training import fit, hardware
    from training.config import load_config

    cfg = load_config(DEMO_CONFIG, [f"name=bench-demo-{way}", "tracking.log_model=false", "tracking.figures=false",
                                    "tracking.register_as=null", "trainer.enable_progress_bar=false",
                                    *WAYS[way], *overrides])
    started = time.perf_counter()
    result = fit(cfg)
    return {"seconds": time.perf_counter() - started, "accuracy": result.metrics["test/acc"],
            "precision": hardware.precision(cfg), "channels_last": hardware.channels_last(cfg, 2)}


def run_way(way: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-demo-") as home:
        env = {**os.environ, "ATTNLAB_HOME": home}
        done = subprocess.run([sys.executable, __file__, "--one", way, *[f"--set={o}" for o in overrides]],
                              env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {way} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the demo config in both runs, e.g. data.limit_train=2000 for a quick check "
                             "(the bars are for the demo as shipped)")
    parser.add_argument("--one", choices=list(WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.one, args.overrides)))
        return 0
    overrides = args.overrides
    runs = {way: run_way(way, overrides) for way in WAYS}
    fp32, auto = runs["fp32"], runs["auto"]
    time_ratio = auto["seconds"] / fp32["seconds"]
    points = 100 * (auto["accuracy"] - fp32["accuracy"])
    flags = bf16_flags()
    time_bar = TIME_BARS["amx" if "amx_bf16" in flags else "other"]
    print(f"demo (training/demo.yaml{', ' + ', '.join(overrides) if overrides else ''}) trained two ways, "
          f"fresh process and home each\n{describe()}")
    for way, run in runs.items():
        print(f"  {way:5} precision {run['precision']:10} channels_last {str(run['channels_last']):5}  "
              f"{run['seconds']:7.1f} s  test accuracy {100 * run['accuracy']:.2f} %")
    checks = [(f"accuracy auto - fp32: {points:+.2f} points, within ±{ACCURACY_BAR}", abs(points) <= ACCURACY_BAR),
              (f"wall time auto / fp32: {time_ratio:.2f} <= {time_bar} "
               f"({'AMX-BF16' if time_bar == TIME_BARS['amx'] else 'no AMX-BF16'} CPU)", time_ratio <= time_bar)]
    for description, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {description}")
    return 0 if all(passed for _, passed in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
