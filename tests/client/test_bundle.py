"""zerolab-app bundle: a directory with boot/system.map -> a reproducible
gzipped tar that the proxy's own reader (zerolab.zerocloud.apps) accepts;
everything else refused with one line."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerolab.client import cli
from zerolab.zerocloud import apps, job

SYSTEM_MAP = [{"name": "hello", "exec": {"path": "file://python:python", "args": "/app.py"},
               "devices": [{"name": "python"}, {"name": "stdout"}]}]


def make_app_dir(root: Path, system_map: bytes | None = None) -> Path:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "system.map").write_bytes(system_map if system_map is not None
                                               else json.dumps(SYSTEM_MAP).encode())
    (root / "app.py").write_text('print("Hello from the sandbox")\n')
    (root / "lib").mkdir()
    (root / "lib" / "util.py").write_text("X = 1\n")
    tool = root / "lib" / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o700)
    return root


def bundle(*args: str) -> tuple[int, str, str]:
    return run_cli("bundle", *args)


def run_cli(*args: str) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def one_line_refusal(code: int, out: str, err: str) -> str:
    assert code == 1, (code, err)
    assert out == ""
    assert err.startswith("zerolab-app: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    return err


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()


# ------------------------------------------------------------------ what it makes
def test_the_same_directory_gives_the_same_bytes(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    first, second = tmp_path / "one.zapp", tmp_path / "two.zapp"
    assert bundle(str(src), "-o", str(first))[0] == 0
    # Other times, another umask's modes on the same content: still the same bytes.
    os.utime(src / "app.py", (1, 1))
    (src / "lib" / "util.py").chmod(0o600)
    assert bundle(str(src), "-o", str(second))[0] == 0
    assert first.read_bytes() == second.read_bytes()


def test_a_copy_elsewhere_gives_the_same_bytes_too(tmp_path):
    one = make_app_dir(tmp_path / "a" / "hello")
    two = make_app_dir(tmp_path / "b" / "hello")
    assert bundle(str(one), "-o", str(tmp_path / "one.zapp"))[0] == 0
    assert bundle(str(two), "-o", str(tmp_path / "two.zapp"))[0] == 0
    assert (tmp_path / "one.zapp").read_bytes() == (tmp_path / "two.zapp").read_bytes()


def test_members_are_sorted_with_no_times_owners_or_user_names(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    code, out, err = bundle(str(src), "-o", str(tmp_path / "hello.zapp"))
    assert (code, err) == (0, "")
    assert out == f"{tmp_path / 'hello.zapp'}: 6 members, {(tmp_path / 'hello.zapp').stat().st_size} bytes\n"
    got = members(tmp_path / "hello.zapp")
    assert [m.name for m in got] == ["boot", "boot/system.map", "app.py", "lib", "lib/tool.sh", "lib/util.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in got} == {(0, 0, 0, "", "")}
    assert {m.name: oct(m.mode) for m in got} == {
        "app.py": "0o644", "boot": "0o755", "boot/system.map": "0o644", "lib": "0o755",
        "lib/tool.sh": "0o755", "lib/util.py": "0o644"}
    raw = (tmp_path / "hello.zapp").read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"   # gzip mtime 0
    assert not raw[3] & 0x08   # no file name in the gzip header


def test_the_proxy_reads_the_system_map_back(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    bundle(str(src), "-o", str(tmp_path / "hello.zapp"))
    app = apps.read_app((tmp_path / "hello.zapp").read_bytes(), 1 << 20, 65536)
    assert json.loads(app.system_map) == SYSTEM_MAP
    with tarfile.open(fileobj=io.BytesIO(app.image)) as tar:
        assert tar.extractfile("app.py").read() == b'print("Hello from the sandbox")\n'
    nodes = job.parse(app.system_map, frozenset({"python"}), own_account="AUTH_test", app=app.image)
    assert [n.name for n in nodes] == ["hello"]


def test_the_default_output_is_the_directorys_name_here(tmp_path, monkeypatch):
    src = make_app_dir(tmp_path / "hello")
    monkeypatch.chdir(tmp_path)
    assert bundle(str(src))[0] == 0
    assert "boot/system.map" in [m.name for m in members(tmp_path / "hello.zapp")]


def test_bundling_dot_leaves_the_app_itself_out(tmp_path, monkeypatch):
    src = make_app_dir(tmp_path / "hello")
    monkeypatch.chdir(src)
    assert bundle(".")[0] == 0
    first = (src / "hello.zapp").read_bytes()
    assert bundle(".")[0] == 0   # again, with the first app in the directory
    assert (src / "hello.zapp").read_bytes() == first
    names = [m.name for m in members(src / "hello.zapp")]
    assert "hello.zapp" not in names and not [n for n in names if n.endswith(".part")]
    assert sorted(p.name for p in src.iterdir()) == ["app.py", "boot", "hello.zapp", "lib"]


def test_symlinks_inside_stay_links_that_resolve_from_the_apps_root(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    (src / "bin").mkdir()
    (src / "bin" / "relative").symlink_to("../app.py")
    (src / "bin" / "absolute").symlink_to(src / "lib" / "util.py")   # a host path inside the app
    (src / "libs").symlink_to("lib")                                 # a directory
    bundle(str(src), "-o", str(tmp_path / "hello.zapp"))
    links = {m.name: m.linkname for m in members(tmp_path / "hello.zapp") if m.issym()}
    assert links == {"bin/relative": "../app.py", "bin/absolute": "../lib/util.py", "libs": "lib"}


# ------------------------------------------------------------------ refusals
def test_a_directory_without_the_map_is_refused(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    (src / "boot" / "system.map").unlink()
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert err == f"zerolab-app: {str(src)!r} has no boot/system.map: put the app's JSON job description there\n"
    assert not (tmp_path / "x.zapp").exists()
    assert os.listdir(tmp_path) == ["hello"]   # no partial file left either


def test_no_boot_directory_at_all_is_the_same_refusal(tmp_path):
    (tmp_path / "empty").mkdir()
    err = one_line_refusal(*bundle(str(tmp_path / "empty"), "-o", str(tmp_path / "x.zapp")))
    assert "has no boot/system.map" in err


@pytest.mark.parametrize("body, reason", [
    (b"[", "boot/system.map: job description is not valid JSON: Expecting value at line 1 column 2"),
    (b"[]", "boot/system.map: job description must be a non-empty JSON list of nodes"),
    (b'"a string"', "boot/system.map: job description must be a non-empty JSON list of nodes"),
    (b"\xff\xfe", "boot/system.map: job description is not UTF-8 text"),
    (b'[{"name": "x", "exec": {"path": "file://perl:perl"}, "devices": [{"name": "stdout"}]}]', None),
])
def test_a_map_the_proxy_would_refuse_is_refused_with_its_reason(tmp_path, body, reason):
    src = make_app_dir(tmp_path / "hello", body)
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert reason is None or err == f"zerolab-app: {reason}\n"
    assert not (tmp_path / "x.zapp").exists()


def test_a_map_reading_the_posts_body_as_stdin_is_bundled_with_a_note(tmp_path):
    body = json.dumps([{"name": "count", "exec": {"path": "file://python:python", "args": "/count.py"},
                        "devices": [{"name": "python"}, {"name": "stdin"}, {"name": "stdout"}]}]).encode()
    src = make_app_dir(tmp_path / "hello", body)
    code, out, err = bundle(str(src), "-o", str(tmp_path / "x.zapp"))
    assert code == 0 and out.startswith(f"{tmp_path / 'x.zapp'}: ")
    assert err == ("zerolab-app: note: boot/system.map reads the POST's body as stdin: deploy the app and run it "
                   "with execute swift://ACCOUNT/CONTAINER/OBJECT --stdin FILE\n")


def test_another_system_image_is_accepted_when_named(tmp_path):
    body = b'[{"name": "x", "exec": {"path": "file://perl:perl"}, "devices": [{"name": "stdout"}]}]'
    src = make_app_dir(tmp_path / "hello", body)
    assert "unknown system image 'perl'" in one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert bundle(str(src), "-o", str(tmp_path / "x.zapp"), "--sysimage", "perl")[0] == 0


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.txt", "../../hello/../outside.txt"])
def test_a_symlink_pointing_outside_is_refused(tmp_path, target):
    src = make_app_dir(tmp_path / "hello")
    (tmp_path / "outside.txt").write_text("secret\n")
    (src / "lib" / "escape").symlink_to(target)
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert err.startswith("zerolab-app: the symlink 'lib/escape' points outside the directory (to ")
    assert not (tmp_path / "x.zapp").exists()


def test_a_chain_of_links_that_ends_outside_is_refused(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    (src / "out").symlink_to("/etc")
    (src / "via").symlink_to("out/passwd")
    assert "points outside the directory" in one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))


@pytest.mark.parametrize("target", ["missing.txt", "loop"])
def test_a_dangling_or_looping_symlink_is_refused(tmp_path, target):
    src = make_app_dir(tmp_path / "hello")
    (src / "loop").symlink_to(target) if target == "loop" else (src / "dangling").symlink_to(target)
    assert "points to nothing (or into a loop)" in one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))


def test_a_map_that_is_a_symlink_is_refused(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    (src / "real.map").write_text(json.dumps(SYSTEM_MAP))
    (src / "boot" / "system.map").unlink()
    (src / "boot" / "system.map").symlink_to("../real.map")
    assert "is a symlink; it must be a regular file" in one_line_refusal(
        *bundle(str(src), "-o", str(tmp_path / "x.zapp")))


def test_a_fifo_is_refused_without_waiting_on_it(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    os.mkfifo(src / "pipe")
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert err == "zerolab-app: 'pipe' is not a regular file, directory or symlink (a device, FIFO or socket " \
                  "cannot go in an app)\n"


def test_an_unreadable_directory_is_refused(tmp_path, monkeypatch):
    src = make_app_dir(tmp_path / "hello")
    scandir = os.scandir

    def refusing(path):   # what a directory without read permission gives (root reads them all)
        if str(path).endswith("/lib"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert err == "zerolab-app: cannot list 'lib': Permission denied\n"
    assert not (tmp_path / "x.zapp").exists()


def test_an_unreadable_file_is_refused(tmp_path, monkeypatch):
    src = make_app_dir(tmp_path / "hello")
    real_open = os.open

    def refusing(path, flags, *args):
        if str(path).endswith("util.py"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))
    assert err == f"zerolab-app: cannot open the file {str(src / 'lib' / 'util.py')!r}: Permission denied\n"
    assert sorted(os.listdir(tmp_path)) == ["hello"]


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    (Path(os.fsencode(src).decode("utf-8")) / os.fsdecode(b"bad\xffname")).write_text("x")
    assert "is not UTF-8" in one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "x.zapp")))


@pytest.mark.parametrize("make", ["missing", "file"])
def test_dir_must_be_a_directory(tmp_path, make):
    path = tmp_path / "thing"
    if make == "file":
        path.write_text("x")
    err = one_line_refusal(*bundle(str(path), "-o", str(tmp_path / "x.zapp")))
    assert err in (f"zerolab-app: cannot open the directory {str(path)!r}: No such file or directory\n",
                   f"zerolab-app: {str(path)!r} is not a directory (bundle makes an app of a directory)\n")


def test_an_output_in_a_missing_directory_is_refused(tmp_path):
    src = make_app_dir(tmp_path / "hello")
    err = one_line_refusal(*bundle(str(src), "-o", str(tmp_path / "no" / "x.zapp")))
    assert err == f"zerolab-app: cannot write in {str(tmp_path / 'no')!r}: No such file or directory\n"


def test_no_directory_named_is_a_usage_error(capsys):
    code = cli.main(["bundle"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == "zerolab-app: the following arguments are required: DIR (see zerolab-app bundle --help)\n"


# ------------------------------------------------------------------ hostile maps
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=2048),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                     st.sampled_from(["name", "exec", "path", "devices", "args", "count", "connect", "env",
                                      "x"]), inner, max_size=4), max_leaves=20).map(
        lambda doc: json.dumps(doc).encode())))
def test_any_bytes_as_the_map_are_bundled_or_refused_in_one_line(body):
    with tempfile.TemporaryDirectory() as tmp:
        src = make_app_dir(Path(tmp) / "hello", body)
        out = Path(tmp) / "x.zapp"
        code, stdout, err = bundle(str(src), "-o", str(out))
        if code == 0:
            assert err == "" or (err.startswith("zerolab-app: note: ") and err.count("\n") == 1), err
            assert out.exists()
            assert apps.read_app(gzip.decompress(out.read_bytes()), 1 << 22, 1 << 20).system_map == body
        else:
            one_line_refusal(code, stdout, err)
            assert not out.exists()
