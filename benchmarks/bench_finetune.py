"""Fine-tuning vs training from scratch on the demo task: optimizer steps to the demo's accuracy.

    .venv/bin/python benchmarks/bench_finetune.py [--eval-every 25] [--pretrain-epochs 1] [--accelerator cpu]

Three runs through `training.fit`, in one process, on real Fashion-MNIST (Debian dataset-fashion-mnist):

1. "another run": a plain ResNet-18 (small stem, no SE) trained on a different task — 5 classes
   (T-shirt, trouser, pullover, dress, coat), 5,000 training images that the demo neither trains
   nor validates on;
2. from scratch: the demo (training/demo.yaml: SE-ResNet-18, 10 classes, 10,000 images, 2 epochs);
3. fine-tuned: the same demo config with `model.init.source: run:<run 1>` — the backbone's weights
   loaded, the SE blocks new, the 5-class head re-initialised for 10 classes.

Both demo runs are evaluated on the demo's validation images every `--eval-every` steps. The target
is the accuracy the from-scratch run has at its last step ("the demo's accuracy"); each curve's
steps-to-accuracy is the first evaluated step at or above it. Printed: both curves, both step
counts and their ratio (fine-tuned / scratch, bar < 1). Steps are counted, not seconds, so the
result does not depend on the (shared) machine's load; the CPU is printed for the record.
The fine-tuned run stops once it reaches the target. Exit 1 when the bar is missed.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RATIO_BAR = 1.0  # fine-tuned needs fewer steps than scratch
PRETRAIN_CLASSES = 5
PRETRAIN_IMAGES = 5000
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "training" / "demo.yaml"


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file: magic (0, 0, ubyte, ndim), big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def demo_indices(demo_data) -> set[int]:
    """Indices (in Fashion-MNIST's training file) of every image the demo trains or validates on."""
    from datamodules import build_datamodule

    datamodule = build_datamodule(demo_data, seed=0)
    datamodule.setup("fit")
    used = set()
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        used |= set(_original_indices(loader.dataset))
    used |= set(_original_indices(datamodule.datasets["val"]))  # the whole validation holdout
    return used


def _original_indices(dataset) -> list[int]:
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        parent = _original_indices(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    return list(range(len(dataset)))


def write_pretraining_task(root: Path, demo_data) -> Path:
    """5-class Fashion-MNIST images outside the demo's training and validation images."""
    from datamodules.config import FASHION_MNIST_DIR
    from datamodules.idx import load_idx_split

    (images, labels), (test_images, test_labels) = (load_idx_split(Path(FASHION_MNIST_DIR), p) for p in ("train", "t10k"))
    excluded = demo_indices(demo_data)
    pool = [i for i in range(len(labels)) if labels[i] < PRETRAIN_CLASSES and i not in excluded]
    chosen = sorted(np.random.default_rng(0).choice(pool, PRETRAIN_IMAGES, replace=False).tolist())
    test = test_labels < PRETRAIN_CLASSES
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte", images[chosen])
    write_idx(root / "train-labels-idx1-ubyte", labels[chosen])
    write_idx(root / "t10k-images-idx3-ubyte", test_images[test])
    write_idx(root / "t10k-labels-idx1-ubyte", test_labels[test])
    return root


def accuracy_callback(every: int, stop_at: float | None):
    """Validation accuracy every `every` optimizer steps (and at the last one): a list of (step, acc)."""
    import lightning.pytorch as pl
    import torch

    class Curve(pl.Callback):
        def __init__(self):
            self.points: list[tuple[int, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % every and step != trainer.estimated_stepping_batches:
                return
            pl_module.eval()
            correct = total = 0
            with torch.no_grad():
                for x, y in trainer.datamodule.val_dataloader():
                    prediction = pl_module(x.to(pl_module.device)).argmax(1).cpu()
                    correct, total = correct + int((prediction == y).sum()), total + len(y)
            pl_module.train()
            self.points.append((step, correct / total))
            if stop_at is not None and correct / total >= stop_at:
                trainer.should_stop = True

    return Curve()


def run(raw: dict, callback=None):
    from training.config import validate_config
    from training.fit import fit

    started = time.monotonic()
    result = fit(validate_config(raw), callbacks=[callback] if callback else None)
    return result, time.monotonic() - started


def steps_to(points: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, accuracy in points if accuracy >= target), None)


def cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (lscpu failed)"
    return next((line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name")),
                "unknown")


def main() -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-every", type=int, default=25, help="optimizer steps between accuracy points")
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--accelerator", default="cpu", help="the runs' trainer.accelerator (cpu, gpu)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    os.environ["ATTNLAB_HOME"] = str(home)
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    quiet = {"figures": False, "log_model": False, "register_as": None, "experiment": "bench-finetune"}
    demo["tracking"] = quiet
    demo["trainer"].update(accelerator=args.accelerator, enable_progress_bar=False)
    demo["data"]["limit_test"] = 1000  # the curves use the validation images; the test pass only closes the run

    from datamodules.config import ImageDataConfig

    pretraining = {**demo, "name": "bench-pretrain-5-classes",
                   "data": {**demo["data"], "root": str(write_pretraining_task(home / "five-classes",
                                                                             ImageDataConfig(**demo["data"]))),
                            "limit_train": None, "limit_val": 500, "limit_test": 1000},
                   "model": {"family": "none", "backbone": demo["model"]["backbone"]},
                   "trainer": {**demo["trainer"], "max_epochs": args.pretrain_epochs}}
    pretrained, pretrain_seconds = run(pretraining)

    scratch_curve = accuracy_callback(args.eval_every, stop_at=None)
    _, scratch_seconds = run({**demo, "name": "bench-scratch"}, scratch_curve)
    target = scratch_curve.points[-1][1]
    finetune = {**demo, "name": "bench-finetuned",
                "model": {**demo["model"], "init": {"source": "run:bench-pretrain-5-classes"}}}
    finetune_curve = accuracy_callback(args.eval_every, stop_at=target)
    _, finetune_seconds = run(finetune, finetune_curve)

    scratch_steps, finetune_steps = steps_to(scratch_curve.points, target), steps_to(finetune_curve.points, target)
    print()
    print(f"pretraining run (5 classes, {PRETRAIN_IMAGES} images, {args.pretrain_epochs} epochs): "
          f"test/acc {pretrained.metrics.get('test/acc', float('nan')):.4f}, {pretrain_seconds:.0f} s")
    print(f"{'step':>6} {'scratch val/acc':>16} {'fine-tuned val/acc':>19}")
    finetuned = dict(finetune_curve.points)
    for step, accuracy in scratch_curve.points:
        other = f"{finetuned[step]:.4f}" if step in finetuned else ""
        print(f"{step:>6} {accuracy:>16.4f} {other:>19}")
    print(f"target: the from-scratch demo's accuracy at its last step, {target:.4f}")
    print(f"{'steps to target, from scratch':40} {scratch_steps}  ({scratch_seconds:.0f} s for the whole run)")
    print(f"{'steps to target, fine-tuned':40} {finetune_steps}  ({finetune_seconds:.0f} s, stopped at the target)")
    passed = finetune_steps is not None and finetune_steps / scratch_steps < RATIO_BAR
    ratio = f"{finetune_steps / scratch_steps:.2f}" if finetune_steps is not None else "not reached"
    print(f"{'fine-tuned / scratch steps':40} {ratio}  (bar < {RATIO_BAR}) {'PASS' if passed else 'FAIL'}")
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"accelerator {args.accelerator}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
