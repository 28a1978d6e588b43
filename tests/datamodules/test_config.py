"""The data section of a run config: a discriminated union with strict, documented fields."""

import pytest
from pydantic import TypeAdapter

from datamodules import DataConfig, ImageDataConfig, VideoDataConfig

ADAPTER = TypeAdapter(DataConfig)


def test_kind_selects_the_config_class():
    image = ADAPTER.validate_python({"kind": "image", "dataset": "mnist", "root": "data/mnist"})
    video = ADAPTER.validate_python({"kind": "video", "root": "data/clips", "clip_len": 32, "frame_interval": 2,
                                     "scale_jitter": [128, 160]})
    assert isinstance(image, ImageDataConfig) and isinstance(video, VideoDataConfig)
    assert video.clip_span == 63 and video.jitter_range == (128, 160)


def test_config_rejects_unknown_keys_and_inconsistent_sizes():
    with pytest.raises(ValueError, match="clip_length"):
        VideoDataConfig(root="x", clip_length=8)
    with pytest.raises(ValueError, match="short_side"):
        VideoDataConfig(root="x", short_side=100, crop_size=112)
    with pytest.raises(ValueError, match="scale_jitter"):
        VideoDataConfig(root="x", scale_jitter=(100, 150), crop_size=112)
    with pytest.raises(ValueError, match="manifests.train"):
        VideoDataConfig(dataset="manifest")
    with pytest.raises(ValueError, match="data.root is required for dataset='cifar10'"):
        ImageDataConfig(dataset="cifar10")


def test_every_field_is_documented_or_self_explanatory():
    undocumented = {name for model in (ImageDataConfig, VideoDataConfig)
                    for name, field in model.model_fields.items() if not field.description}
    assert undocumented <= {"kind", "dataset", "batch_size", "mean", "std"}
