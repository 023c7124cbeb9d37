"""The runtime: isolation (only declared channels exist), access types,
timeout, memory cap, crashes, bad programs and bad inputs, MapReduce guests."""

import os

import pytest
import wasmtime

from zerolab.sandbox import (
    BAD_INPUT,
    BAD_MANIFEST,
    CRASH,
    GUEST_EXIT,
    INVALID_PROGRAM,
    MEMORY,
    OK,
    TIMEOUT,
    Channel,
    Manifest,
    wasi,
)

from .conftest import G, job, python_job


def test_hello(executor, guests):
    r = executor.run(job(guests / "hello.wasm"), stdin=b"")
    assert (r.exit_code, r.exit_state, r.user_rc, r.validator) == (OK, "ok", 0, 0)
    assert r.stdout == b"Hello, World!\n"
    assert r.as_text() == "0\n0\n0\ndisable\n%.2f %.2f 0 0 1 14 0 0 0 0\nok\n" % (r.cpu_sys, r.cpu_user)


@pytest.mark.parametrize("mode, arg, expected", [
    ("open", "/etc/passwd", b"contained: open(/etc/passwd): No such file or directory\n"),
    ("open", "/work/main/pyproject.toml", b"contained: open(/work/main/pyproject.toml): No such file or directory\n"),
    ("open", "/dev/../../etc/hostname", b"contained: open(/dev/../../etc/hostname): No such file or directory\n"),
    ("create", "/tmp/escaped", b"contained: open(/tmp/escaped): Read-only file system\n"),
    ("fd", "7", b"contained: write(fd 7): Bad file descriptor\n"),
])
def test_misbehave_is_contained(executor, guests, mode, arg, expected):
    r = executor.run(job(guests / "misbehave.wasm", ["misbehave", mode, arg]), stdin=b"")
    assert (r.exit_code, r.user_rc, r.stdout) == (OK, 0, expected)
    assert not os.path.exists("/tmp/escaped")


def test_timeout_stops_a_busy_loop(executor, guests):
    r = executor.run(job(guests / "misbehave.wasm", ["misbehave", "loop"], timeout=1), stdin=b"")
    assert (r.exit_code, r.exit_state) == (TIMEOUT, "timeout: the job ran longer than Timeout = 1 s")
    assert 1.0 <= r.elapsed < 2.0


def test_memory_cap(executor, guests):
    r = executor.run(job(guests / "misbehave.wasm", ["misbehave", "alloc"], memory=32 << 20), stdin=b"")
    assert r.exit_code == MEMORY, r.exit_state
    assert r.exit_state.startswith("memory: ")
    mib = int(r.stdout.split()[4])
    assert 20 <= mib < 32, r.stdout   # refused before the 32 MiB cap, not after
    # the same guest with 4x the memory gets further: the cap is what stopped it
    r2 = executor.run(job(guests / "misbehave.wasm", ["misbehave", "alloc"], memory=128 << 20), stdin=b"")
    assert int(r2.stdout.split()[4]) > 100


def test_program_larger_than_memory_cap(executor, python_image):
    r = executor.run(python_job(python_image, "print(1)", memory=1 << 20), stdin=b"")
    assert r.exit_code == MEMORY, r.exit_state


def test_crash(executor, guests):
    r = executor.run(job(guests / "misbehave.wasm", ["misbehave", "crash"]), stdin=b"")
    assert (r.exit_code, r.exit_state) == (CRASH, "crash: wasm `unreachable` instruction executed")


def test_guest_exit_code(executor, guests):
    r = executor.run(job(guests / "misbehave.wasm", ["misbehave", "exit", "42"]), stdin=b"")
    assert (r.exit_code, r.exit_state, r.user_rc) == (GUEST_EXIT, "ok", 42)


def test_invalid_programs(executor, tmp_path):
    missing = executor.run(job(tmp_path / "nope.wasm"))
    assert (missing.exit_code, missing.validator) == (INVALID_PROGRAM, 1)
    assert missing.exit_state == f"invalid program: program {tmp_path}/nope.wasm not found"
    text = tmp_path / "prog.wasm"
    text.write_text("#!/bin/sh\necho hi\n")
    r = executor.run(job(text))
    assert r.exit_state == f"invalid program: program {text} is not a WebAssembly module"
    foreign = tmp_path / "foreign.wasm"
    foreign.write_bytes(wasmtime.wat2wasm(
        '(module (import "env" "system" (func)) (memory (export "memory") 1)'
        ' (func (export "_start") call 0))'))
    r = executor.run(job(foreign))
    assert r.exit_code == INVALID_PROGRAM
    assert "imports env.system, which the sandbox does not provide" in r.exit_state
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm\x01\0\0\0\x99garbage")
    assert executor.run(job(broken)).exit_code == INVALID_PROGRAM


