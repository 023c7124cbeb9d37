"""The manifest and NVRAM formats: the seed's saved files load, bad lines are
reported with their line numbers, and serialization round-trips."""

import pytest

from zerolab.sandbox import NVRAM, Channel, Manifest, ManifestError
from zerolab.sandbox.manifest import Mount, parse_int

# The manifest zvsh saved in the seed post ("IO Operations in ZeroVM"), after its sed edits.
SEED = """\
Node = 1
Version = 20130611
Timeout = 50
Memory = 4294967296,0
Program = /home/vagrant/boot.1
Channel = /dev/stdin,/dev/stdin,0,0,4294967296,4294967296,0,0
Channel = /dev/stdout,/dev/stdout,0,0,0,0,4294967296,4294967296
Channel = /dev/stderr,/dev/stderr,0,0,0,0,4294967296,4294967296
Channel = /home/vagrant/example.py,/dev/1.example.py,3,0,4294967296,4294967296,0,0
Channel = /home/vagrant/python.tar,/dev/2.python.tar,3,0,4294967296,4294967296,0,0
Channel = /home/vagrant/file.txt,/dev/3.file.txt,3,0,3,3,3,3
Channel = /home/vagrant/boot.1,/dev/self,3,0,4294967296,4294967296,0,0
Channel = /home/vagrant/nvram.1,/dev/nvram,3,0,4294967296,4294967296,4294967296,4294967296
"""


def test_seed_manifest_parses():
    m = Manifest.parse(SEED)
    assert (m.node, m.version, m.timeout, m.memory, m.etag) == (1, "20130611", 50, 4294967296, 0)
    assert m.program == "/home/vagrant/boot.1"
    assert len(m.channels) == 8
    c = m.channel("/dev/3.file.txt")
    assert (c.uri, c.type, c.etag, c.gets, c.get_size, c.puts, c.put_size) == (
        "/home/vagrant/file.txt", 3, 0, 3, 3, 3, 3)


def test_seed_manifest_round_trips_byte_for_byte():
    assert Manifest.parse(SEED).dumps() == SEED


def test_isolation_post_spacing_and_number_forms():
    # "Memory = 4294967296, 0" (with a space) is in the isolation post; ZeroVM
    # also took hex and C-style octal numbers.
    text = SEED.replace("Memory = 4294967296,0", "Memory = 0x100000000, 1").replace(
        "3,0,3,3,3,3", "3, 1, 0x10, 010, 7, 0")
    m = Manifest.parse(text)
    assert (m.memory, m.etag) == (4294967296, 1)
    c = m.channel("/dev/3.file.txt")
    assert (c.etag, c.gets, c.get_size, c.puts, c.put_size) == (1, 16, 8, 7, 0)
    assert parse_int("0") == 0 and parse_int("0x1F") == 31 and parse_int("017") == 15


def test_unknown_and_tolerated_keys_are_kept():
    text = SEED + "Job = /tmp/job.sock\nNameServer = udp:127.0.0.1:54321\nColour = blue\n# a comment\n\n"
    m = Manifest.parse(text)
    assert m.extra == {"Job": "/tmp/job.sock", "NameServer": "udp:127.0.0.1:54321", "Colour": "blue"}
    assert "Colour = blue" in m.dumps()


