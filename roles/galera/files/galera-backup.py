#!/usr/bin/python3
"""Full backup of this Galera node with mariabackup, prepared and ready to restore.

Each run writes <dir>/<UTC time>.partial, prepares it, and renames it to
<dir>/<UTC time> only when both steps succeeded, so a folder without the
suffix is always a complete, consistent backup (restore it with
playbooks/galera_restore.yml).  Then it keeps the newest --keep backups and
removes the others and any partial leftovers.  Two runs never overlap (a lock
in <dir>).  Runs as root: mariabackup logs in through the unix socket.
"""
from __future__ import annotations

import argparse
import fcntl
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# A complete backup's folder name: its UTC start time.
COMPLETE = re.compile(r"^\d{8}T\d{6}Z$")


def backups(folder: Path) -> list[Path]:
    """Complete backups, oldest first."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and COMPLETE.match(p.name))


def prune(folder: Path, keep: int) -> list[Path]:
    """Remove partial leftovers and all but the newest `keep` backups; the removed."""
    complete = backups(folder)
    doomed = [p for p in folder.iterdir() if p.is_dir() and p.name.endswith(".partial")]
    doomed += complete[:-keep] if keep > 0 else complete
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def mariabackup(*args: str) -> None:
    result = subprocess.run(["mariabackup", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise RuntimeError(f"mariabackup {args[0]} failed: {last}")


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(folder: Path, keep: int, socket: str) -> str:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(folder / ".lock", "w", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another backup is running (lock {folder / '.lock'})") from None
        prune(folder, keep=len(backups(folder)))   # partial leftovers of a crashed run only
        started = time.monotonic()
        name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        work = folder / f"{name}.partial"
        try:
            # --galera-info: the cluster position, for a node seeded from it.
            mariabackup("--backup", "--galera-info", f"--socket={socket}", "--user=root", f"--target-dir={work}")
            mariabackup("--prepare", f"--target-dir={work}")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        done = work.rename(folder / name)
        removed = prune(folder, keep)
        return (f"backup {done} complete: {size_of(done) / 1e6:.1f} MB in {time.monotonic() - started:.1f} s; "
                f"kept {len(backups(folder))}, removed {len(removed)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/backups/galera"), help="where backups are kept")
    parser.add_argument("--keep", type=int, default=7, help="how many complete backups to keep (>= 1)")
    parser.add_argument("--socket", default="/run/mysqld/mysqld.sock")
    args = parser.parse_args()
    if args.keep < 1:
        parser.error("--keep must be 1 or more")
    try:
        print(run(args.dir, args.keep, args.socket))
    except (RuntimeError, OSError) as error:
        print(f"galera-backup: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
