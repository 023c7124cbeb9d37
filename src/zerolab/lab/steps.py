"""What every step of the lab shares, whichever way (containers or Vagrant) runs it.

A step is a function that returns one line of detail or raises LabError with
one line for the user; Timeline runs steps and prints the table `up` and
`smoke` end with.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STATE = ROOT / ".cache" / "lab"


class LabError(Exception):
    """One line for the user: which node, which step, what to do."""


@dataclass
class Timeline:
    """The table `up` and `smoke` end with: each step, pass or fail, its time."""

    rows: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def run(self, name, action, *args, **kwargs):
        print(f"==> {name}", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            detail = action(*args, **kwargs)
        except LabError as error:
            self.rows.append((name, "FAIL", time.monotonic() - began, str(error)))
            raise
        self.rows.append((name, "pass", time.monotonic() - began, detail or ""))
        return detail

    def print(self):
        width = max((len(r[0]) for r in self.rows), default=10)
        print()
        for name, verdict, seconds, detail in self.rows:
            print(f"  {name:<{width}}  {verdict:4}  {seconds:7.1f} s  {detail}")
        print(f"  {'total':<{width}}        {time.monotonic() - self.started:7.1f} s")


def run(argv, *, check=True, capture=True, input=None, step=""):
    result = subprocess.run(argv, text=True, input=input,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        last = ((result.stderr or "").strip().splitlines() or ["(no output)"])[-1]
        raise LabError(f"{step or argv[0]}: `{shlex.join(argv[:4])} ...` failed: {last}")
    return result


def script(name, step):
    result = subprocess.run([str(ROOT / "scripts" / name)], text=True, stdout=subprocess.PIPE)
    if result.returncode != 0:
        raise LabError(f"{step}: scripts/{name} failed (its message is above)")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def which(tool):
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))
