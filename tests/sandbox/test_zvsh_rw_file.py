"""A writable @file is a read-write channel, as zerovm-cli's zvsh made it: zvsh
mapped every @file as a random-access channel (type 3), read-write when
os.access(W_OK) allowed this user to write the file (after creating an absent
one), read-only (writes 0,0) otherwise.  The channel quotas stay the sandbox's:
the limits apply to the guest's reads and writes of the file, and a write to a
read-only one is refused with a quota error."""

import os
import subprocess

import pytest

G = 4294967296


def run(cmd, env, cwd):
    return subprocess.run(cmd, env=env, cwd=cwd, input=b"", capture_output=True, timeout=300)


@pytest.fixture
def env(cli_env, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return dict(cli_env, HOME=str(home))   # no ~/.zvsh.cfg but ours


@pytest.fixture
def python(tmp_path, python_image):
    (tmp_path / "python.tar").symlink_to(python_image)
    return ["zvsh", "--zvm-image", "python.tar", "python", "-c"]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"hello world\n")
    return path


@pytest.fixture
def read_only(data):
    """data.txt made unwritable for this user: mode 0444, or, for root (whom the
    mode does not stop), the immutable attribute."""
    data.chmod(0o444)
    immutable = False
    if os.access(data, os.W_OK):
        immutable = subprocess.run(["chattr", "+i", str(data)], capture_output=True).returncode == 0
        if not immutable or os.access(data, os.W_OK):
            pytest.skip("cannot make a file this user may not write (root, and chattr +i refused)")
    yield data
    if immutable:
        subprocess.run(["chattr", "-i", str(data)], check=True)


def channel_line(manifest_path, alias):
    return next(line for line in manifest_path.read_text().splitlines() if f",{alias}," in line)


def test_zvsh_writable_file_is_a_read_write_channel(env, guests, tmp_path, data):
    p = run(["zvsh", "--zvm-save-dir", "saved", str(guests / "cat.wasm"), "@data.txt"], env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"hello world\n"), p.stderr
    assert channel_line(tmp_path / "saved" / "manifest.1", "/dev/1.data.txt") == (
        f"Channel = {data},/dev/1.data.txt,3,0,{G},{G},{G},{G}")
    assert data.read_bytes() == b"hello world\n"       # mapping it changes nothing by itself
    # the zvsh.cfg limits are that channel's quotas, as zvsh wrote them
    (tmp_path / "zvsh.cfg").write_text("[limits]\nreads = 10\nrbytes = 20\nwrites = 30\nwbytes = 40\n")
    p = run(["zvsh", "--zvm-save-dir", "saved", str(guests / "cat.wasm"), "@data.txt"], env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"hello world\n"), p.stderr
    assert channel_line(tmp_path / "saved" / "manifest.1", "/dev/1.data.txt") == (
        f"Channel = {data},/dev/1.data.txt,3,0,10,20,30,40")


def test_zvsh_unwritable_file_stays_read_only(env, guests, tmp_path, read_only):
    p = run(["zvsh", "--zvm-save-dir", "saved", str(guests / "cat.wasm"), "@data.txt"], env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"hello world\n"), p.stderr
    assert channel_line(tmp_path / "saved" / "manifest.1", "/dev/1.data.txt") == (
        f"Channel = {read_only},/dev/1.data.txt,3,0,{G},{G},0,0")


UPDATE = ("import sys\n"
          "f = open(sys.argv[1], 'r+b')\n"
          "old = f.read()\n"
          "f.seek(0)\n"
          "f.write(old.upper())\n"
          "f.close()\n"
          "print(old.decode().strip())\n")


def test_zvsh_guest_reads_and_updates_a_writable_file(env, python, tmp_path, data):
    p = run(python + [UPDATE, "@data.txt"], env, tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"hello world\n", b"")
    assert data.read_bytes() == b"HELLO WORLD\n"
    # a shorter write leaves the rest: channels are not truncated (O_TRUNC is ignored, as in ZeroVM)
    p = run(python + ["open(__import__('sys').argv[1], 'wb').write(b'j')", "@data.txt"], env, tmp_path)
    assert p.returncode == 0, p.stderr
    assert data.read_bytes() == b"jELLO WORLD\n"


def test_zvsh_guest_writes_a_new_file(env, python, tmp_path):
    p = run(python + ["open(__import__('sys').argv[1], 'wb').write(b'made inside')", "@new.txt"], env, tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "new.txt").read_bytes() == b"made inside"


def test_zvsh_guest_cannot_write_a_read_only_file(env, python, tmp_path, read_only):
    p = run(python + [UPDATE, "@data.txt"], env, tmp_path)
    assert p.returncode == 1   # the guest's write got EDQUOT; Python's traceback and exit code are its own
    assert "OSError: [Errno 19] Quota exceeded" in p.stderr.decode()
    assert p.stderr.decode().endswith("zvsh: quota: /dev/1.data.txt puts limit 0 reached\n")
    assert read_only.read_bytes() == b"hello world\n"


def test_zvsh_write_quota_on_a_writable_file(env, python, tmp_path, data):
    # zvsh.cfg [limits] wbytes: the guest's writes stop after 5 bytes, the file keeps the rest
    (tmp_path / "zvsh.cfg").write_text("[limits]\nwbytes = 5\n")
    p = run(python + [UPDATE, "@data.txt"], env, tmp_path)
    # The limit is every channel's, stderr's too: Python's traceback is cut at
    # 5 bytes and it ends with 120, its code for output it could not flush.
    assert p.returncode == 120
    assert p.stderr.decode() == "Tracezvsh: quota: /dev/1.data.txt put_size limit 5 reached\n"
    assert data.read_bytes() == b"HELLO world\n"
