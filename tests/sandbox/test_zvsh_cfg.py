"""zvsh.cfg: zerovm-cli's zvsh read [manifest], [env], [limits], [fstab] (and
carried [zvapp]) from ./zvsh.cfg, ~/.zvsh.cfg and /etc/zvsh.cfg.  zerolab's zvsh
reads the same sections, lets the command line win, and refuses what it cannot
honour with one line and exit 2, never a traceback.  Real files in tmp_path; the
real sandbox runs the guests wherever a setting changes what a run does."""

import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerolab.sandbox import zvsh
from zerolab.sandbox.zvsh import CfgError, ZvshCfg, load_cfg, parse_cfg, read_cfg

G = 4294967296


def run(cmd, env, cwd, stdin=b""):
    return subprocess.run(cmd, env=env, cwd=cwd, input=stdin, capture_output=True, timeout=300)


@pytest.fixture
def env(cli_env, tmp_path):
    """The commands' environment with a home of our own (so ~/.zvsh.cfg is ours)."""
    home = tmp_path / "home"
    home.mkdir()
    return dict(cli_env, HOME=str(home))


def one_line(p):
    text = p.stderr.decode()
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.endswith("\n"), text
    return text[:-1]


# ---------------------------------------------------------------- the format
# zerovm-cli's sample zvsh.cfg, every key it shows uncommented (with its values)
SAMPLE = """\
[manifest]
# sample values of zerovm-cli's file
Version = 20130611
Memory = 419430400, 0
Node = 1
Timeout = 50

[env]
PATH = /bin:/usr/bin
LANG = en_US.UTF-8
TERM = vt100

[fstab]
/opt/zerovm/images/python.img = \t/\tro
/home/user/my_image = \t\t\t/home/user\trw

[limits]
reads = 1073741824
rbytes = 1073741824
writes = 1073741824
wbytes = 1073741824

[zvapp]
"""


def test_zvsh_cfg_sample_keys_parse():
    cfg = parse_cfg(SAMPLE, "zvsh.cfg")
    assert (cfg.timeout, cfg.memory, cfg.etag, cfg.node) == (50, 419430400, 0, 1)
    assert cfg.env == {"PATH": "/bin:/usr/bin", "LANG": "en_US.UTF-8", "TERM": "vt100"}
    assert cfg.limits == dict.fromkeys(["reads", "rbytes", "writes", "wbytes"], 1073741824)
    assert cfg.fstab == {"/opt/zerovm/images/python.img": ("/", "ro", "zvsh.cfg"),
                         "/home/user/my_image": ("/home/user", "rw", "zvsh.cfg")}


def test_zvsh_cfg_all_commented_out_sets_nothing():
    # the file zerovm-cli installed as /etc/zvsh.cfg: every key commented out
    commented = "".join(line if line.startswith("[") or not line.strip() else "#" + line
                        for line in SAMPLE.splitlines(keepends=True))
    assert parse_cfg(commented, "/etc/zvsh.cfg") == ZvshCfg()


def test_zvsh_cfg_numbers_are_read_as_zerovm_read_the_manifest():
    cfg = parse_cfg("[manifest]\nTimeout = 0x10\nMemory = 67108864\n[limits]\nreads = 010\nwbytes = 0\n", "f")
    assert (cfg.timeout, cfg.memory, cfg.etag) == (16, 67108864, 0)
    assert cfg.limits == {"reads": 8, "wbytes": 0}
    assert parse_cfg("[manifest]\nMemory = 65536,1\n", "f").etag == 1
    assert parse_cfg("[env]\nA_1 = x, y \\ z\n", "f").env == {"A_1": "x, y \\ z"}   # NVRAM escapes them


