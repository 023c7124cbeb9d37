"""zvsh and zerovm as commands: the seed posts replayed, and bad input giving
one line on stderr plus a documented exit code, never a traceback."""

import os
import subprocess

import pytest

from .conftest import GUESTS


def run(cmd, env, cwd=None, stdin=b""):
    return subprocess.run(cmd, env=env, cwd=cwd, input=stdin, capture_output=True, timeout=120)


def test_zvsh_c_hello(cli_env, guests):
    p = run(["zvsh", str(guests / "hello.wasm")], cli_env)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"Hello, World!\n", b"")


def test_zvsh_stdin_and_exit_code(cli_env, guests):
    p = run(["zvsh", str(guests / "wordcount.wasm")], cli_env, stdin=b"b a b")
    assert (p.returncode, p.stdout) == (0, b"a 1\nb 2\n")
    p = run(["zvsh", str(guests / "misbehave.wasm"), "exit", "7"], cli_env)
    assert p.returncode == 7                     # the program's own code...
    p = run(["zvsh", "--zvm-getrc", str(guests / "misbehave.wasm"), "exit", "7"], cli_env)
    assert p.returncode == 1                     # ...or, asked for, the sandbox's (guest exit)


def test_zvsh_session_failures(cli_env, guests):
    p = run(["zvsh", "--zvm-timeout", "1", str(guests / "misbehave.wasm"), "loop"], cli_env)
    assert p.returncode == 6
    assert p.stderr == b"zvsh: timeout: the job ran longer than Timeout = 1 s\n"
    p = run(["zvsh", "--zvm-memory", str(32 << 20), str(guests / "misbehave.wasm"), "alloc"], cli_env)
    assert p.returncode == 7
    assert p.stderr.startswith(b"zvsh: memory: ")


def test_seed_python_hello(cli_env, python_image, tmp_path):
    # "ZeroVM - Getting Started, Again": echo 'print "Hello"' > hello.py (Python 3 here)
    (tmp_path / "python.tar").symlink_to(python_image)
    (tmp_path / "hello.py").write_text('print("Hello")\n')
    p = run(["zvsh", "--zvm-image", "python.tar", "python", "@hello.py"], cli_env, cwd=tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"Hello\n", b"")
    p = run(["zvsh", "--zvm-image", "python.tar", "python", "-c", 'print("Hello")'], cli_env, cwd=tmp_path)
    assert (p.returncode, p.stdout) == (0, b"Hello\n")


def test_seed_channel_quota_example(cli_env, python_image, tmp_path):
    """ "IO Operations in ZeroVM", step by step, in a stand-in for /home/vagrant."""
    home = str(tmp_path)
    (tmp_path / "python.tar").symlink_to(python_image)
    data = os.urandom(100 * 1048576)                 # dd if=/dev/urandom ... count=100
    (tmp_path / "file.txt").write_bytes(data)
    (tmp_path / "example.py").write_text("file = open('/dev/3.file.txt', 'rb')\nprint(file.read(5))\n")

    p = run(["zvsh", "--zvm-save-dir", home, "--zvm-image", "python.tar", "--zvm-image",
             f"{home}/file.txt", "python", "@example.py"], cli_env, cwd=home)
    assert (p.returncode, p.stdout) == (0, repr(data[:5]).encode() + b"\n"), p.stderr
    manifest = (tmp_path / "manifest.1").read_text()
    assert manifest.splitlines()[:5] == ["Node = 1", "Version = 20130611", "Timeout = 50",
                                         "Memory = 4294967296,0", f"Program = {home}/boot.1"]
    # The post's zvsh mapped example.py read-only; zvsh later (and zerolab's)
    # maps an @file its user may write read-write, as here.
    for line in [f"Channel = {home}/example.py,/dev/1.example.py,3,0,4294967296,4294967296,4294967296,4294967296",
                 f"Channel = {home}/python.tar,/dev/2.python.tar,3,0,4294967296,4294967296,0,0",
                 f"Channel = {home}/file.txt,/dev/3.file.txt,3,0,4294967296,4294967296,0,0",
                 f"Channel = {home}/stdout.1,/dev/stdout,0,0,0,0,4294967296,4294967296",
                 f"Channel = {home}/nvram.1,/dev/nvram,3,0,4294967296,4294967296,4294967296,4294967296"]:
        assert line in manifest.splitlines()
    assert (tmp_path / "boot.1").read_bytes()[:4] == b"\0asm"
    assert "args = python /dev/1.example.py" in (tmp_path / "nvram.1").read_text()

    # the post's three sed edits, as written (with /home/vagrant -> our home)
    for expr in [f"s|Channel = {home}/file.txt,/dev/3.file.txt,3,0,4294967296,4294967296,0,0"
                 f"|Channel = {home}/file.txt,/dev/3.file.txt,3,0,3,3,3,3|g",
                 f"s|{home}/stdout.1|/dev/stdout|g", f"s|{home}/stderr.1|/dev/stderr|g"]:
        subprocess.run(["sed", "-i", expr, f"{home}/manifest.1"], check=True)
    p = run(["zerovm", "-t", "2", "manifest.1"], cli_env, cwd=home)
    # The guest's read got EDQUOT and Python ended with its traceback: its exit
    # code (1) is the session's, as under ZeroVM.
    assert p.returncode == 1
    err = p.stderr.decode()
    assert 'File "/dev/1.example.py", line 2, in <module>' in err
    assert "OSError: [Errno 19] Quota exceeded" in err
    assert err.endswith("zerovm: quota: /dev/3.file.txt get_size limit 3 reached\n")
    report = p.stdout.decode().splitlines()
    assert report[2] == "1" and report[-1] == "quota: /dev/3.file.txt get_size limit 3 reached"
    assert (tmp_path / "file.txt").read_bytes() == data


