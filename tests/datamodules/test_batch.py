"""Every DataModule yields `Batch(x, y)` NamedTuples: typed fields, and the `(x, y)` tuple contract kept."""

import pickle

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from datamodules import ImageDataConfig, VideoDataConfig, build_datamodule
from datamodules.batch import Batch, CollateBatch
from datamodules.synthetic import write_idx_dataset
from datamodules.video_dataset import collate_skip_none


def test_image_batches_are_typed_and_still_unpack_as_x_y(tmp_path):
    dm = build_datamodule(ImageDataConfig(root=str(write_idx_dataset(tmp_path, train=20, test=8)), batch_size=4))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and batch.x.shape == (4, 1, 28, 28) and batch.y.dtype == torch.int64
    x, y = batch
    assert x is batch.x and y is batch[1]
    moved = move_data_to_device(batch, "cpu")  # what Lightning does before every step
    assert isinstance(moved, Batch) and torch.equal(moved.y, batch.y)


def test_video_test_batches_are_typed_with_every_clip(motion_root):
    cfg = VideoDataConfig(root=str(motion_root), clip_len=4, frame_interval=2, short_side=32, crop_size=32,
                          test_clips=2, batch_size=2, split_fractions=(0.34, 0.33, 0.33))
    dm = build_datamodule(cfg)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert isinstance(batch, Batch) and batch.x.shape[1:] == (2, 3, 4, 32, 32) and batch.y.dim() == 1


def test_a_batch_whose_items_all_failed_stays_none_and_the_collate_pickles():
    collate = pickle.loads(pickle.dumps(CollateBatch(collate_skip_none)))  # spawned workers unpickle it
    assert collate([None, None]) is None
    batch = collate([(torch.zeros(3), 1), None, (torch.ones(3), 0)])
    assert isinstance(batch, Batch) and batch.x.shape == (2, 3) and batch.y.tolist() == [1, 0]
