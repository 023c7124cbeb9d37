"""Running ansible-playbook for the lab, and what the smoke job's steps are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .steps import ROOT, STATE, LabError

SMOKE_STEPS = ("sandbox", "swift", "galera", "pxe")


def environment(**extra):
    """The environment every ansible-playbook of the lab runs in: the project's ansible.cfg."""
    return {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **extra}


def playbook(inventory_path, path, *extra, step):
    """Run a playbook, show its play and task names as they start, keep the rest in a log."""
    argv = ["ansible-playbook", "-i", str(inventory_path), str(ROOT / path), *extra]
    STATE.mkdir(parents=True, exist_ok=True)
    log = STATE / f"{Path(path).stem}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=environment(), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        recap, failed_task = {}, ""
        for line in process.stdout:
            out.write(line)
            if line.startswith(("PLAY [", "TASK [")):
                print("    " + line.split("*")[0].strip(), file=sys.stderr, flush=True)
                failed_task = line.split("*")[0].strip()
            elif ": ok=" in line:
                host, counts = line.split(":", 1)
                recap[host.strip()] = dict(kv.split("=") for kv in counts.split())
        process.wait()
    if process.returncode != 0:
        bad = [h for h, c in recap.items() if int(c.get("failed", 0)) or int(c.get("unreachable", 0))]
        raise LabError(f"{step}: {', '.join(bad) or 'a node'} failed at {failed_task or 'start'}; "
                       f"see {log.relative_to(ROOT)}, look with `scripts/lab ssh {bad[0] if bad else 'NODE'}`")
    changed = sum(int(c.get("changed", 0)) for c in recap.values())
    return f"changed={changed}"


def smoke_steps():
    """The steps that playbooks/smoke.yml really has checks for."""
    import yaml

    plays = yaml.safe_load((ROOT / "playbooks" / "smoke.yml").read_text()) or []
    return {tag for play in plays for tag in play.get("tags", [])}


def missing_step(step):
    # A step with no checks must not pass by running nothing.
    raise LabError(f"smoke {step}: playbooks/smoke.yml has no checks for '{step}' yet")
