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


# ------------------------------------------------------------- messages
def full_request():
    return protocol.RunRequest(
        program=protocol.ProgramSource(payload=0), program_name="swift://a/c/p.wasm", args=("p", "-x"),
        env={"LANG": "C"}, timeout=10, memory=1 << 28, max_input=1 << 30,
        inputs=(protocol.InputChannel("/dev/stdin", fd=0), protocol.InputChannel("/script", payload=1)),
        outputs=(protocol.OutputChannel("/dev/stdout", 100), protocol.OutputChannel("/dev/stderr")),
        images=(protocol.ExtraImage(2), protocol.ExtraImage(sysimage="python")))


def on_the_wire(message, payloads=3):
    """A message's header as the receiver parses it: framed, with its payload lengths."""
    return protocol.parse_header(protocol.encode(message.to_wire(), [b"x"] * payloads)[4:])


def test_a_request_round_trips_through_the_wire():
    request = full_request()
    assert protocol.RunRequest.from_wire(on_the_wire(request)) == request
    assert protocol.parse_request(on_the_wire(request)) == request
    image = protocol.RunRequest(protocol.ProgramSource(image="python", path="bin/python"))
    assert protocol.parse_request(on_the_wire(image, 0)) == image
    assert image.to_wire() == {"op": "run", "program": {"image": "python", "path": "bin/python"}, "args": [],
                               "env": {}, "inputs": [], "outputs": [], "images": []}
    assert protocol.parse_request({"op": "ping"}) == protocol.PingRequest()
    in_app = protocol.RunRequest(protocol.ProgramSource(payload=0, path="bin/app"), images=(protocol.ExtraImage(0),))
    assert in_app.to_wire()["program"] == {"payload": 0, "path": "bin/app"}
    assert protocol.parse_request(on_the_wire(in_app, 1)) == in_app


def test_a_reply_round_trips_and_its_outputs_match_its_payloads():
    report = protocol.JobReport(exit_code=0, exit_state="ok", user_rc=0, validator=0, etag="disable",
                                elapsed=0.25, cdr="0.00 0.00 1 2 3 4 0 0 0 0")
    reply = protocol.RunReply(report, ("/dev/stdout",))
    header, payloads = protocol.decode(protocol.pack(reply.to_wire(), [b"out"]))
    assert protocol.parse_reply(header) == reply and payloads == [b"out"]
    with pytest.raises(protocol.ProtocolError, match="names 1 outputs but carries 0 payloads"):
        protocol.parse_reply(reply.to_wire())
    with_digests = protocol.RunReply(report, ("/dev/stdout",), ("5d41402abc4b2a76b9719d911017c592",))
    header, _ = protocol.decode(protocol.pack(with_digests.to_wire(), [b"hello"]))
    assert protocol.parse_reply(header) == with_digests
    refusal = protocol.Refusal("busy", "4 jobs running")
    assert protocol.parse_reply(refusal.to_wire()) == refusal


def wire(**changes):
    header = dict(full_request().to_wire(), payloads=[1, 1, 1])
    header.update(changes)
    return {k: v for k, v in header.items() if v is not ...}


@pytest.mark.parametrize("header, reason", [
    (wire(timeout="10"), "request.timeout must be an integer"),
    (wire(timeout=True), "request.timeout must be an integer"),
    (wire(memory=-1), "request.memory must be at least 0"),
    (wire(memory=1 << 64), "request.memory must be at most 9223372036854775807"),
    (wire(timeout=10 ** 30), "request.timeout must be at most 2147483647"),
    (wire(args="p -x"), "request.args must be a list of strings"),
    (wire(args=["p", 1]), "request.args must be a list of strings"),
    (wire(env={"A": 1}), "request.env must be an object of strings"),
    (wire(env=[]), "request.env must be an object of strings"),
    (wire(inputs={"alias": "/dev/stdin"}), "request.inputs must be a list"),
    (wire(inputs=[{"alias": "/dev/stdin"}]), "input lacks payload"),
    (wire(inputs=[{"alias": "/x", "payload": 3}]), "input names payload 3, but the message carries 3"),
    (wire(inputs=[{"alias": "/x", "payload": 0, "fd": 0}]), "input has unknown field(s) 'payload'"),
    (wire(inputs=["/dev/stdin"]), "input must be a JSON object"),
    (wire(outputs=[{"alias": "/dev/stdout", "limit": "big"}]), "output.limit must be an integer"),
    (wire(images=[{"payload": -1}]), "image.payload must be at least 0"),
    (wire(program=...), "request lacks program"),
    (wire(program="python"), "program must be a JSON object"),
    (wire(program={"image": "python"}), "program lacks path"),
    (wire(program={"payload": 9}), "program names payload 9"),
    (wire(op="dance"), "unknown op 'dance'"),
    (wire(op=...), "unknown op None"),
    (wire(shell="rm -rf /"), "request has unknown field(s) 'shell'"),
])
def test_a_hostile_request_is_one_clear_protocol_error(header, reason):
    with pytest.raises(protocol.ProtocolError) as e:
        protocol.parse_request(header)
    assert reason in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("header", [
    {"status": "ok", "report": {"exit_code": "0"}},
    {"status": "ok", "report": {"exit_code": 0, "exit_state": "ok", "user_rc": 0, "validator": 0,
                                "etag": "disable", "elapsed": "soon", "cdr": ""}},
    {"status": "ok"},
    {"status": "done", "reason": "x"},
    {"status": "busy", "reason": 42},
    # digests: one 32-hex-digit MD5 (or "") per output, nothing else
    *({"status": "ok", "report": {"exit_code": 0, "exit_state": "ok", "user_rc": 0, "validator": 0,
                                  "etag": "disable", "elapsed": 0.1, "cdr": ""},
       "outputs": ["/dev/stdout"], "payloads": [1], "digests": digests}
      for digests in (["a" * 32, "b" * 32], ["A" * 32], ["a" * 31], ["g" * 32], "a" * 32, [None])),
])
def test_a_malformed_reply_is_a_protocol_error(header):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_reply(header)


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x02[]", b"\x00\x00\x00\x0e{\"payloads\":1}", b"\xff\xff\xff\xff"])
def test_decode_refuses_a_header_that_is_not_an_object_of_lengths(data):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(data)
