"""The exit-code table is importable where wasmtime is not (Swift's python)."""

import subprocess
import sys

from zerolab.sandbox import executor, status


def test_status_and_the_protocol_load_without_wasmtime():
    code = ("import sys; import zerolab.sandbox.status, zerolab.zerocloud.protocol; "
            "print('wasmtime' in sys.modules, 'zerolab.sandbox.executor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_the_package_still_offers_the_executor_on_demand():
    code = "import sys; from zerolab.sandbox import Executor, OK; print(Executor.__module__, OK, 'wasmtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["zerolab.sandbox.executor", "0", "True"], out.stderr


def test_one_table_for_the_sandbox_and_the_proxy():
    assert executor.TIMEOUT is status.TIMEOUT == 6
    assert status.http_status(status.OK) == 200
    assert status.http_status(status.GUEST_EXIT) == 200
    assert status.http_status(status.TIMEOUT) == 408
    assert status.http_status(status.QUOTA) == 413
    assert status.http_status(status.INVALID_PROGRAM) == 400
    assert status.http_status(status.INTERNAL) == 503
    assert status.http_status(99) == 503
    assert set(status.HTTP_STATUS) <= set(status.EXIT_NAMES)


def test_the_accounting_line_is_zerovms():
    assert status.accounting_line(0.5, 1.25, 3, 100, 2, 40) == "0.50 1.25 3 100 2 40 0 0 0 0"
    assert len(status.NO_ACCOUNTING.split()) == len(status.accounting_line(0, 0, 0, 0, 0, 0).split())
