"""Which frames make a clip: the papers' dense sampling (clip_len frames every frame_interval).

Training takes one clip at a random start (Non-local: 32 frames at stride 2; its fast variant 8×8);
evaluation takes `num_clips` clips whose starts are spread uniformly from the first to the last
possible start, so together they cover the whole video (the papers' 10-clip testing). A single
evaluation clip is centred. Videos shorter than one clip are padded by the `pad` policy:
`loop` wraps around to the start, `repeat_last` repeats the final frame, `none` raises.
All indices are relative to a frame window [first, first + num_frames) of the video, so
manifest start/end times restrict sampling to that segment.
"""

from __future__ import annotations

import numpy as np
import torch

PAD_POLICIES = ("loop", "repeat_last", "none")


class ClipTooLongError(ValueError):
    """The video has fewer frames than one clip spans and the padding policy is `none`."""


def clip_span(clip_len: int, frame_interval: int) -> int:
    """Frames covered by one clip, from its first to its last sampled frame inclusive."""
    return (clip_len - 1) * frame_interval + 1


def clip_at(start: int, num_frames: int, clip_len: int, frame_interval: int, pad: str) -> np.ndarray:
    """Indices (clip_len,) of the clip starting at `start`, padded when it runs past the end."""
    indices = start + np.arange(clip_len) * frame_interval
    if indices[-1] < num_frames:
        return indices
    if pad == "loop":
        return indices % num_frames
    if pad == "repeat_last":
        return np.minimum(indices, num_frames - 1)
    raise ClipTooLongError(f"a clip spans {clip_span(clip_len, frame_interval)} frames (clip_len={clip_len}, "
                           f"frame_interval={frame_interval}) but the video has {num_frames}; set data.pad to "
                           f"'loop' or 'repeat_last', or shorten the clip")


def train_clip(num_frames: int, clip_len: int, frame_interval: int, pad: str,
               generator: torch.Generator | None = None) -> np.ndarray:
    """One clip at a uniformly random start (torch RNG: seeded per worker by the DataLoader)."""
    last_start = num_frames - clip_span(clip_len, frame_interval)
    start = int(torch.randint(0, last_start + 1, (), generator=generator)) if last_start > 0 else 0
    return clip_at(start, num_frames, clip_len, frame_interval, pad)


def uniform_clips(num_frames: int, clip_len: int, frame_interval: int, num_clips: int, pad: str) -> np.ndarray:
    """`num_clips` clips (num_clips, clip_len) with starts evenly spaced over the video."""
    last_start = max(0, num_frames - clip_span(clip_len, frame_interval))
    if num_clips == 1:
        starts = np.array([last_start // 2])
    else:
        starts = np.round(np.linspace(0, last_start, num_clips)).astype(int)
    return np.stack([clip_at(int(s), num_frames, clip_len, frame_interval, pad) for s in starts])
