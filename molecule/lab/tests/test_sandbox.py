"""The seed posts ("ZeroVM - Getting Started / IO Operations / Isolation"),
replayed on a sandbox node as their reader would type them, in Python 3."""

import shlex

import pytest

USER = "zerolab"
HOME = f"/home/{USER}"
GUESTS = "/opt/zerolab/guests"

# zvsh/zerovm exit codes (docs/sandbox.md)
OK, GUEST_EXIT, QUOTA, TIMEOUT, MEMORY, BAD_MANIFEST, BAD_INPUT, INVALID_PROGRAM = 0, 1, 8, 6, 7, 3, 4, 5


def as_user(host, command):
    """Run a shell command as the admin user, in its home, like the posts do."""
    return host.run(f"su - {USER} -c {shlex.quote(command)}")


def test_zvsh_and_zerovm_are_on_the_path(host):
    for command in ("zvsh", "zerovm"):
        assert host.exists(command), command
        assert host.run(f"{command} --help").rc == 0


def test_python_hello(host):
    as_user(host, "ln -sf /opt/zerolab/images/python.tar python.tar && echo 'print(\"Hello\")' > hello.py")
    result = as_user(host, "zvsh --zvm-image python.tar python @hello.py")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "Hello"


@pytest.fixture(scope="module")
def file_txt(host):
    as_user(host, f"dd if=/dev/urandom of={HOME}/file.txt bs=1048576 count=100 status=none")
    as_user(host, "printf \"file = open('/dev/3.file.txt', 'rb')\\nprint(file.read(5))\\n\" > example.py")
    as_user(host, "ln -sf /opt/zerolab/images/python.tar python.tar")
    first_five = host.run(f"head -c 5 {HOME}/file.txt | python3 -c 'import sys; print(sys.stdin.buffer.read())'").stdout.strip()
    return first_five


def test_example_py_prints_the_first_five_bytes(host, file_txt):
    result = as_user(host, "zvsh --zvm-save-dir ~/ --zvm-image python.tar --zvm-image ~/file.txt python @example.py")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == file_txt
    manifest = host.file(f"{HOME}/manifest.1").content_string
    assert f"Channel = {HOME}/file.txt,/dev/3.file.txt,3,0,4294967296,4294967296,0,0" in manifest
    assert host.file(f"{HOME}/nvram.1").contains(r"\[args\]")


def test_the_quota_example_fails_as_designed(host, file_txt):
    as_user(host, "zvsh --zvm-save-dir ~/ --zvm-image python.tar --zvm-image ~/file.txt python @example.py")
    host.run(f'sed -i "s|Channel = {HOME}/file.txt,/dev/3.file.txt,3,0,4294967296,4294967296,0,0|'
             f'Channel = {HOME}/file.txt,/dev/3.file.txt,3,0,3,3,3,3|g" {HOME}/manifest.1')
    host.run(f'sed -i "s|{HOME}/stdout.1|/dev/stdout|g" {HOME}/manifest.1')
    host.run(f'sed -i "s|{HOME}/stderr.1|/dev/stderr|g" {HOME}/manifest.1')
    assert host.file(f"{HOME}/manifest.1").contains("/dev/3.file.txt,3,0,3,3,3,3")
    result = as_user(host, "zerovm -t 2 manifest.1")
    output = result.stdout + result.stderr
    assert result.rc != OK
    assert "Traceback (most recent call last)" in output  # the guest's own Python traceback, as in the post
    assert "OSError" in output or "IOError" in output
    assert "quota" in output.lower()


@pytest.mark.parametrize("mode", ["open", "fd", "create"])
def test_the_misbehaving_guest_cannot_reach_the_host(host, mode):
    result = host.run(f"zvsh {GUESTS}/misbehave.wasm {mode}")
    assert "ESCAPED" not in result.stdout
    assert "contained:" in result.stdout
    assert result.rc == OK


def test_an_endless_loop_is_stopped_by_the_timeout(host):
    result = host.run(f"zvsh --zvm-getrc --zvm-timeout 2 {GUESTS}/misbehave.wasm loop")
    assert result.rc == TIMEOUT, result.stderr


def test_allocating_past_the_memory_cap_is_refused(host):
    result = host.run(f"zvsh --zvm-getrc --zvm-memory 33554432 {GUESTS}/misbehave.wasm alloc")
    assert result.rc in (MEMORY, GUEST_EXIT), result.stderr
    assert "ESCAPED" not in result.stdout


def test_c_wordcount_guest_counts_stdin(host):
    result = host.run(f"printf 'a b a\\n' | zvsh {GUESTS}/wordcount.wasm")
    assert result.rc == 0, result.stderr
    assert "a 2" in result.stdout and "b 1" in result.stdout


def test_bad_input_gets_one_line_and_its_exit_code(host):
    missing = host.run("zvsh /nonexistent.wasm")
    assert missing.rc in (BAD_INPUT, INVALID_PROGRAM)
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    host.run("printf 'Version = 20130611\\nProgram = /opt/zerolab/guests/hello.wasm\\nTimeout = 5\\n"
             "Memory = 33554432,0\\nChannel = /dev/stdin,/dev/stdin,9\\n' > /tmp/bad.manifest")
    bad = host.run("zerovm /tmp/bad.manifest")
    assert bad.rc == BAD_MANIFEST
    assert "line 5" in bad.stderr and "Traceback" not in bad.stderr