@pytest.mark.parametrize("text, message", [
    ("[manifest]\nTimeout = soon\n", "[manifest] Timeout = soon: not an integer; write whole seconds from 1 to 2147483647"),
    ("[manifest]\nTimeout = 0\n", "[manifest] Timeout = 0: out of range; write whole seconds from 1 to 2147483647"),
    ("[manifest]\nTimeout = 99999999999999999999999999\n",
     "[manifest] Timeout = 99999999999999999999999999: out of range; write whole seconds from 1 to 2147483647"),
    ("[manifest]\nTimeout =\n", "[manifest] Timeout = : not an integer; write whole seconds from 1 to 2147483647"),
    ("[manifest]\nMemory = 4294967297\n", "[manifest] Memory = 4294967297: out of range; write bytes from 65536 to 4294967296"),
    ("[manifest]\nMemory = 419430400, 0, 0\n", "[manifest] Memory = 419430400, 0, 0: write bytes or 'bytes, etag'"),
    ("[manifest]\nMemory = 419430400, 2\n", "[manifest] Memory = 419430400, 2: the etag after the comma is 0 or 1"),
    ("[manifest]\nNode = -1\n", "[manifest] Node = -1: out of range; write a node number from 1 to 2147483647"),
    ("[manifest]\nVersion = 20140101\n",
     "[manifest] Version = 20140101: zerolab runs manifest Version 20130611 only; set that or remove the key"),
    ("[manifest]\ntimeout = 5\n", "[manifest] timeout: unknown key; did you mean Timeout? (keys are case-sensitive)"),
    ("[manifest]\nProgram = /bin/sh\n", "[manifest] Program: unknown key; zvsh sets only Timeout, Memory, Node, Version here"),
    ("[limits]\nreads = -1\n", "[limits] reads = -1: out of range; write a count from 0 to 9223372036854775807"),
    ("[limits]\nwbytes = 1e6\n", "[limits] wbytes = 1e6: not an integer; write a count from 0 to 9223372036854775807"),
    ("[limits]\nrbytes = " + "9" * 5000 + "\n",
     "[limits] rbytes = " + "9" * 40 + "...: not an integer; write a count from 0 to 9223372036854775807"),
    ("[limits]\nbytes = 1\n", "[limits] bytes: unknown key; [limits] has reads, rbytes, writes, wbytes"),
    ("[env]\nMY-VAR = 1\n", "[env] MY-VAR: not a variable name; use letters, digits and _ (not first a digit)"),
    ("[env]\nA = one\n  two\n", "[env] A = one\\ntwo: the value holds a control character or spans lines; write it on one line"),
    ("[env]\nA = x\x00y\n", "[env] A = x\\x00y: the value holds a control character or spans lines; write it on one line"),
    ("[fstab]\npython.tar = / rx\n", "[fstab] python.tar = / rx: access must be ro or rw, not 'rx'"),
    ("[fstab]\npython.tar = usr ro\n",
     "[fstab] python.tar = usr ro: the mount point must be an absolute path without commas, like /"),
    ("[fstab]\npython.tar = / ro extra\n", "[fstab] python.tar = / ro extra: write '/mount/point ro' or '/mount/point rw'"),
    ("[fstab]\na,b.tar = /\n",
     "[fstab] a,b.tar = /: an image path with a comma or a control character cannot be a channel; rename the file"),
    ("[zvapp]\nroot_path = .\n", "[zvapp] root_path: zerolab has no zvapp, so this does nothing; remove the key"),
    ("[debug]\nverbosity = 1\n",
     "[debug]: unknown section; zvsh.cfg has [manifest], [env], [limits], [fstab], [zvapp]"),
    ("[DEFAULT]\nTimeout = 5\n",
     "[DEFAULT]: not a zvsh.cfg section (its keys would land in every section); move them where they belong"),
    ("Timeout = 5\n", "line 1: 'Timeout = 5' comes before any section; start with a header such as [manifest]"),
    ("[manifest]\nTimeout = 5\n[manifest]\n", "line 3: [manifest] appears twice; merge the two"),
    ("[env]\nA = 1\nA = 2\n", "line 3: [env] A is set twice; keep one"),
    ("[manifest]\nTimeout = 5\ngarbage\n", "line 3: 'garbage' is not 'key = value'; fix or remove the line"),
])
def test_zvsh_cfg_refusals_name_file_section_key_and_fix(text, message):
    with pytest.raises(CfgError) as e:
        parse_cfg(text, "/x/zvsh.cfg")
    assert str(e.value) == f"/x/zvsh.cfg: {message}"


