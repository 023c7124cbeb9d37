"""What every step of the lab shares, whichever way (containers or Vagrant) runs it.

A step is a function that returns one line of detail or raises LabError with
one line for the user; Timeline runs steps and prints the table `up` and
`smoke` end with.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
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

    def as_json(self):
        """The table as one JSON document: each step, whether all passed, the total time."""
        steps = [{"step": name, "passed": verdict == "pass", "seconds": round(seconds, 1), "detail": detail}
                 for name, verdict, seconds, detail in self.rows]
        return json.dumps({"passed": all(step["passed"] for step in steps), "steps": steps,
                           "seconds": round(time.monotonic() - self.started, 1)}, indent=2)


@contextmanager
def shown_timeline(as_json: bool = False) -> Iterator[Timeline]:
    """A Timeline for a command's steps, printed when they end (failed or not).

    With as_json, standard output carries the JSON document and nothing else:
    while the steps run, whatever writes to it (ours, podman's, Vagrant's) goes
    to standard error with the progress.
    """
    timeline = Timeline()
    if not as_json:
        try:
            yield timeline
        finally:
            timeline.print()
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)                   # subprocesses' output
    try:
        with redirect_stdout(sys.stderr):   # ours
            yield timeline
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        print(timeline.as_json(), flush=True)


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
