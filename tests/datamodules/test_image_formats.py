"""IMAGE_FORMATS declares each image dataset once: the config, the reader, the transforms and the
input shape a search budget uses all come from its entry."""

from pkgutil import resolve_name

import pytest
import torch

from datamodules import ImageDataConfig, build_datamodule
from datamodules.config import IMAGE_FORMATS
from datamodules.synthetic import write_cifar10_batches, write_idx_dataset
from datamodules.transforms import image_transform

# Each writes 10 training and 4 test images of its format.
WRITERS = {"fashion_mnist": lambda root: write_idx_dataset(root, train=10, test=4),
           "mnist": lambda root: write_idx_dataset(root, train=10, test=4),
           "cifar10": lambda root: write_cifar10_batches(root, per_batch=2, test=4)}


@pytest.mark.parametrize("dataset", sorted(set(IMAGE_FORMATS) - {"folder"}))
def test_each_array_format_reads_through_its_declared_reader(dataset, tmp_path):
    image_format = IMAGE_FORMATS[dataset]
    root = WRITERS[dataset](tmp_path)
    (train_x, train_y), (test_x, _), names = resolve_name(image_format.read)(root)
    assert len(train_x) == len(train_y) == 10 and len(test_x) == 4 and names
    cfg = ImageDataConfig(dataset=dataset, root=str(root), batch_size=4, augment=False)
    assert cfg.input_shape() == (image_format.channels, image_format.side, image_format.side)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.sample_shape == cfg.input_shape() and next(iter(dm.train_dataloader())).x.shape[1:] == cfg.input_shape()


@pytest.mark.parametrize("dataset", sorted(IMAGE_FORMATS))
def test_the_transforms_normalise_with_the_declared_statistics(dataset):
    image_format = IMAGE_FORMATS[dataset]
    side = image_format.side
    grey = torch.full((image_format.channels, side, side), 128, dtype=torch.uint8)
    out = image_transform(dataset, train=False)(grey)
    expected = [(128 / 255 - mean) / std for mean, std in zip(image_format.mean, image_format.std)]
    assert out.shape == (image_format.channels, side, side)
    torch.testing.assert_close(out.mean(dim=(1, 2)), torch.tensor(expected), rtol=1e-4, atol=1e-4)


def test_an_unknown_dataset_names_the_formats():
    with pytest.raises(ValueError, match="fashion_mnist.*mnist.*cifar10.*folder"):
        ImageDataConfig(dataset="svhn", root="x")
