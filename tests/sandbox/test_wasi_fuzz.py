"""Every WASI function the host defines, called by a real guest with arbitrary integers.

A guest can pass any 32- or 64-bit value as a pointer, a length, a count or an
offset, and wasmtime hands them to Python as signed ints.  Whatever it passes,
a host call must answer with an errno (or end the guest through proc_exit):
never crash the host process (a SIGSEGV here fails the whole run), never raise
out of the host function, never let the guest's output grow past its limit or
its open descriptors past their cap.
"""

from __future__ import annotations

import io
import tarfile

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerolab.sandbox import Channel, Executor, Manifest, wasi, wasi_abi

PAGE = 65536
STDOUT_LIMIT = 4096
# Values a guest would pick on purpose: the edges of signed/unsigned 32 and 64
# bits, the edges of its one page of memory, and small descriptors.
EDGES_32 = [0, 1, 3, 4, 7, -1, -4, -8, -16, PAGE - 8, PAGE - 1, PAGE, PAGE + 1,
            2**31 - 1, -2**31, wasi_abi.IOV_MAX, wasi_abi.IOV_MAX + 1, wasi_abi.PATH_MAX + 1]
EDGES_64 = [0, 1, -1, 2**31, 2**32, 2**63 - 1, -2**63, PAGE]
I32 = st.one_of(st.sampled_from(EDGES_32), st.integers(-2**31, 2**31 - 1))
I64 = st.one_of(st.sampled_from(EDGES_64), st.integers(-2**63, 2**63 - 1))


