"""The worker's own bookkeeping (its jobs are run end to end in test_executord.py)."""

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