def replace_line(number, new):
    lines = SEED.splitlines()
    lines[number - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("line, text, expected", [
    (3, "Timeout = 50 # seconds", "Timeout must be an integer, got '50 # seconds'"),
    (3, "Timeout = fifty", "Timeout must be an integer"),
    (3, "Timeout = 0", "Timeout = 0 is out of range"),
    (2, "Version = 20140101", "unsupported Version '20140101'"),
    (4, "Memory = 4294967296", "Memory must be '<bytes>,<etag 0|1>'"),
    (4, "Memory = 4294967296,2", "invalid memory etag token '2'"),
    (4, "Memory = lots,0", "invalid memory size token 'lots'"),
    (4, "Memory = 8589934592,0", "out of range"),
    (5, "Program = ", "Program is empty"),
    (6, "Channel = /dev/stdin,/dev/stdin,0,0,1,1,0", "Channel needs 8 comma-separated fields"),
    (6, "Channel = /dev/stdin,/dev/stdin,4,0,1,1,0,0", "invalid channel access type 4"),
    (6, "Channel = /dev/stdin,/dev/stdin,0,2,1,1,0,0", "invalid channel etag 2"),
    (6, "Channel = /dev/stdin,/dev/stdin,0,0,-1,1,0,0", "negative channel limit gets"),
    (6, "Channel = /dev/stdin,/dev/stdin,0,0,x,1,0,0", "invalid channel gets token 'x'"),
    (6, "Channel = /dev/stdin,stdin,0,0,1,1,0,0", "must be an absolute path"),
    (6, "Channel = tcp:127.0.0.1:80,/dev/in,0,0,1,1,0,0", "network channels are not supported"),
    (7, "Channel = /dev/stdin,/dev/stdin,0,0,1,1,0,0", "duplicate channel alias /dev/stdin (first on line 6)"),
    (7, "Node = 2", "duplicate Node (first given on line 1)"),
])
def test_bad_line_is_reported_with_its_number(line, text, expected):
    with pytest.raises(ManifestError) as e:
        Manifest.parse(replace_line(line, text), source="manifest.1")
    message = str(e.value)
    assert message.startswith(f"manifest.1 line {line}: "), message
    assert expected in message
    assert "\n" not in message
    assert e.value.line == line


@pytest.mark.parametrize("key", ["Version", "Program", "Timeout", "Memory"])
def test_mandatory_keys(key):
    text = "\n".join(l for l in SEED.splitlines() if not l.startswith(key + " ")) + "\n"
    with pytest.raises(ManifestError, match=f"mandatory key {key} is missing"):
        Manifest.parse(text)


def test_node_is_optional():
    text = "\n".join(l for l in SEED.splitlines() if not l.startswith("Node")) + "\n"
    assert Manifest.parse(text).node is None


def test_manifest_built_in_code_validates_like_text():
    m = Manifest(program="/x.wasm", channels=[Channel(None, "/dev/stdout", 0, 0, 0, 0, 1, 1)])
    m.validate()
    assert "Channel = <memory>,/dev/stdout,0,0,0,0,1,1" in m.dumps()
    with pytest.raises(ManifestError, match="access type 7"):
        Manifest(program="/x.wasm", channels=[Channel("/a", "/dev/a", 7)]).validate()
    with pytest.raises(ManifestError, match="Timeout"):
        Manifest(program="/x.wasm", timeout=0).validate()


def test_load_reports_missing_file_in_one_line(tmp_path):
    with pytest.raises(ManifestError) as e:
        Manifest.load(str(tmp_path / "nope.1"))
    assert str(e.value) == f"{tmp_path / 'nope.1'}: cannot read: No such file or directory"


# ------------------------------------------------------------------ NVRAM
# What zvsh wrote for "zvsh --zvm-image python.tar --zvm-image file.txt python @example.py"
SEED_NVRAM = """\
[args]
args = python /dev/1.example.py
[env]
name=GREETING,value=Hello\\x2c\\x20World
[fstab]
channel=/dev/2.python.tar,mountpoint=/,access=ro,removable=no
[mapping]
channel=/dev/stdin,mode=char
channel=/dev/stdout,mode=file
"""


def test_nvram_parse_and_write():
    nv = NVRAM.parse(SEED_NVRAM)
    assert nv.args == ["python", "/dev/1.example.py"]
    assert nv.env == {"GREETING": "Hello, World"}
    assert nv.mounts == [Mount("/dev/2.python.tar", "/", "ro")]
    assert nv.mapping == {"/dev/stdin": "char", "/dev/stdout": "file"}
    assert nv.dumps() == SEED_NVRAM
    assert NVRAM.parse(nv.dumps()) == nv


def test_nvram_escapes_spaces_and_commas_in_args():
    nv = NVRAM(args=["python", "-c", 'print("a, b")'])
    assert "args = python -c print(\\x22a\\x2c\\x20b\\x22)" in nv.dumps()
    assert NVRAM.parse(nv.dumps()).args == nv.args


def test_nvram_bad_record_names_its_line():
    with pytest.raises(ManifestError, match=r"nvram line 4: \[fstab\] record lacks channel="):
        NVRAM.parse("[args]\nargs = x\n[fstab]\nmountpoint=/\n")
