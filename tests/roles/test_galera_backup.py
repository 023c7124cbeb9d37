"""The Galera backup program (roles/galera/files/galera-backup.py) with a
stand-in for mariabackup on PATH: naming, retention, the lock, and that a
failed run leaves no folder that looks complete.  The real mariabackup runs
in the galera scenario (backup, more writes, restore, row counts compared)."""

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import load_role_file

backup = load_role_file("galera", "galera-backup.py")
SCRIPT = backup.__file__

# A mariabackup that writes a file into --target-dir for --backup, marks it
# prepared for --prepare (as mariabackup 10.11 says it: log-applied), and fails when told to (FAIL_AT=backup|prepare).
FAKE = """#!/bin/sh
target=""
for arg in "$@"; do case "$arg" in --target-dir=*) target="${arg#--target-dir=}";; esac; done
case "$1" in
--backup) [ "$FAIL_AT" = backup ] && { echo "mariabackup: lost connection" >&2; exit 1; }
          mkdir -p "$target" && echo data > "$target/ibdata1" && echo "backup_type = full-backuped" > "$target/xtrabackup_checkpoints";;
--prepare) [ "$FAIL_AT" = prepare ] && { echo "mariabackup: prepare failed" >&2; exit 1; }
          echo "backup_type = log-applied" > "$target/xtrabackup_checkpoints";;
esac
"""


@pytest.fixture
def fake_mariabackup(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "mariabackup"
    program.write_text(FAKE)
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FAIL_AT", raising=False)
    return program


def run(folder: Path, *args: str, fail_at: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAIL_AT": fail_at}
    return subprocess.run([sys.executable, str(SCRIPT), "--dir", str(folder), *args],
                          capture_output=True, text=True, env=env, check=False)


def test_a_run_leaves_one_complete_prepared_backup_named_by_its_time(tmp_path, fake_mariabackup):
    folder = tmp_path / "backups"
    result = run(folder)
    assert result.returncode == 0, result.stderr
    [done] = backup.backups(folder)
    assert backup.COMPLETE.match(done.name)
    assert (done / "xtrabackup_checkpoints").read_text().strip() == "backup_type = log-applied"
    assert f"backup {done} complete" in result.stdout
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("fail_at", ["backup", "prepare"])
def test_a_failed_run_leaves_nothing_that_looks_complete(tmp_path, fake_mariabackup, fail_at):
    folder = tmp_path / "backups"
    result = run(folder, fail_at=fail_at)
    assert result.returncode == 1
    assert result.stderr.startswith(f"galera-backup: mariabackup --{fail_at} failed: mariabackup:")
    assert "Traceback" not in result.stderr
    assert [p.name for p in folder.iterdir() if p.name != ".lock"] == []


def test_retention_keeps_the_newest_and_removes_partial_leftovers(tmp_path):
    folder = tmp_path
    for name in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z", "20260104T000000Z"):
        (folder / name).mkdir()
    (folder / "20260105T000000Z.partial").mkdir()
    (folder / "not-a-backup").mkdir()   # someone else's folder: never touched
    removed = backup.prune(folder, keep=2)
    assert sorted(p.name for p in removed) == ["20260101T000000Z", "20260102T000000Z", "20260105T000000Z.partial"]
    assert sorted(p.name for p in folder.iterdir()) == ["20260103T000000Z", "20260104T000000Z", "not-a-backup"]


def test_a_second_run_while_one_holds_the_lock_is_refused(tmp_path, fake_mariabackup):
    folder = tmp_path / "backups"
    folder.mkdir()
    with open(folder / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run(folder)
    assert result.returncode == 1
    assert "another backup is running" in result.stderr
    assert backup.backups(folder) == []


def test_keep_below_one_is_refused(tmp_path):
    result = run(tmp_path, "--keep", "0")
    assert result.returncode == 2
    assert "--keep must be 1 or more" in result.stderr