def wat(name: str, params: str, results: str) -> str:
    types = " ".join("i32" if c == wasi.I32 else "i64" for c in params)
    result = "(result i32)" if results else ""
    gets = " ".join(f"local.get {i}" for i in range(len(params)))
    return f"""
    (module
      (import "{wasi.MODULE}" "{name}" (func $f (param {types}) {result}))
      (memory (export "memory") 1 1)
      ;; something in memory for the host to find: an iovec at 0 -> 16 bytes at 64,
      ;; and a path "file" at 128
      (data (i32.const 0) "\\40\\00\\00\\00\\10\\00\\00\\00")
      (data (i32.const 128) "file")
      (func (export "call") (param {types}) {result} {gets} call $f))
    """


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """An Executor's engine and linker, one module per WASI function, and a small image."""
    folder = tmp_path_factory.mktemp("wasi-fuzz")
    image = folder / "image.tar"
    with tarfile.open(image, "w") as tar:
        for name, data in (("file", b"image data\n"), ("dir/inner", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (("loop", "loop"), ("up", "../../.."), ("to-file", "file"),
                             ("fan", "fan/fan/fan/fan/fan/fan/fan/fan")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    executor = Executor()
    modules = {name: wasmtime.Module(executor.engine, wat(name, params, results))
               for name, (params, results) in wasi.SIGNATURES.items()}
    yield executor, modules, str(image)
    executor.close()


def new_run(executor: Executor, image: str) -> wasi.Run:
    channels = [
        Channel(None, "/dev/stdin", 0, 0, 1000, 1 << 20, 0, 0),
        Channel(None, "/dev/stdout", 0, 0, 0, 0, 1000, STDOUT_LIMIT),
        Channel(None, "/dev/stderr", 0, 0, 0, 0, 1000, STDOUT_LIMIT),
        Channel(None, "/dev/output", 3, 0, 0, 0, 1000, STDOUT_LIMIT),   # random write
    ]
    manifest = Manifest(program="unused.wasm", timeout=5, memory=PAGE, channels=channels)
    run = wasi.Run(["fuzz"], {"A": "b"}, b"seed")
    failed = executor._prepare(run, manifest, b"input bytes\n", [(image, "/img")], [], {})
    assert failed is None, failed
    return run


def call(host, name: str, args: list[int]):
    executor, modules, image = host
    run = new_run(executor, image)
    store = wasmtime.Store(executor.engine)
    store.set_epoch_deadline(1000)   # the Executor's ticker runs: 10 s before an interrupt
    instance = executor.linker.instantiate(store, modules[name])
    memory = instance.exports(store)["memory"]
    run.attach(store, memory)
    wasi.current.run = run
    try:
        result = instance.exports(store)["call"](store, *args)
    except Exception as e:  # only proc_exit may unwind the guest
        assert name == "proc_exit" and run.exit_status is not None, f"{name}{tuple(args)} raised {e!r}"
        result = None
    finally:
        run.store = store
        wasi.current.run = None
    # Nothing the guest asked for moved the host's bounds.
    assert memory.data_len(store) == PAGE
    assert len(run.fds) <= wasi.MAX_OPEN_FILES
    for ch in run.channels:
        if ch.data is not None and ch.spec.writable:
            assert len(ch.data) <= ch.spec.put_size, (name, args, ch.alias)
    for ch in run.channels:
        ch.close()
    return result


@pytest.mark.parametrize("name", sorted(wasi.SIGNATURES))
def test_any_integers_get_an_errno(host, name):
    params, results = wasi.SIGNATURES[name]
    strategy = st.tuples(*[I32 if c == wasi.I32 else I64 for c in params])

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(strategy)
    def check(args):
        result = call(host, name, list(args))
        if results:
            assert isinstance(result, int) and 0 <= result <= wasi.ENOTCAPABLE, (name, args, result)

    check()


@given(ptr=I32, n=I32)
def test_check_accepts_only_offsets_inside_guest_memory(ptr, n):
    run = wasi.Run([], {}, b"")
    run.base, run.mem_len = 1 << 40, PAGE   # never dereferenced here
    try:
        address = run.check(ptr, n)
    except wasi.Fault:
        assert not (0 <= ptr and 0 <= n and ptr + n <= PAGE)
    else:
        assert 0 <= ptr and 0 <= n and ptr + n <= PAGE
        assert address == run.base + ptr


def test_a_negative_pointer_reads_as_unsigned_and_faults(host):
    # The case that crashed the executor daemon: random_get and fd_write with
    # pointers wasmtime delivers as negative numbers.
    assert call(host, "random_get", [-16, 16]) == wasi.EFAULT
    assert call(host, "fd_write", [1, -8, 1, 200]) == wasi.EFAULT
    assert call(host, "fd_write", [1, 0, 1, -4]) == wasi.EFAULT


def test_a_huge_iovec_count_is_refused_before_it_is_read(host):
    assert call(host, "fd_write", [1, 0, 2**31 - 1, 200]) == wasi.EINVAL
    assert call(host, "fd_read", [0, 0, -1, 200]) == wasi.EINVAL
    assert call(host, "fd_write", [1, 0, 1, 200]) == wasi.ESUCCESS


def test_a_long_path_is_refused_before_it_is_read(host):
    assert call(host, "path_open", [3, 0, 128, wasi_abi.PATH_MAX + 1, 0, 0, 0, 0, 200]) == wasi_abi.ENAMETOOLONG
    assert call(host, "path_open", [3, 0, 128, 4, 0, 0, 0, 0, 200]) == wasi.ENOENT   # "file" is under /img


def test_symlink_loops_and_fans_end_within_the_budget(host):
    executor, _, image = host
    img = executor.image(image)
    assert img.lookup("loop") is None
    assert img.lookup("fan") is None
    assert img.lookup("to-file") is not None
    assert img.lookup("up/file") is not None   # '..' cannot climb above the image root


def test_a_memory_channel_never_grows_past_its_limit(host):
    # pwrite at a 2^62 offset of a random-write memory channel: EFBIG, no allocation.
    executor, modules, image = host
    run = new_run(executor, image)
    out = next(ch for ch in run.channels if ch.alias == "/dev/output")
    assert run.channel_write(out, b"x", 1 << 62) == (wasi.EFBIG, 0)
    assert run.channel_write(out, b"x", 10) == (wasi.ESUCCESS, 1)
    assert len(out.data) == 11
