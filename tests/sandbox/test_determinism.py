"""Same manifest + same inputs -> byte-identical outputs, run after run: the
guest's clock is virtual and its randomness is seeded from the job."""

from .conftest import job, python_job

PY = ("import time, random, os, uuid\n"
      "print(time.time(), time.monotonic(), time.perf_counter())\n"
      "print(random.random(), os.urandom(8).hex(), uuid.uuid4())\n"
      "print(hash('salted by PYTHONHASHSEED'), id(object()) % 1000)\n"
      "t = time.time(); time.sleep(5); print(round(time.time() - t))\n")


def test_python_time_and_random_are_reproducible(executor, python_image):
    outputs = {executor.run(python_job(python_image, PY), stdin=b"").stdout for _ in range(10)}
    assert len(outputs) == 1
    out = outputs.pop().decode()
    assert out.startswith("1370908800.0"), out        # 2013-06-11: the virtual epoch
    assert out.splitlines()[-1] == "5"               # sleep() advanced the virtual clock, not ours


def test_seed_depends_on_the_job(executor, python_image):
    a = executor.run(python_job(python_image, PY), stdin=b"").stdout
    b = executor.run(python_job(python_image, PY + "#other job\n"), stdin=b"").stdout
    assert a.splitlines()[1] != b.splitlines()[1]


def test_c_guest_outputs_identical(executor, guests):
    text = b"to be or not to be\n" * 100
    outs = {executor.run(job(guests / "wordcount.wasm"), stdin=text).stdout for _ in range(10)}
    assert outs == {b"be 200\nnot 100\nor 100\nto 200\n"}


def test_a_fresh_executor_gives_the_same_bytes(executor, python_image, tmp_path):
    # inode numbers, directory order, clock and randomness must not depend on
    # what this process ran before: a new Executor indexes the image anew (its
    # cache dir only gets the compiled modules, to spare a 2-second compile)
    import shutil

    from zerolab.sandbox import Executor

    from .conftest import CACHE
    for cwasm in CACHE.glob("*.cwasm"):
        shutil.copy(cwasm, tmp_path)
    code = PY + ("import os\n"
                 "print([os.stat(p).st_ino for p in ('/dev/stdin', '/lib/python3.11/os.py', '/dev', '/')])\n"
                 "print(os.listdir('/lib/python3.11')[:5], os.stat('/dev/stdin').st_mtime)\n")
    first = executor.run(python_job(python_image, code), stdin=b"")
    fresh = Executor(cache_dir=str(tmp_path))
    try:
        second = fresh.run(python_job(python_image, code), stdin=b"")
    finally:
        fresh.close()
    assert first.exit_code == 0, first.stderr
    assert first.stdout == second.stdout
