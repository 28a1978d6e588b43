"""Video decoding behind one small interface: decord first, PyAV as fallback.

A backend answers two questions: `probe(path)` (frame count, fps, size, codec — and that the backend
can open the file and read its packets) and `read(path, indices, size)` (those frames as (T, H, W, 3)
uint8 RGB, resized on decode).

Both backends probe through one PyAV pass over the container (`probe_container`): the header's facts,
then every packet header demuxed, no pixel decoded — as cheap as decord's own open-and-len (which
demuxes every packet to build its index) and the only way to see what decord does not expose. A
probe reports two lengths. `num_frames` is the *decodable* length: the video packets the demuxer
actually delivers (what decord's `len` counts too), which is what sampling may use. `header_frames`
is what the container *promises* (the stream's frame count, else its duration × fps): a partly
written or partly downloaded file (a Matroska file cut at 15 %: header 444 frames, 50 decodable) is
found by comparing the two (`length_mismatch`). A bitstream that is corrupt inside is found when it
is decoded, and counted then.
Readers are opened per call and released before returning: decord leaks memory when a VideoReader
lives long, and an open file per dataset item does not survive fork/pickle into workers anyway.
decord's bridge is never set globally: frames come back as decord NDArrays -> `.asnumpy()`.
Any failure is raised as `VideoReadError` with the path and a short reason.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from datamodules.file_kinds import access_problem

# Frames further apart than this are reached by seeking (to the previous keyframe) rather than by
# decoding forward; below it, decoding forward costs at most as much as a seek would.
_SEEK_GAP = 48


# A decodable length this much below the header's is a truncated (or mislabelled) file. Headers that
# derive the length from a duration are off by a frame or two, never by 5 %.
LENGTH_TOLERANCE = 0.05


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int  # decodable: packets the demuxer delivers
    fps: float
    width: int
    height: int
    codec: str = ""  # FFmpeg's codec name: h264, hevc, vp9, av1, mpeg4, ...
    header_frames: int | None = None  # what the container header promises; None when it does not say

    @property
    def duration(self) -> float:
        """Seconds of decodable video."""
        return self.num_frames / self.fps if self.fps else 0.0

    def length_mismatch(self) -> str | None:
        """Why the decodable length disagrees with the header, or None when it agrees."""
        if self.header_frames is None:
            return None
        missing = self.header_frames - self.num_frames
        if missing >= 2 and missing > LENGTH_TOLERANCE * self.header_frames:
            return f"header says {self.header_frames} frames, {self.num_frames} decodable"
        return None


class VideoReadError(Exception):
    """A video could not be opened or decoded; `reason` is one of the data-quality categories."""

    # One-argument construction (reason "") is what a DataLoader worker's re-raise in the main process uses.
    def __init__(self, path: str, reason: str = "", detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}" + (f": {reason}" if reason else "") + (f" ({detail})" if detail else ""))


class VideoBackend(Protocol):
    name: str

    def probe(self, path: str) -> VideoInfo: ...

    def read(self, path: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray: ...


def check_file(path: str) -> None:
    """Cheap checks before handing a file to a decoder (which would report them less clearly):
    missing, not_a_file, empty, permission_denied (datamodules/file_kinds.py)."""
    problem = access_problem(path)
    if problem is not None:
        raise VideoReadError(path, problem)


def _duration_tag(value: str | None) -> float | None:
    """Seconds from Matroska's per-stream DURATION tag ('00:00:17.760000000')."""
    try:
        hours, minutes, seconds = (value or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def header_facts(path: str, container, stream) -> tuple[str, int | None, int, int]:
    """(codec, header_frames, width, height) of an open PyAV video stream, from the container alone.

    header_frames: the stream's frame count (MP4, AVI indexes), else its own duration (stream
    time base, or Matroska's DURATION tag), else the container's (which may include other streams)."""
    context = stream.codec_context
    if context is None:
        raise VideoReadError(path, "unreadable", f"no decoder for codec {stream.codec.name if stream.codec else '?'}")
    if not context.width or not context.height:
        raise VideoReadError(path, "unreadable", "no frame size in the header")
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    seconds = seconds or _duration_tag(stream.metadata.get("DURATION"))
    if seconds is None and container.duration:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    header = stream.frames or (round(seconds * fps) if seconds and fps else None)
    return context.codec.canonical_name, header, context.width, context.height


def probe_container(path: str) -> VideoInfo:
    """Header facts, then every packet header demuxed (the decodable length), in one PyAV open."""
    check_file(path)
    container, stream = _open_pyav(path)
    try:
        codec, header_frames, width, height = header_facts(path, container, stream)
        num_frames = 0
        try:
            num_frames = sum(1 for packet in container.demux(stream) if packet.pts is not None)
        except Exception:  # a read error ends the file where it broke: what came before counts
            pass
        if num_frames == 0:
            raise VideoReadError(path, "unreadable", "no frames")
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        return VideoInfo(num_frames, fps, width, height, codec, header_frames)
    except VideoReadError:
        raise
    except Exception as error:
        raise VideoReadError(path, "unreadable", str(error)[:200]) from error
    finally:
        container.close()


def _open_pyav(path: str, threads: int = 0):
    """(container, first video stream) with PyAV; VideoReadError when either is missing."""
    import av

    try:
        container = av.open(path)
    except Exception as error:
        raise VideoReadError(path, "unreadable", str(error)[:200]) from error
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "unreadable", "no video stream")
    stream = container.streams.video[0]
    if threads and stream.codec_context is not None:
        stream.codec_context.thread_count = threads
    return container, stream