# ------------------------------------------------------- reading and search
def test_zvsh_cfg_files_that_cannot_be_read(tmp_path):
    (tmp_path / "dir.cfg").mkdir()
    os.mkfifo(tmp_path / "fifo.cfg")                     # must not hang zvsh
    (tmp_path / "latin1.cfg").write_bytes(b"[env]\nA = caf\xe9\n")
    (tmp_path / "big.cfg").write_bytes(b"[env]\n" + b"#" * (1 << 20))
    (tmp_path / "bom.cfg").write_bytes("\ufeff[env]\nA = caf\u00e9\n".encode())   # an editor's BOM is fine
    assert read_cfg(str(tmp_path / "bom.cfg")).env == {"A": "caf\u00e9"}
    for name, problem in [("absent.cfg", "cannot read: No such file or directory; fix the path or its permissions"),
                          ("dir.cfg", "not a regular file; point zvsh at a zvsh.cfg file"),
                          ("fifo.cfg", "not a regular file; point zvsh at a zvsh.cfg file"),
                          ("latin1.cfg", "not UTF-8 text; save it as UTF-8"),
                          ("big.cfg", "larger than 1 MiB; a zvsh.cfg is a few lines")]:
        with pytest.raises(CfgError) as e:
            read_cfg(str(tmp_path / name))
        assert str(e.value) == f"{tmp_path / name}: {problem}"


@pytest.fixture
def places(tmp_path, monkeypatch):
    """zvsh's three places, as files of our own: ./zvsh.cfg, ~/.zvsh.cfg, /etc/zvsh.cfg."""
    paths = [tmp_path / "cwd.cfg", tmp_path / "home.cfg", tmp_path / "etc.cfg"]
    monkeypatch.setattr(zvsh, "CFG_PATHS", tuple(str(p) for p in paths))
    return paths


def test_zvsh_cfg_search_order_first_place_wins_per_key(places, tmp_path):
    cwd, home, etc = places
    assert load_cfg(None) == ZvshCfg()                   # none there: zvsh's defaults
    etc.write_text("[manifest]\nTimeout = 30\nNode = 4\nMemory = 65536, 1\n[env]\nA = etc\nB = etc\n[limits]\nreads = 3\n")
    home.write_text("[manifest]\nTimeout = 20\nMemory = 131072\n[env]\nA = home\n[limits]\nrbytes = 5\n")
    cwd.write_text("[manifest]\nTimeout = 10\n[fstab]\nimg.tar = /opt\n")
    cfg = load_cfg(None)
    assert (cfg.timeout, cfg.node, cfg.memory, cfg.etag) == (10, 4, 131072, 0)   # Memory's etag goes with it
    assert cfg.env == {"A": "home", "B": "etc"}
    assert cfg.limits == {"reads": 3, "rbytes": 5}
    assert cfg.fstab == {"img.tar": ("/opt", "ro", str(cwd))}
    # an explicit --zvm-cfg is the only file read
    (tmp_path / "mine.cfg").write_text("[env]\nC = mine\n")
    assert load_cfg(str(tmp_path / "mine.cfg")) == ZvshCfg(env={"C": "mine"})
    # a bad file in any place stops the run, even where a better place overrides it
    etc.write_text("[manifest]\nTimeout = never\n")
    with pytest.raises(CfgError, match=f"^{etc}: \\[manifest\\] Timeout = never: not an integer"):
        load_cfg(None)
    etc.unlink()
    etc.mkdir()
    with pytest.raises(CfgError, match="not a regular file"):
        load_cfg(None)


