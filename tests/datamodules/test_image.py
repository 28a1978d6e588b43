"""Image DataModules on generated Fashion-MNIST idx files, CIFAR-10 pickles and a class-folder tree."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import ImageDataConfig, build_datamodule
from datamodules.idx import read_idx
from datamodules.synthetic import write_cifar10_batches, write_idx_dataset


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx_files_give_normalised_batches_and_seeded_splits(tmp_path, compress):
    root = write_idx_dataset(tmp_path, train=50, test=20, num_classes=10, compress=compress)
    cfg = ImageDataConfig(root=str(root), batch_size=8, val_fraction=0.2, limit_train=16)
    dm = build_datamodule(cfg, seed=1)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.class_names[0] == "T-shirt/top" and dm.sample_shape == (1, 28, 28)
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [40, 10, 20]
    batches = list(dm.train_dataloader())
    assert sum(len(y) for _, y in batches) == 16  # limit_train
    x, y = batches[0]
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, _ = next(iter(dm.val_dataloader()))
    assert x.mean().item() < 0 < x.max().item()  # normalised with the Fashion-MNIST mean/std
    again = build_datamodule(cfg, seed=1)
    again.setup("fit")
    assert dm.datasets["val"].indices == again.datasets["val"].indices


def test_idx_reader_rejects_a_truncated_file_naming_it(tmp_path):
    root = write_idx_dataset(tmp_path, train=4, test=2, compress=False)
    path = root / "train-images-idx3-ubyte"
    assert read_idx(path).shape == (4, 28, 28)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*bytes"):
        read_idx(path)


def test_missing_idx_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"missing idx files \['train-images-idx3-ubyte\[\.gz\]'"):
        build_datamodule(ImageDataConfig(dataset="mnist", root=str(tmp_path))).setup()


def test_cifar10_python_batches(tmp_path):
    root = write_cifar10_batches(tmp_path / "cifar-10-batches-py", per_batch=6, test=10).parent
    dm = build_datamodule(ImageDataConfig(dataset="cifar10", root=str(root), batch_size=5, val_fraction=0.0))
    dm.setup("fit")
    assert dm.class_names[:2] == ["airplane", "automobile"] and dm.sample_shape == (3, 32, 32)
    assert len(dm.datasets["train"]) == 30 and dm.datasets["val"] is dm.datasets["test"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def _image_tree(root: Path, classes=("cat", "dog"), per_class=5) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_class_folder_tree_split_by_seed(tmp_path):
    root = _image_tree(tmp_path / "pets")
    cfg = ImageDataConfig(dataset="folder", root=str(root), image_size=32, batch_size=4, val_fraction=0.25,
                          test_fraction=0.2)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2 and dm.sample_shape == (3, 32, 32)
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    x, _ = next(iter(dm.test_dataloader()))
    assert x.shape == (2, 3, 32, 32)


def test_empty_class_folder_is_named(tmp_path):
    root = _image_tree(tmp_path / "pets")
    (root / "bird").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*pets/bird has no images"):
        build_datamodule(ImageDataConfig(dataset="folder", root=str(root))).setup()


def test_real_fashion_mnist_from_the_debian_package():
    dm = build_datamodule(ImageDataConfig(limit_train=64, batch_size=32))
    dm.setup("fit")
    assert dm.num_classes == 10 and len(dm.datasets["test"]) == 10_000
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 60_000
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and set(y.tolist()) <= set(range(10))


def test_split_folders_keep_the_training_label_indices(tmp_path):
    _image_tree(tmp_path / "pets" / "train", classes=("bird", "cat", "dog"), per_class=2)
    _image_tree(tmp_path / "pets" / "val", classes=("dog",), per_class=3)
    dm = build_datamodule(ImageDataConfig(dataset="folder", root=str(tmp_path / "pets"), image_size=24, batch_size=8))
    dm.setup("fit")
    assert dm.class_names == ["bird", "cat", "dog"] and len(dm.datasets["train"]) == 6
    _, y = next(iter(dm.val_dataloader()))
    assert y.tolist() == [2, 2, 2]  # "dog" is class 2 of the training split, not class 0 of val's
    assert dm.test_dataloader().dataset is dm.datasets["val"]  # no root/test: test on val