class DecordBackend:
    """decord VideoReader; `size` = (height, width) is applied by decord's own scaler on decode.

    decord's bundled FFmpeg is older than PyAV's and lacks some decoders (AV1): the probe opens a file
    with decord too until decord has opened one file of its codec in this process, so a codec decord
    cannot read makes its files bad at probe time (naming the codec), not mid-training."""

    name = "decord"
    _opened_codecs: set[str] = set()  # per process; only successes are remembered

    def __init__(self, threads: int = 1):
        self.threads = threads

    def _open(self, path: str, size: tuple[int, int] | None):
        import decord

        height, width = size or (-1, -1)
        try:
            return decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height,
                                      num_threads=self.threads)
        except Exception as error:  # decord raises DECORDError/RuntimeError for anything unreadable
            raise VideoReadError(path, "unreadable", str(error).splitlines()[0][:200]) from error

    def probe(self, path: str) -> VideoInfo:
        info = probe_container(path)
        if info.codec not in self._opened_codecs:
            try:
                self._open(path, None)  # dropped at once: opening is the whole question
            except VideoReadError as error:
                raise VideoReadError(path, "unreadable", f"decord cannot open this {info.codec} file "
                                     f"({error.detail}); data.backend 'pyav' may") from error
            self._opened_codecs.add(info.codec)
        return info

    def read(self, path: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        check_file(path)
        wanted = np.unique(indices)  # sorted: decord then decodes forward, no seeking back
        reader = self._open(path, size)
        try:
            frames = reader.get_batch(wanted.tolist()).asnumpy()
        except Exception as error:
            raise VideoReadError(path, "decode_error", str(error).splitlines()[0][:200]) from error
        finally:
            del reader
        indices = np.asarray(indices)
        if len(indices) == len(wanted) and np.array_equal(indices, wanted):
            return frames  # the usual training clip: already in order, no copy
        return frames[np.searchsorted(wanted, indices)]


class PyAVBackend:
    """PyAV (FFmpeg): seek to the keyframe before each group of wanted frames, decode forward."""

    name = "pyav"

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._reformatter = None  # (pid, VideoReformatter): one swscale context per process

    def _reformatter_here(self):
        """This process's swscale context, reused for every frame it converts.

        ``frame.to_ndarray(width=...)`` builds a fresh context per frame with an automatic thread count
        (a pool of one thread per CPU): 1.3 ms a frame against 0.1 ms for one reused single-threaded
        context (320x240 -> 170x128, this machine), and DataLoader workers that each spawn a pool per
        frame fight over the cores. Kept per process: a pool does not survive the fork into a worker.
        """
        if self._reformatter is None or self._reformatter[0] != os.getpid():
            from av.video.reformatter import VideoReformatter

            self._reformatter = (os.getpid(), VideoReformatter())
        return self._reformatter[1]

    def probe(self, path: str) -> VideoInfo:
        return probe_container(path)

    def read(self, path: str, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        check_file(path)
        wanted = sorted(set(int(i) for i in indices))
        height, width = size or (None, None)
        container, stream = _open_pyav(path, self.threads)
        reformatter = self._reformatter_here()
        decoded: dict[int, np.ndarray] = {}
        try:
            rate = stream.average_rate or stream.guessed_rate
            time_base, start = stream.time_base, stream.start_time or 0
            for group in _seek_groups(wanted):
                target = set(group)
                # pts of the group's first frame; backward=True lands on the keyframe at or before it.
                container.seek(start + int(group[0] / rate / time_base), stream=stream, backward=True)
                for frame in container.decode(stream):
                    index = round(float((frame.pts - start) * time_base * rate))
                    if index in target:
                        decoded[index] = reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                                              threads=self.threads).to_ndarray()
                    if index >= group[-1]:
                        break
        except Exception as error:
            raise VideoReadError(path, "decode_error", str(error)[:200]) from error
        finally:
            container.close()
        missing = [i for i in wanted if i not in decoded]
        if missing:
            raise VideoReadError(path, "decode_error", f"frames {missing[:5]} not decodable (truncated?)")
        return np.stack([decoded[int(i)] for i in indices])


def _seek_groups(wanted: list[int]) -> list[list[int]]:
    """Split sorted frame indices where the gap is large enough that a seek pays off."""
    groups = [[wanted[0]]]
    for index in wanted[1:]:
        if index - groups[-1][-1] > _SEEK_GAP:
            groups.append([index])
        else:
            groups[-1].append(index)
    return groups


BACKENDS = {"decord": DecordBackend, "pyav": PyAVBackend}


def get_backend(name: str = "auto", threads: int = 1) -> VideoBackend:
    """The named backend; "auto" is decord where its wheel exists (x86_64), else PyAV."""
    if name == "auto":
        name = "decord" if importlib.util.find_spec("decord") is not None else "pyav"
    if name not in BACKENDS:
        raise ValueError(f"unknown video backend {name!r}; choose from {['auto', *BACKENDS]}")
    if name == "decord" and importlib.util.find_spec("decord") is None:
        raise ValueError("video backend 'decord' is not installed on this platform; use backend 'pyav'")
    return BACKENDS[name](threads)
