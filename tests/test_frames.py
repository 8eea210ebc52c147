"""WebSocket framing of server frames, checked against websockets' own frame parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from gateway.frames import ws_frame


def parse(data: bytes) -> tuple[Frame, bytes]:
    """Parse one unmasked server frame with websockets; return it and what is left over."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
    else:  # pragma: no cover - the parser wanted more bytes than the frame holds
        raise AssertionError("incomplete frame")
    return frame, bytes(reader.buffer)


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (125, b"\x7d"),
        (126, b"\x7e\x00\x7e"),
        (65535, b"\x7e\xff\xff"),
        (65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
@pytest.mark.parametrize(("binary", "first_byte"), [(False, 0x81), (True, 0x82)])
def test_header_for_each_length_encoding(size: int, header: bytes, binary: bool, first_byte: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = ws_frame(payload, binary=binary)
    assert data == bytes((first_byte,)) + header + payload


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70_000])
def test_binary_frames_parse_back_with_websockets(size: int) -> None:
    payload = bytes(i % 256 for i in range(size))
    frame, rest = parse(ws_frame(payload, binary=True))
    assert frame.opcode is Opcode.BINARY
    assert frame.fin
    assert not frame.rsv1
    assert not frame.rsv2
    assert not frame.rsv3
    assert frame.data == payload
    assert rest == b""


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frames_parse_back_with_websockets(size: int) -> None:
    payload = ("é" * (size // 2) + "a" * (size % 2)).encode()
    assert len(payload) == size
    frame, rest = parse(ws_frame(payload, binary=False))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload
    assert bytes(frame.data).decode() == payload.decode()
    assert rest == b""


def test_frames_concatenate_into_a_stream() -> None:
    first, second = b'{"op":"message"}', b"x" * 300
    frame, rest = parse(ws_frame(first, binary=False) + ws_frame(second, binary=True))
    assert frame.data == first
    frame, rest = parse(rest)
    assert (frame.opcode, frame.data, rest) == (Opcode.BINARY, second, b"")
