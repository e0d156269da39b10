"""A DATA frame's repr from its first bytes: h2 builds one for every frame it receives.

h2 (4.4.1) logs each received frame with `trace("Received frame: %s",
repr(frame))`, building the repr even though its logger is a no-op; and
hyperframe's repr of a DATA frame serializes the whole payload and
hexlifies all of it to show its first 10 bytes. For bulk data that was
most of the server's CPU (a 1 MiB frame: a copy and 4 MiB of hex text).
`install` gives DataFrame a repr of the same text built from 11 bytes.
"""

from __future__ import annotations

from hyperframe import frame

_SHOWN = 11  # hyperframe shows 10 bytes, and "..." when there are more


def data_frame_body_repr(self: frame.DataFrame) -> str:
    """What hyperframe's Frame._body_repr gives for a DATA frame, at a constant cost."""
    # serialize_body() is the padding length byte (if padded), the data, then the padding.
    head = self.serialize_padding_data() + bytes(self.data[:_SHOWN])
    head += b"\0" * min(self.pad_length, _SHOWN)
    return frame._raw_data_repr(head[:_SHOWN])


def install() -> None:
    # setattr: mypy refuses assigning to a method, which is the point here.
    setattr(frame.DataFrame, "_body_repr", data_frame_body_repr)  # noqa: B010
