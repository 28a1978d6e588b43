"""Raw inputs go through the very pipeline of the test split: images as bytes, files or arrays, and
videos as files, give the tensors the DataModules give for the same samples."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import ImageDataConfig, VideoDataConfig, build_datamodule
from datamodules.raw_inputs import ContractError, preprocessing_contract, raw_inputs_for
from datamodules.split_inputs import folder_samples, split_samples
from datamodules.synthetic import write_idx_dataset
from datamodules.transforms import image_transform


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    return write_idx_dataset(tmp_path_factory.mktemp("idx"), train=20, test=12)


@pytest.fixture
def grey(idx_root):
    return raw_inputs_for(preprocessing_contract(ImageDataConfig(root=str(idx_root)), channels=1))


def test_png_bytes_files_and_arrays_give_the_test_transform_of_the_pixels(grey, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    expected = image_transform("fashion_mnist", train=False)(torch.from_numpy(image)[None])
    (tmp_path / "x.png").write_bytes(_png(image))
    for given in (_png(image), str(tmp_path / "x.png"), image, image[:, :, None]):
        assert torch.equal(grey.tensor(given), expected)
    assert grey.batch([image, _png(image)]).shape == (2, 1, 28, 28)


def test_other_image_sizes_are_resized_to_the_training_side(grey):
    assert grey.tensor(np.zeros((56, 40), np.uint8)).shape == (1, 28, 28)


@pytest.mark.parametrize("given, message", [
    (_png(np.zeros((28, 28, 3), np.uint8)), "a RGB image; this model takes images (1 channel, grayscale, 28x28)"),
    (np.zeros((28, 28, 3), np.uint8), "3 channels; this model takes images (1 channel"),
    (np.zeros((28, 28), np.float32), "a float32 array"),
    (np.zeros((2, 28, 28, 1), np.uint8), "no single image"),
    (b"\x00\x01 not an image", "not a readable image"),
    (3.5, "a float; this model takes images"),
])
def test_inputs_the_contract_cannot_take_are_refused_naming_it(grey, given, message):
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grey.tensor(given)


def test_folder_models_read_files_like_image_folder_converting_to_rgb(tmp_path):
    from torchvision.datasets.folder import pil_loader

    inputs = raw_inputs_for(preprocessing_contract(ImageDataConfig(dataset="folder", root=str(tmp_path),
                                                                   image_size=32), channels=3))
    image = np.random.default_rng(1).integers(0, 256, (40, 50), dtype=np.uint8)
    (tmp_path / "grey.png").write_bytes(_png(image))
    expected = image_transform("folder", train=False, size=32)(pil_loader(str(tmp_path / "grey.png")))
    assert torch.equal(inputs.tensor(str(tmp_path / "grey.png")), expected)
    assert torch.equal(inputs.tensor(image), expected)


def test_split_samples_are_the_test_loaders_samples(idx_root):
    datamodule = build_datamodule(ImageDataConfig(root=str(idx_root), limit_test=5, augment=False), seed=3)
    datamodule.setup("test")
    samples, labels = split_samples(datamodule, "test")
    x, y = next(iter(datamodule.test_dataloader()))
    inputs = raw_inputs_for(preprocessing_contract(datamodule.cfg, channels=1))
    assert labels == y.tolist() and torch.equal(inputs.batch(samples), x)


def test_a_video_file_gives_the_datamodules_test_views(motion_root):
    cfg = VideoDataConfig(root=str(motion_root), clip_len=4, frame_interval=2, test_clips=3, test_crops=3,
                          short_side=64, crop_size=40, split_fractions=(0.34, 0.0, 0.66))
    datamodule = build_datamodule(cfg, seed=0)
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    inputs = raw_inputs_for(preprocessing_contract(cfg, channels=3))
    dataset = inputs.dataset([record.path for record in test.records])
    for index in range(len(test)):
        views = inputs.views(dataset, index)
        assert views.shape == (9, 3, 4, 40, 40) and torch.equal(views, test[index][0])
    samples, labels = split_samples(datamodule, "test")
    assert [record.path for record in samples] == [record.path for record in test.records]
    paths, folder_labels = folder_samples(motion_root, "video", datamodule.class_names)
    assert len(paths) == 6 and sorted(set(folder_labels)) == [0, 1]


def test_video_models_refuse_images_and_unreadable_files(motion_root, tmp_path):
    inputs = raw_inputs_for(preprocessing_contract(VideoDataConfig(root=str(motion_root)), channels=3))
    with pytest.raises(ContractError, match="an image; this model takes video files"):
        with inputs.files([_png(np.zeros((8, 8), np.uint8))]):
            pass
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ContractError, match="broken.mp4: not a readable video"):
        inputs.dataset([str(tmp_path / "broken.mp4")])
    with pytest.raises(ValueError, match="class folders \\['down'\\] are not classes of the model"):
        folder_samples(motion_root, "video", ["up", "left"])