def test_zvsh_output_file_argument(cli_env, guests, tmp_path):
    # an @file that does not exist yet is created as a writable channel
    p = run(["zvsh", str(guests / "cat.wasm"), "-b", "3", "@out.txt"], cli_env, cwd=tmp_path)
    assert p.returncode == 0 and (tmp_path / "out.txt").exists()


def one_line(p):
    text = p.stderr.decode()
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text


@pytest.fixture
def bad(tmp_path):
    (tmp_path / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "adir").mkdir()
    good = (f"Version = 20130611\nTimeout = 5\nMemory = 67108864,0\nProgram = {GUESTS}/hello.wasm\n"
            "Channel = /dev/stdin,/dev/stdin,0,0,10,10,0,0\n")
    (tmp_path / "good.1").write_text(good)
    (tmp_path / "malformed.1").write_text(good.replace("Timeout = 5", "Timeout = soon"))
    (tmp_path / "nochannel.1").write_text(good + f"Channel = {tmp_path}/missing.txt,/dev/1.m,3,0,1,1,0,0\n")
    (tmp_path / "badnvram.1").write_text(good + f"Channel = {tmp_path}/nv,/dev/nvram,3,0,9,9,0,0\n")
    (tmp_path / "nv").write_text("[fstab]\nmountpoint=/\n")
    return tmp_path


@pytest.mark.parametrize("cmd, code, message", [
    (["zerovm", "malformed.1"], 3, "zerovm: malformed.1 line 2: Timeout must be an integer, got 'soon'"),
    (["zerovm", "absent.1"], 3, "zerovm: absent.1: cannot read: No such file or directory"),
    (["zerovm", "nochannel.1"], 4,
     "zerovm: bad input: channel /dev/1.m: cannot open {d}/missing.txt: No such file or directory"),
    (["zerovm", "badnvram.1"], 4, "zerovm: bad input: {d}/nv line 2: [fstab] record lacks channel="),
    (["zvsh", "nothere"], 5, "zvsh: program nothere not found (not a file)"),
    (["zvsh", "script.sh"], 5, "zvsh: invalid program: program {d}/script.sh is not a WebAssembly module"),
    (["zvsh", "--zvm-image", "missing.tar", "python"], 4, "zvsh: --zvm-image missing.tar: no such readable file"),
    (["zvsh", "--zvm-image", "script.sh,/x,rx", "python"], 4,
     "zvsh: --zvm-image script.sh,/x,rx: access must be ro or rw, not 'rx'"),
    (["zvsh", "{hello}", "@adir"], 4, "zvsh: @adir: not a readable file"),
    (["zvsh", "--zvm-bogus", "x"], 2, "zvsh: unrecognized arguments: --zvm-bogus (see zvsh --help)"),
    (["zvsh"], 2, "zvsh: the following arguments are required: command, cmd_args (see zvsh --help)"),
])
def test_bad_input_is_one_line_and_a_documented_code(cli_env, bad, guests, cmd, code, message):
    cmd = [c.format(hello=guests / "hello.wasm") for c in cmd]
    p = run(cmd, cli_env, cwd=bad)
    assert p.returncode == code, p.stderr
    assert one_line(p) == message.format(d=bad) + "\n"


def test_zerovm_runs_a_good_manifest(cli_env, bad):
    p = run(["zerovm", "-t", "2", "-PQ", "good.1"], cli_env, cwd=bad)
    assert p.returncode == 0 and p.stderr == b""
    # no stdout channel declared: the guest's output is lost, only the report shows
    assert p.stdout.decode().splitlines()[-1] == "ok"
    p = run(["zerovm", "-F", "good.1"], cli_env, cwd=bad)
    assert p.returncode == 0
