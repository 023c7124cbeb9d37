"""The executor protocol's framing, over a real socketpair (descriptors included)."""

import os
import socket

import pytest

from zerolab.zerocloud import protocol


def test_message_with_payloads_and_a_descriptor(tmp_path):
    f = tmp_path / "data"
    f.write_bytes(b"object data")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(f, os.O_RDONLY)
    protocol.send(a, {"op": "run"}, [b"one", b"", b"x" * 200000], [fd])
    os.close(fd)
    reader = protocol.Reader(b)
    header, payloads = reader.message(want_fds=True)
    assert header["op"] == "run"
    assert payloads == [b"one", b"", b"x" * 200000]
    assert len(reader.fds) == 1
    assert os.read(reader.fds[0], 100) == b"object data"
    os.close(reader.fds[0])


def test_pack_and_decode_round_trip():
    data = protocol.pack({"status": "ok"}, [b"abc", b"de"])
    assert protocol.decode(data) == ({"status": "ok", "payloads": [3, 2]}, [b"abc", b"de"])


def test_truncated_message_is_an_error():
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(protocol.pack({"a": 1}, [b"abc"])[:-1])
