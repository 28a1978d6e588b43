"""Raw-input prediction of the registered model (pyfunc) against the bare network and the DataModule.

Both models are logged and registered the way training does it (training.tracking.log_classifier)
in a temporary MLflow store, then loaded with mlflow.pyfunc.load_model:
- images: SE-ResNet-18 (small stem) on Fashion-MNIST-format 28x28 images. The pyfunc predicts on
  PNG bytes (decode, the test transform, network, top-5 rows); the reference calls the same network
  on the already preprocessed float tensors. Bar: pyfunc time / network time <= 1.3.
- videos: SE C2D tiny ResNet on 320x240 H.264 files, 10 test clips of 8 frames every 8, short
  side 128, 112 crop (the video defaults). The pyfunc's video path (probe, decode, sample,
  transform: everything before the network) against the video DataModule's own test loader over the
  same files (decode, sample, transform). Bar: pyfunc time / DataModule time <= 1.1. The end-to-end figure (pyfunc
  predict vs DataModule batches through the bare network) is printed beside it.
Each figure is the fastest of --repeats interleaved passes (on a shared machine noise only slows).

    .venv/bin/python benchmarks/bench_predict.py [--images 512] [--videos 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

IMAGE_BAR, VIDEO_BAR = 1.3, 1.1


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown CPU")


def register(cfg, uri: str, name: str):
    """Log and register the untrained network of `cfg` with its contract; return the loaded pyfunc."""
    from training import tracking
    from training.fit import build_parts
    from training.model_card import build_contract

    datamodule, module = build_parts(cfg)
    datamodule.setup("test")
    example = module.single_clip(next(iter(datamodule.test_dataloader()))[0])
    run = tracking.client(uri).create_run(tracking.experiment_id(uri, "bench"))
    contract = build_contract(cfg, datamodule, {}, run.info.run_id)
    tracking.log_classifier(uri, run.info.run_id, module.net.eval(), example, contract, name, alias="bench")
    return tracking.load_pyfunc(uri, f"models:/{name}@bench"), datamodule


def fastest(runs: dict, repeats: int) -> dict[str, float]:
    """Seconds of the fastest pass of each callable, passes interleaved."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def bench_images(folder: Path, uri: str, count: int, repeats: int, batch: int = 64) -> dict[str, float]:
    import pandas as pd
    from PIL import Image

    from datamodules.idx import load_idx_split
    from datamodules.synthetic import write_idx_dataset
    from datamodules.transforms import image_transform
    from training.config import validate_config

    root = write_idx_dataset(folder / "idx", train=64, test=count)
    cfg = validate_config({"name": "bench-image", "data": {"kind": "image", "root": str(root), "batch_size": batch},
                           "model": {"family": "se", "backbone": "resnet18_small", "placement": "se-all"},
                           "tracking": {"uri": uri}})
    model, _ = register(cfg, uri, "bench-image")
    network = model.unwrap_python_model().network
    _, (images, _) = (load_idx_split(root, part) for part in ("train", "t10k"))
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    transform = image_transform("fashion_mnist", train=False)
    tensors = torch.stack([transform(torch.from_numpy(image)[None]) for image in images])  # (N, 1, 28, 28)
    frames = [pd.DataFrame({"content": pngs[start:start + batch]}) for start in range(0, count, batch)]

    def pyfunc():
        for frame in frames:
            model.predict(frame, params={"top_k": 5})

    def bare():
        with torch.inference_mode():
            for start in range(0, count, batch):
                network(tensors[start:start + batch]).softmax(-1)

    pyfunc(), bare()  # warm-up
    seconds = fastest({"pyfunc": pyfunc, "network": bare}, repeats)
    return {"pyfunc": count / seconds["pyfunc"], "network": count / seconds["network"],
            "ratio": seconds["pyfunc"] / seconds["network"]}


def bench_videos(folder: Path, uri: str, videos: int, repeats: int) -> dict[str, float]:
    from datamodules.synthetic import make_motion_videos
    from modules.probabilities import class_probabilities
    from training.config import validate_config

    root = folder / "videos"
    make_motion_videos(root / "test", num_classes=2, videos_per_class=max(1, videos // 2), frames=150,
                       size=(240, 320), codec="h264", gop=25)
    (root / "train").symlink_to(root / "test")  # the DataModule wants a training split; only test is timed
    data = {"kind": "video", "root": str(root), "clip_len": 8, "frame_interval": 8, "test_clips": 10,
            "short_side": 128, "crop_size": 112, "batch_size": 1, "probe_cache": False}
    cfg = validate_config({"name": "bench-video", "data": data, "tracking": {"uri": uri},
                           "model": {"family": "se", "backbone": "c2d_resnet_tiny", "placement": "se-all"}})
    model, datamodule = register(cfg, uri, "bench-video")
    classifier = model.unwrap_python_model()
    paths = [record.path for record in datamodule.datasets["test"].records]
    clips = len(paths) * cfg.data.test_clips
    loader = datamodule.test_dataloader()

    def pyfunc_inputs():  # everything the pyfunc does before its network
        with classifier.inputs.files(paths) as files:
            dataset = classifier.inputs.dataset(files)
            for index in range(len(files)):
                classifier.inputs.views(dataset, index)

    def datamodule_inputs():
        for _ in loader:
            pass

    def pyfunc_predict():
        model.predict({"path": paths}, params={"top_k": 2})

    def datamodule_predict():
        with torch.inference_mode():
            for x, _ in loader:
                class_probabilities(classifier.network, x, classifier.input_dims)

    pyfunc_inputs(), datamodule_inputs()  # warm the page cache and the decoders
    seconds = fastest({"pyfunc": pyfunc_inputs, "datamodule": datamodule_inputs, "pyfunc_predict": pyfunc_predict,
                       "datamodule_predict": datamodule_predict}, repeats)
    return {"pyfunc": clips / seconds["pyfunc"], "datamodule": clips / seconds["datamodule"],
            "ratio": seconds["pyfunc"] / seconds["datamodule"],
            "predict": clips / seconds["pyfunc_predict"], "reference_predict": clips / seconds["datamodule_predict"],
            "predict_ratio": seconds["pyfunc_predict"] / seconds["datamodule_predict"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-predict-") as tmp:
        os.environ["ATTNLAB_HOME"] = str(Path(tmp) / "home")
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        started = time.perf_counter()
        image = bench_images(Path(tmp), uri, args.images, args.repeats)
        print(f"  measured images ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        video = bench_videos(Path(tmp), uri, args.videos, args.repeats)
        print(f"  measured videos ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    image_ok, video_ok = image["ratio"] <= IMAGE_BAR, video["ratio"] <= VIDEO_BAR
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}), "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'path':44} {'raw input':>12} {'reference':>12} {'time ratio':>10} {'bar':>6}")
    print(f"{'images: pyfunc on PNG vs network on tensors':44} {image['pyfunc']:8.1f} i/s {image['network']:8.1f} i/s "
          f"{image['ratio']:10.3f} {'<=1.3':>6} {'PASS' if image_ok else 'FAIL'}")
    print(f"{'videos: pyfunc input path vs test DataModule':44} {video['pyfunc']:8.1f} c/s "
          f"{video['datamodule']:8.1f} c/s {video['ratio']:10.3f} {'<=1.1':>6} {'PASS' if video_ok else 'FAIL'}")
    print(f"{'videos end to end: predict vs DataModule+net':44} {video['predict']:8.1f} c/s "
          f"{video['reference_predict']:8.1f} c/s {video['predict_ratio']:10.3f} {'-':>6}")
    failed = not (image_ok and video_ok)
    print("FAIL" if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
