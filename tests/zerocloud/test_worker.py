"""The worker's own bookkeeping (its jobs are run end to end in test_executord.py)."""

import hashlib
from pathlib import Path

from zerolab.zerocloud import worker


def test_a_payload_is_stored_by_its_digest_also_when_it_repeats(tmp_path):
    runner = worker.JobRunner({}, str(tmp_path))
    a, b = b"\0asm" + b"a" * 100, b"\0asm" + b"b" * 100   # same length, other bytes
    first = runner.stored(a, "programs")
    assert runner.stored(b, "programs") != first          # not taken for the last one
    assert runner.stored(bytes(bytearray(a)), "programs") == first   # equal bytes, another object
    assert Path(first).read_bytes() == a
    assert runner.stored(a, "images") != first            # each kind on its own


def test_the_output_device_is_written_and_read_at_any_offset_as_in_zerocloud(tmp_path):
    # ZeroCloud's "output" device was a random-access channel (type 3).
    import subprocess

    from zerolab.zerocloud import protocol
    root = Path(__file__).resolve().parents[2]
    subprocess.run([str(root / "scripts" / "build-python-image")], check=True, stdout=subprocess.DEVNULL)
    runner = worker.JobRunner({"python": str(root / "build" / "images" / "python.tar")}, str(tmp_path))
    code = ("f = open('/dev/output', 'r+b'); f.seek(6); f.write(b'world'); f.seek(0); f.write(b'hello ');"
            "f.seek(0); print(f.read())")
    request = protocol.RunRequest(protocol.ProgramSource(image="python", path="python"), args=("p", "-c", code),
                                  outputs=(protocol.OutputChannel("/dev/output", 100),
                                           protocol.OutputChannel("/dev/stdout", 100)), timeout=30)
    reply, data = runner.run(request, [], [])
    assert reply.report.exit_code == 0, reply
    assert dict(zip(reply.outputs, data)) == {"/dev/output": b"hello world", "/dev/stdout": b"b'hello world'\n"}
    # Each output's MD5, for the proxy's Etag: the random-access one's is of
    # its bytes, not of the writes (which came in another order).
    assert reply.digests == tuple(hashlib.md5(d).hexdigest() for d in data)


def test_a_char_channel_is_a_character_device_to_the_guest(tmp_path):
    # ZeroCloud's device mode (char, pipe): what the guest's fstat says.
    import subprocess

    from zerolab.zerocloud import protocol
    root = Path(__file__).resolve().parents[2]
    subprocess.run([str(root / "scripts" / "build-python-image")], check=True, stdout=subprocess.DEVNULL)
    runner = worker.JobRunner({"python": str(root / "build" / "images" / "python.tar")}, str(tmp_path))
    code = "import os, stat; print(stat.S_ISCHR(os.fstat(0).st_mode), stat.S_ISCHR(os.fstat(1).st_mode))"
    base = protocol.RunRequest(protocol.ProgramSource(image="python", path="python"), args=("p", "-c", code),
                               inputs=(protocol.InputChannel("/dev/stdin", payload=0),),
                               outputs=(protocol.OutputChannel("/dev/stdout", 100),), timeout=30)
    for char, expected in (((), b"False False\n"), (("/dev/stdin",), b"True False\n")):
        from dataclasses import replace
        reply, data = runner.run(replace(base, char=char), [b"in"], [])
        assert reply.report.exit_code == 0, reply
        assert data == [expected]
