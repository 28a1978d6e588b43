"""Why a listed video is not a video, finer than a decoder's "cannot open": the bad-file kinds.

Before a decoder sees a path (`access_problem`): `missing` (nothing there), `not_a_file` (a
directory named like a video, a socket), `empty` (zero bytes), `permission_denied` (it cannot be
opened for reading). After a decoder refused it (`content_problem`): `not_video` when the file
starts with none of the container signatures below (a text file, an image, an HTML error page
saved as .mp4), `truncated` when it is an MP4/MOV whose top-level boxes run past the end of the
file (cut before its index: a partial download or copy). Anything else keeps the decoder's
`unreadable` (a container it has no decoder for, damage inside).
"""

from __future__ import annotations

import os
import struct

HEADER_BYTES = 4096
# Box types that may open an ISO base media file (MP4, MOV, 3GP, M4V): `ftyp`, or an older QuickTime
# file starting straight with a movie, media or padding box.
ISO_FIRST_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp")
# Magic bytes at offset 0 of the other containers video datasets come in.
MAGIC = (b"\x1a\x45\xdf\xa3",  # Matroska / WebM (EBML)
         b"RIFF",  # AVI (RIFF....AVI )
         b"\x00\x00\x01\xba",  # MPEG program stream
         b"FLV",  # Flash video
         b"OggS",  # Ogg (Theora)
         b"\x30\x26\xb2\x75",  # ASF / WMV
         )
TS_PACKET = 188


def access_problem(path: str) -> str | None:
    """missing | not_a_file | empty | permission_denied, or None when the path opens as a non-empty file."""
    if not os.path.exists(path):
        return "missing"
    if not os.path.isfile(path):
        return "not_a_file"
    if os.path.getsize(path) == 0:
        return "empty"
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return "permission_denied"
    return None


def content_problem(path: str) -> str | None:
    """not_video | truncated for a file a decoder could not open; None when neither explains it."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(HEADER_BYTES)
            size = os.fstat(handle.fileno()).st_size
            if header[4:8] in ISO_FIRST_BOXES:
                return "truncated" if _boxes_run_past_end(handle, size) else None
    except OSError:
        return None
    if header.startswith(MAGIC) or _is_transport_stream(header):
        return None
    return "not_video"


def _boxes_run_past_end(handle, size: int) -> bool:
    """Walk the top-level boxes (32-bit size + type; size 1 = a 64-bit size follows; 0 = to the end)."""
    offset = 0
    while offset + 8 <= size:
        handle.seek(offset)
        box_size, _kind = struct.unpack(">I4s", handle.read(8))
        if box_size == 1:
            box_size = struct.unpack(">Q", handle.read(8))[0]
        elif box_size == 0:
            return False
        if box_size < 8:
            return False  # not a box walk we understand: leave it to the decoder's word
        offset += box_size
    return offset > size


def _is_transport_stream(header: bytes) -> bool:
    return len(header) > 2 * TS_PACKET and all(header[i] == 0x47 for i in (0, TS_PACKET, 2 * TS_PACKET))