# -------------------------------------------------------------- Hypothesis
SECTIONS = ["manifest", "env", "limits", "fstab", "zvapp", "DEFAULT", "Manifest", "x", ""]
KEYS = ["Timeout", "Memory", "Node", "Version", "reads", "rbytes", "writes", "wbytes", "PATH", "A b",
        "python.tar", "/a,b", "root_path", ""]
VALUES = st.one_of(st.integers(-2**70, 2**70).map(str), st.sampled_from(["0x10", "1e3", "", "/ ro", "/ rw x", "9" * 5000,
                                                                          "419430400, 0", "20130611"]),
                   st.text(max_size=30))
LINE = st.one_of(st.sampled_from(SECTIONS).map(lambda s: f"[{s}]"),
                 st.tuples(st.sampled_from(KEYS), st.sampled_from(["=", ":", " = "]), VALUES).map("".join),
                 st.text(max_size=40))


@settings(max_examples=500, deadline=None)
@given(st.lists(LINE, max_size=12).map("\n".join))
def test_zvsh_cfg_any_text_is_read_or_refused_in_one_line(text):
    try:
        cfg = parse_cfg(text, "zvsh.cfg")
    except CfgError as e:
        message = str(e)
        assert message.startswith("zvsh.cfg: ") and message.isprintable(), message
        return
    assert cfg.timeout is None or 1 <= cfg.timeout <= 2147483647
    assert cfg.memory is None or 65536 <= cfg.memory <= G
    assert all(0 <= v <= 2**63 - 1 for v in cfg.limits.values())
    assert all(v.isprintable() for v in cfg.env.values())


@settings(max_examples=200, deadline=None)
@given(timeout=st.none() | st.integers(1, 2147483647), memory=st.none() | st.integers(65536, G),
       limits=st.dictionaries(st.sampled_from(["reads", "rbytes", "writes", "wbytes"]), st.integers(0, 2**63 - 1)),
       env=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                           st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cn", "Co", "Cf", "Zs")),
                                   max_size=20)))
def test_zvsh_cfg_written_values_read_back(timeout, memory, limits, env):
    lines = ["[manifest]"] + ([f"Timeout = {timeout}"] if timeout else []) + ([f"Memory = {memory}"] if memory else [])
    lines += ["[limits]"] + [f"{k} = {v}" for k, v in limits.items()]
    lines += ["[env]"] + [f"{k} = {v}" for k, v in env.items()]
    cfg = parse_cfg("\n".join(lines) + "\n", "f")
    assert (cfg.timeout, cfg.memory, cfg.limits, cfg.env) == (timeout, memory, limits, env)


# -------------------------------------------------- the command, in a real run
def test_zvsh_cfg_error_stops_the_command_exit_2(env, guests, tmp_path):
    (tmp_path / "zvsh.cfg").write_text("[limits]\nreads = -5\n")
    p = run(["zvsh", str(guests / "hello.wasm")], env, tmp_path)
    assert p.returncode == 2 and p.stdout == b""
    assert one_line(p) == "zvsh: zvsh.cfg: [limits] reads = -5: out of range; write a count from 0 to 9223372036854775807"
    (tmp_path / "zvsh.cfg").unlink()
    (tmp_path / "home" / ".zvsh.cfg").write_text("[weird]\n")
    p = run(["zvsh", str(guests / "hello.wasm")], env, tmp_path)
    assert p.returncode == 2
    assert one_line(p) == (f"zvsh: {tmp_path}/home/.zvsh.cfg: [weird]: unknown section; "
                           "zvsh.cfg has [manifest], [env], [limits], [fstab], [zvapp]")
    p = run(["zvsh", "--zvm-cfg", "nope.cfg", str(guests / "hello.wasm")], env, tmp_path)
    assert p.returncode == 2
    assert one_line(p) == "zvsh: nope.cfg: cannot read: No such file or directory; fix the path or its permissions"