def test_bad_inputs(executor, guests, tmp_path):
    gone = Channel(str(tmp_path / "gone.txt"), "/dev/1.gone.txt", 3, 0, G, G, 0, 0)
    r = executor.run(job(guests / "cat.wasm", extra=[gone]), stdin=b"")
    assert r.exit_code == BAD_INPUT
    assert r.exit_state == (f"bad input: channel /dev/1.gone.txt: cannot open {tmp_path}/gone.txt: "
                            "No such file or directory")
    r = executor.run(job(guests / "cat.wasm", extra=[Channel(str(tmp_path), "/dev/d", 3, 0, G, G, 0, 0)]))
    assert r.exit_code == BAD_INPUT and "Is a directory" in r.exit_state
    r = executor.run(job(guests / "hello.wasm"), images=[str(tmp_path / "no.tar")])
    assert r.exit_code == BAD_INPUT and "no.tar" in r.exit_state
    notar = tmp_path / "plain.txt"
    notar.write_text("hello")
    r = executor.run(job(guests / "hello.wasm"), images=[str(notar)])
    assert r.exit_state == f"bad input: image {notar} is not a tar file"
    bad = job(guests / "hello.wasm", timeout=0)
    assert executor.run(bad).exit_code == BAD_MANIFEST


def test_output_channel_to_a_file(executor, guests, tmp_path):
    out = tmp_path / "out.txt"
    out.write_bytes(b"old content that is longer than the new one\n")
    m = Manifest(program=str(guests / "hello.wasm"), channels=[
        Channel(str(out), "/dev/stdout", 0, 0, 0, 0, G, G)])
    r = executor.run(m)
    assert r.exit_code == OK
    assert out.read_bytes() == b"Hello, World!\n"   # a sequential output starts empty


def test_access_types_seek(executor, python_image, tmp_path):
    data = tmp_path / "d.bin"
    data.write_bytes(b"0123456789")
    code = (
        "import os\n"
        "for path in ('/dev/seq', '/dev/rnd'):\n"
        "    fd = os.open(path, os.O_RDONLY)\n"
        "    try:\n"
        "        os.lseek(fd, 5, 0); print(path, 'seek ok', os.read(fd, 3))\n"
        "    except OSError as e:\n"
        "        print(path, 'seek failed', e.errno == __import__('errno').ESPIPE)\n"
    )
    extra = [Channel(str(data), "/dev/seq", 0, 0, G, G, 0, 0), Channel(str(data), "/dev/rnd", 1, 0, G, G, 0, 0)]
    r = executor.run(python_job(python_image, code, extra), stdin=b"")
    assert r.stdout == b"/dev/seq seek failed True\n/dev/rnd seek ok b'567'\n", r.stderr


