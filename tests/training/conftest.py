"""Fixtures of the training tests: small synthetic data sets and one MLflow store per session.

A fresh sqlite MLflow store spends ~15 s on 2 cores creating its tables; the family tests share one
(each run is found by its own name) instead of paying that per test.
"""

from pathlib import Path

import pytest
import yaml

from datamodules.synthetic import make_motion_videos, write_idx_dataset


@pytest.fixture(scope="session")
def idx_root(tmp_path_factory) -> Path:
    return write_idx_dataset(tmp_path_factory.mktemp("idx"), train=192, test=48, num_classes=10)


@pytest.fixture(scope="session")
def video_root(tmp_path_factory) -> Path:
    return make_motion_videos(tmp_path_factory.mktemp("videos"), num_classes=2, videos_per_class=4,
                              frames=16, size=(32, 32))


@pytest.fixture(scope="session")
def shared_mlflow_uri(tmp_path_factory) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the tables once
    return uri


def image_config(name: str, root: Path, family: str, backbone: str, **model) -> dict:
    """A run config dict that trains a few steps on the small idx data set."""
    return {
        "name": name,
        "data": {"kind": "image", "dataset": "fashion_mnist", "root": str(root), "batch_size": 16,
                 "num_workers": 0, "augment": False},
        "model": {"family": family, "backbone": backbone, **model},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 3,
                    "limit_val_batches": 2, "limit_test_batches": 2, "log_every_n_steps": 1,
                    "checkpoint_every_n_steps": 2, "enable_progress_bar": False},
        "tracking": {"figure_batches": 2},
    }


def video_config(name: str, root: Path) -> dict:
    return {
        "name": name,
        "data": {"kind": "video", "dataset": "folder", "root": str(root), "clip_len": 4, "frame_interval": 2,
                 "short_side": 32, "crop_size": 32, "test_clips": 2, "batch_size": 2, "num_workers": 0,
                 "split_fractions": [0.5, 0.25, 0.25]},
        "model": {"family": "nonlocal", "backbone": "c2d_resnet_tiny", "placement": "nl-5",
                  "block": {"sub_sample": True}},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_train_batches": 2,
                    "log_every_n_steps": 1, "checkpoint_every_n_steps": 1, "enable_progress_bar": False},
        "tracking": {"figure_batches": 1},
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def configs():
    """The config builders above, as a fixture (test modules cannot import conftest by name); session
    scope so module-scoped fixtures can build configs too."""
    class Builders:
        image = staticmethod(image_config)
        video = staticmethod(video_config)
        write = staticmethod(write_config)

    return Builders