def test_zvsh_cfg_limits_are_every_channel_quota(env, guests, tmp_path):
    (tmp_path / "zvsh.cfg").write_text("[limits]\nwbytes = 5\n")
    p = run(["zvsh", str(guests / "hello.wasm")], env, tmp_path)
    # ZeroVM's rule: the write got EDQUOT and the program went on to its own
    # exit code (hello ignores puts's error: 0; cat reports it: 1).
    assert (p.returncode, p.stdout) == (0, b"Hello")
    assert p.stderr.decode().endswith("zvsh: quota: /dev/stdout put_size limit 5 reached\n")
    (tmp_path / "data.txt").write_bytes(b"hello world\n")
    (tmp_path / "zvsh.cfg").write_text("[limits]\nrbytes = 3\n")
    p = run(["zvsh", str(guests / "cat.wasm"), "-b", "2", "@data.txt"], env, tmp_path)
    assert (p.returncode, p.stdout) == (1, b"hel")
    assert p.stderr.decode().endswith("zvsh: quota: /dev/1.data.txt get_size limit 3 reached\n")
    (tmp_path / "zvsh.cfg").write_text("[limits]\nreads = 2\n")
    p = run(["zvsh", str(guests / "cat.wasm"), "-b", "2", "@data.txt"], env, tmp_path)
    assert (p.returncode, p.stdout) == (1, b"hell")
    assert p.stderr.decode().endswith("zvsh: quota: /dev/1.data.txt gets limit 2 reached\n")


def test_zvsh_cfg_timeout_and_memory_and_the_command_line_wins(env, guests, tmp_path):
    (tmp_path / "zvsh.cfg").write_text("[manifest]\nTimeout = 1\nMemory = 33554432\n")
    p = run(["zvsh", str(guests / "misbehave.wasm"), "loop"], env, tmp_path)
    assert p.returncode == 6
    assert one_line(p) == "zvsh: timeout: the job ran longer than Timeout = 1 s"
    p = run(["zvsh", "--zvm-timeout", "2", str(guests / "misbehave.wasm"), "loop"], env, tmp_path)
    assert one_line(p) == "zvsh: timeout: the job ran longer than Timeout = 2 s"
    p = run(["zvsh", str(guests / "misbehave.wasm"), "alloc"], env, tmp_path)
    assert p.returncode == 7 and p.stderr.startswith(b"zvsh: memory: ")
    p = run(["zvsh", "--zvm-memory", str(256 << 20), "--zvm-save-dir", "saved", str(guests / "hello.wasm")],
            env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"Hello, World!\n")
    assert "Memory = 268435456,0" in (tmp_path / "saved" / "manifest.1").read_text().splitlines()


def test_zvsh_cfg_places_and_node_in_the_saved_job(env, guests, tmp_path):
    (tmp_path / "zvsh.cfg").write_text("[manifest]\nTimeout = 7\nNode = 3\n")
    (tmp_path / "home" / ".zvsh.cfg").write_text(
        "[manifest]\nTimeout = 9\nMemory = 67108864, 0\n[limits]\nreads = 11\nwrites = 12\n")
    p = run(["zvsh", "--zvm-save-dir", "saved", str(guests / "hello.wasm")], env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"Hello, World!\n"), p.stderr
    saved = tmp_path / "saved"
    assert sorted(os.listdir(saved)) == ["manifest.3", "nvram.3"]
    manifest = (saved / "manifest.3").read_text().splitlines()
    assert manifest[:4] == ["Node = 3", "Version = 20130611", "Timeout = 7", "Memory = 67108864,0"]
    assert "Channel = /dev/stdin,/dev/stdin,0,0,11,4294967296,0,0" in manifest
    assert f"Channel = {saved}/stdout.3,/dev/stdout,0,0,0,0,12,4294967296" in manifest
    assert f"Channel = {saved}/nvram.3,/dev/nvram,3,0,11,4294967296,12,4294967296" in manifest
    # the saved job reruns as it ran
    p = run(["zerovm", "-t", "2", "manifest.3"], env, saved)
    assert p.returncode == 0 and (saved / "stdout.3").read_bytes() == b"Hello, World!\n"
    # --zvm-cfg: that file only (neither ./zvsh.cfg nor ~/.zvsh.cfg)
    (tmp_path / "only.cfg").write_text("[manifest]\nTimeout = 13\n")
    p = run(["zvsh", "--zvm-cfg", "only.cfg", "--zvm-save-dir", "saved2", str(guests / "hello.wasm")], env, tmp_path)
    assert p.returncode == 0
    assert (tmp_path / "saved2" / "manifest.1").read_text().splitlines()[:4] == [
        "Node = 1", "Version = 20130611", "Timeout = 13", "Memory = 4294967296,0"]