def test_guest_sees_only_declared_channels(executor, python_image, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    code = ("import os\n"
            "print(sorted(os.listdir('/dev')))\n"
            "print(sorted(os.environ))\n"
            f"print(os.path.exists({str(secret)!r}), os.path.exists('/etc'), os.path.exists('/proc'))\n")
    extra = [Channel(str(tmp_path / "in.txt"), "/dev/in1", 0, 0, 0, 0, G, G)]
    r = executor.run(python_job(python_image, code, extra), stdin=b"")
    assert r.stdout == b"['1.python.tar', 'in1', 'stderr', 'stdin', 'stdout']\n[]\nFalse False False\n", r.stderr


def test_wordcount_map_and_reduce(executor, guests):
    text = b"the cat and the hat\nThe end.\n"
    mapped = executor.run(job(guests / "wordcount.wasm"), stdin=text)
    assert mapped.stdout == b"and 1\ncat 1\nend 1\nhat 1\nthe 3\n"
    other = executor.run(job(guests / "wordcount.wasm"), stdin=b"cat dog\n").stdout
    inputs = [Channel(mapped.stdout, "/dev/in1", 0, 0, G, G, 0, 0), Channel(other, "/dev/in2", 0, 0, G, G, 0, 0)]
    reduced = executor.run(job(guests / "wordcount.wasm", ["wordcount", "-r"], inputs), stdin=b"")
    assert (reduced.exit_code, reduced.stdout) == (OK, b"and 1\ncat 2\ndog 1\nend 1\nhat 1\nthe 3\n")
    bad = [Channel(b"oops\n", "/dev/in1", 0, 0, G, G, 0, 0)]
    r = executor.run(job(guests / "wordcount.wasm", ["wordcount", "-r"], bad), stdin=b"")
    assert (r.exit_code, r.user_rc) == (GUEST_EXIT, 2)
    assert b"/dev/in1 line 1: expected 'word count'" in r.stderr


def test_all_preview1_functions_are_defined(python_image, executor):
    module = executor.load_module(f"{python_image}/bin/python")
    imported = {i.name for i in module.imports}
    assert len(imported) == 42
    assert imported <= set(wasi.SIGNATURES)
    assert len(wasi.SIGNATURES) == 46
    assert wasi.unsupported_imports(module) == []


def test_unsupported_calls_return_errors_not_traps(executor, python_image):
    code = ("import os, socket\n"
            "try:\n    os.mkdir('/newdir')\nexcept OSError as e:\n    print('mkdir', e.strerror)\n"
            "try:\n    os.remove('/dev/stdin')\nexcept OSError as e:\n    print('remove', e.strerror)\n"
            "try:\n    socket.socket()\nexcept Exception as e:\n    print('socket', type(e).__name__)\n")
    r = executor.run(python_job(python_image, code), stdin=b"")
    assert r.exit_code == OK, r.stderr
    assert r.stdout.startswith(b"mkdir Read-only file system\nremove Read-only file system\nsocket ")


def test_in_memory_output_and_bytesio(executor, guests):
    import io
    sink = io.BytesIO()
    m = Manifest(program=str(guests / "hello.wasm"), channels=[Channel(sink, "/dev/stdout", 0, 0, 0, 0, G, G)])
    r = executor.run(m)
    assert sink.getvalue() == r.stdout == b"Hello, World!\n"


def test_concurrent_jobs_keep_their_own_results(executor, guests):
    # the Swift middleware may run jobs from several threads on one Executor
    from concurrent.futures import ThreadPoolExecutor

    def one(n):
        r = executor.run(job(guests / "misbehave.wasm", ["misbehave", "exit", str(n)]), stdin=b"")
        h = executor.run(job(guests / "cat.wasm"), stdin=str(n).encode() * 1000)
        return n, r.user_rc, h.stdout == str(n).encode() * 1000
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(1, 101)))
    assert all(n == rc and same for n, rc, same in results), [x for x in results if x[0] != x[1] or not x[2]]


def test_bogus_pointers_get_efault_not_a_host_crash(executor, tmp_path):
    # a hand-written guest passing an iovec far outside its 1-page memory, and a
    # huge random_get: both must fail with EFAULT (21), the host stays up
    prog = tmp_path / "bogus.wasm"
    prog.write_bytes(wasmtime.wat2wasm('''
      (module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "random_get" (func $r (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 0x7ffffff0))   ;; iovec.buf: far outside memory
          (i32.store (i32.const 4) (i32.const 0x10000000))   ;; iovec.len: 256 MiB
          (if (i32.ne (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 21))
            (then (call $exit (i32.const 1))))
          (if (i32.ne (call $r (i32.const 16) (i32.const 0x7fffffff)) (i32.const 21))
            (then (call $exit (i32.const 2))))
          (call $exit (i32.const 0))))'''))
    r = executor.run(job(prog, memory=1 << 20), stdin=b"")
    assert (r.exit_code, r.user_rc) == (OK, 0), r.exit_state


def test_image_index_cache_is_shared_by_every_name_of_the_file(python_image, tmp_path, monkeypatch):
    # regression: an index cached under a relative name broke jobs run elsewhere
    from zerolab.sandbox import Executor

    from .conftest import CACHE
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "py.tar").symlink_to(python_image)
    monkeypatch.chdir(tmp_path / "a")
    first = Executor(cache_dir=str(CACHE))
    assert first.image("py.tar").path == str(python_image.resolve())
    first.close()
    monkeypatch.chdir(tmp_path)
    second = Executor(cache_dir=str(CACHE))
    try:
        r = second.run(python_job(python_image, "print('ok')"), stdin=b"")
    finally:
        second.close()
    assert r.stdout == b"ok\n", r.exit_state


