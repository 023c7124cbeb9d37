"""Channel quotas, ZeroVM style: counts and sizes of reads and writes, per
channel; the first limit hit wins; the guest's call fails with EDQUOT; what was
read or written before stays; the report names the limit (exit code 8)."""

import pytest

from zerolab.sandbox import GUEST_EXIT, OK, Channel

from .conftest import G, job

DATA = bytes(range(256)) * 4  # 1024 bytes


def cat(guests, block, **limits):
    return job(guests / "cat.wasm", ["cat", "-b", str(block)], **limits)


def test_no_limit_hit_copies_everything(executor, guests):
    r = executor.run(cat(guests, 100), stdin=DATA)
    assert (r.exit_code, r.exit_state, r.stdout) == (OK, "ok", DATA)
    stdin = r.channels[0]
    # 11 reads of up to 100 bytes (the 11th returns the last 24), plus one that sees EOF
    assert (stdin.reads, stdin.read_bytes) == (12, 1024)
    assert r.accounting == {"reads": 12, "read_bytes": 1024, "writes": 11, "write_bytes": 1024}


def test_gets_count_limit(executor, guests):
    r = executor.run(cat(guests, 100, stdin_limits=(3, G)), stdin=DATA)
    # ZeroVM's rule: the read got EDQUOT, the guest went on (it said so on
    # stderr) and its own exit code is the session's.
    assert r.exit_code == GUEST_EXIT
    assert r.exit_state == "quota: /dev/stdin gets limit 3 reached"
    assert r.quota_hit == "/dev/stdin gets limit 3 reached"
    assert r.stdout == DATA[:300]                 # the three reads that were allowed are kept
    assert b"cat: read /dev/stdin: Quota exceeded" in r.stderr   # the guest saw EDQUOT
    assert r.user_rc == 1


def test_get_size_limit_cuts_the_read_then_fails(executor, guests):
    r = executor.run(cat(guests, 100, stdin_limits=(G, 250)), stdin=DATA)
    assert r.exit_state == "quota: /dev/stdin get_size limit 250 reached"
    assert r.stdout == DATA[:250]                 # 100 + 100 + 50 (the last read was cut)
    assert (r.channels[0].reads, r.channels[0].read_bytes) == (3, 250)


def test_puts_count_limit(executor, guests):
    r = executor.run(cat(guests, 100, stdout_limits=(4, G)), stdin=DATA)
    assert r.exit_state == "quota: /dev/stdout puts limit 4 reached"
    assert r.stdout == DATA[:400]
    assert b"write /dev/stdout: Quota exceeded" in r.stderr


def test_put_size_limit_keeps_the_bytes_written(executor, guests):
    r = executor.run(cat(guests, 100, stdout_limits=(G, 333)), stdin=DATA)
    assert r.exit_state == "quota: /dev/stdout put_size limit 333 reached"
    assert r.stdout == DATA[:333]
    assert r.channels[1].write_bytes == 333


@pytest.mark.parametrize("gets, get_size, first", [
    (2, 1000, "gets limit 2"),        # the count runs out first
    (100, 150, "get_size limit 150"),  # the size runs out first
])
def test_first_limit_hit_wins(executor, guests, gets, get_size, first):
    r = executor.run(cat(guests, 100, stdin_limits=(gets, get_size)), stdin=DATA)
    assert r.exit_state == f"quota: /dev/stdin {first} reached"


def test_reading_to_eof_needs_budget(executor, guests):
    # ZeroVM's rule (api.txt): a 1024-byte limit on a 1024-byte channel leaves
    # nothing to read the end of file with, so the guest gets EDQUOT, not EOF.
    r = executor.run(cat(guests, 1024, stdin_limits=(G, 1024)), stdin=DATA)
    assert r.stdout == DATA
    assert r.exit_state == "quota: /dev/stdin get_size limit 1024 reached"
    r = executor.run(cat(guests, 1024, stdin_limits=(G, 1025)), stdin=DATA)
    assert (r.exit_code, r.stdout) == (OK, DATA)


def test_quota_on_a_file_channel(executor, guests, tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(DATA)
    extra = [Channel(str(data), "/dev/3.data.bin", 3, 0, 5, 10, 0, 0)]
    r = executor.run(job(guests / "cat.wasm", ["cat", "-b", "4", "/dev/3.data.bin"], extra), stdin=b"")
    assert r.exit_state == "quota: /dev/3.data.bin get_size limit 10 reached"
    assert r.stdout == DATA[:10]
    assert data.read_bytes() == DATA   # the input file is untouched


def test_report_text_names_the_quota(executor, guests):
    r = executor.run(cat(guests, 100, stdin_limits=(3, G)), stdin=DATA)
    lines = r.as_text().splitlines()
    assert lines[0] == "0" and lines[2] == "1"       # validator ok, user rc 1
    # reads, bytes read, writes, bytes written: 3 stdout writes + the error message on stderr
    assert lines[4].split()[2:6] == ["3", "300", "4", str(300 + len(r.stderr))]
    assert lines[5] == "quota: /dev/stdin gets limit 3 reached"


def test_etag_of_channel_data(executor, guests):
    import hashlib
    m = cat(guests, 100)
    m.channels[1].etag = 1
    r = executor.run(m, stdin=DATA)
    assert r.etag == f"/dev/stdout {hashlib.md5(DATA).hexdigest()}"
    assert r.as_text().splitlines()[3] == r.etag
    assert executor.run(cat(guests, 100), stdin=DATA).etag == "disable"