def test_zvsh_cfg_env_reaches_the_guest_and_at_name_wins(env, python_image, tmp_path):
    (tmp_path / "python.tar").symlink_to(python_image)
    (tmp_path / "zvsh.cfg").write_text("[env]\nGREETING = Hello, World\nWHO = cfg\n")
    code = "import os; print(os.environ['GREETING'], '/', os.environ['WHO'])"
    p = run(["zvsh", "--zvm-image", "python.tar", "python", "-c", code, "@WHO=command line"], env, tmp_path)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"Hello, World / command line\n", b"")


def test_zvsh_cfg_fstab_mounts_an_image_for_every_run(env, python_image, tmp_path):
    (tmp_path / "python.tar").symlink_to(python_image)
    (tmp_path / "in.txt").write_text("from a file\n")
    (tmp_path / "zvsh.cfg").write_text("[fstab]\npython.tar = / ro\n")
    code = "import sys; print(open(sys.argv[1]).read().strip(), sys.argv[1])"
    p = run(["zvsh", "--zvm-save-dir", "saved", "python", "-c", code, "@in.txt"], env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"from a file /dev/2.in.txt\n"), p.stderr
    manifest = (tmp_path / "saved" / "manifest.1").read_text().splitlines()
    # zvsh numbered the [fstab] images before the @file arguments
    assert f"Channel = {tmp_path}/python.tar,/dev/1.python.tar,3,0,4294967296,4294967296,0,0" in manifest
    assert "channel=/dev/1.python.tar,mountpoint=/,access=ro,removable=no" in (
        tmp_path / "saved" / "nvram.1").read_text().splitlines()
    # the command line's --zvm-image of the same file wins (one channel, its mount point)
    p = run(["zvsh", "--zvm-save-dir", "saved2", "--zvm-image", "python.tar,/,ro", "python", "-c", "print(1)"],
            env, tmp_path)
    assert (p.returncode, p.stdout) == (0, b"1\n")
    assert (tmp_path / "saved2" / "nvram.1").read_text().count("[fstab]\nchannel=/dev/1.python.tar,") == 1
    # an image that is not there
    (tmp_path / "zvsh.cfg").write_text("[fstab]\nmissing.tar = /\n")
    p = run(["zvsh", "python", "-c", "print(1)"], env, tmp_path)
    assert p.returncode == 2
    assert one_line(p) == "zvsh: zvsh.cfg: [fstab] missing.tar: no such readable file; fix the path or remove the entry"


def test_a_found_zvsh_cfg_writable_by_others_is_refused_but_a_named_one_is_read(tmp_path):
    # ./zvsh.cfg of a directory zvsh merely runs in can map host files into
    # the guest: like ssh, zvsh reads it only when nobody else could have written it.
    from zerolab.sandbox import zvsh
    cfg = tmp_path / "zvsh.cfg"
    cfg.write_text("[manifest]\nTimeout = 7\n")
    cfg.chmod(0o666)
    with pytest.raises(zvsh.CfgError, match="writable by others"):
        zvsh.read_cfg(str(cfg), found=True)
    assert zvsh.read_cfg(str(cfg)).timeout == 7
    cfg.chmod(0o644)
    assert zvsh.read_cfg(str(cfg), found=True).timeout == 7