def test_gather_and_scatter_with_empty_iovecs(executor, tmp_path):
    # wasi-libc's stdio writes [buffered part, new part] and the first may be
    # empty; an empty iovec must not end the list (regression: it did)
    prog = tmp_path / "iov.wasm"
    prog.write_bytes(wasmtime.wat2wasm('''
      (module
        (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 100) "hello")
        (func (export "_start")
          ;; read 6 bytes from stdin into 200..202 and 300..302 (iovecs at 0: empty, 3, 3)
          (i32.store (i32.const 0) (i32.const 400)) (i32.store (i32.const 4) (i32.const 0))
          (i32.store (i32.const 8) (i32.const 200)) (i32.store (i32.const 12) (i32.const 3))
          (i32.store (i32.const 16) (i32.const 300)) (i32.store (i32.const 20) (i32.const 3))
          (drop (call $r (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 500)))
          ;; write: empty, "hello", the 3+3 bytes read
          (i32.store (i32.const 8) (i32.const 100)) (i32.store (i32.const 12) (i32.const 5))
          (i32.store (i32.const 24) (i32.const 200)) (i32.store (i32.const 28) (i32.const 3))
          (i32.store (i32.const 32) (i32.const 300)) (i32.store (i32.const 36) (i32.const 3))
          (drop (call $w (i32.const 1) (i32.const 0) (i32.const 2) (i32.const 500)))
          (drop (call $w (i32.const 1) (i32.const 24) (i32.const 2) (i32.const 500)))))'''))
    r = executor.run(job(prog, memory=1 << 20), stdin=b"abcdef")
    assert (r.exit_code, r.stdout) == (OK, b"helloabcdef"), r.exit_state


def test_nvram_channel_drives_args_env_mounts_and_terminals(executor, python_image, tmp_path):
    # a manifest whose /dev/nvram says: run python -i, mount the image, stdin is a
    # terminal (mode=char): the interactive interpreter reads, prompts and answers
    from zerolab.sandbox import NVRAM
    from zerolab.sandbox.manifest import Mount as M
    nvram = tmp_path / "nvram.1"
    nvram.write_text(NVRAM(args=["python", "-i"], env={"GREETING": "hi, there"},
                           mounts=[M("/dev/1.python.tar", "/", "ro")],
                           mapping={"/dev/stdin": "char", "/dev/stderr": "char"}).dumps())
    m = job(f"{python_image}/bin/python", None, [
        Channel(str(python_image), "/dev/1.python.tar", 3, 0, G, G, 0, 0),
        Channel(str(nvram), "/dev/nvram", 3, 0, G, G, G, G)])
    r = executor.run(m, stdin=b"import os; print(os.environ['GREETING'], os.isatty(0), os.isatty(1))\n")
    assert r.exit_code == OK, r.exit_state
    assert r.stdout == b"hi, there True False\n"
    assert r.stderr.endswith(b">>> >>> \n")


def test_module_cache_is_bounded_and_follows_file_changes(guests, tmp_path):
    from zerolab.sandbox import Executor
    ex = Executor(max_modules=2)
    try:
        prog = tmp_path / "p.wasm"
        prog.write_bytes((guests / "hello.wasm").read_bytes())
        assert ex.run(job(prog), stdin=b"").stdout == b"Hello, World!\n"
        prog.write_bytes((guests / "cat.wasm").read_bytes())   # same path, new program
        assert ex.run(job(prog), stdin=b"meow").stdout == b"meow"
        for name in ("hello", "cat", "wordcount", "misbehave"):
            ex.load_module(str(guests / f"{name}.wasm"))
        assert len(ex.programs._modules) == 2
    finally:
        ex.close()


def test_a_start_function_that_never_returns_is_a_timeout(executor, tmp_path):
    # The wasm start function runs while the module is instantiated, before
    # _start: the job's Timeout must hold there too.
    program = tmp_path / "start-loop.wasm"
    program.write_bytes(wasmtime.wat2wasm("""
        (module
          (memory (export "memory") 1)
          (func $forever (loop br 0))
          (start $forever)
          (func (export "_start")))
    """))
    report = executor.run(job(program, timeout=1))
    assert report.exit_code == TIMEOUT, report.exit_state
    assert "start function" in report.exit_state


def test_zerocloud_connect_channels_are_a_listable_dev_in_and_writable_dev_out(executor, python_image):
    # ZeroCloud's /dev/in/<source> and /dev/out/<target>: nested channel
    # names make directories the guest can list, and /dev/out/... is written.
    code = ("import os\n"
            "names = sorted(os.listdir('/dev/in'))\n"
            "words = sum(len(open('/dev/in/' + n).read().split()) for n in names)\n"
            "open('/dev/out/reduce-1', 'w').write(f'{names} {words}')\n")
    extra = [Channel(b"a b c", "/dev/in/map-1", 0, 0, G, G, 0, 0), Channel(b"d e", "/dev/in/map-2", 0, 0, G, G, 0, 0),
             Channel(None, "/dev/out/reduce-1", 0, 0, 0, 0, G, G)]
    r = executor.run(python_job(python_image, code, extra), stdin=b"")
    assert r.exit_code == OK, r.stderr
    assert r.outputs["/dev/out/reduce-1"] == b"['map-1', 'map-2'] 5"
