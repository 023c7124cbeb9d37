"""Running ansible-playbook for the lab, and what the smoke job's steps are."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .steps import ROOT, STATE, LabError

SMOKE_STEPS = ("sandbox", "swift", "galera", "pxe")
# A play says what it proved, for the step's line in the lab's table, with
#   ansible.builtin.set_stats: {data: {zerolab_proved: "..."}, per_host: false, aggregate: false}
PROVED_STAT = "zerolab_proved"


def environment(**extra: str) -> dict[str, str]:
    """The environment every ansible-playbook of the lab runs in: the project's ansible.cfg."""
    # The Ansible next to this interpreter (the .venv toolchain), even when the
    # caller's PATH does not have it, as under pytest.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **extra}


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


@contextmanager
def _interruptible() -> Iterator[Callable[[], bool]]:
    """Ctrl-C cancels the run through ansible-runner, and is ours again afterwards.

    Left to itself, ansible-runner installs SIGINT/SIGTERM handlers for good,
    and the lab command's own KeyboardInterrupt would never come again.
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted.is_set    # only the main thread gets signals
        return
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        yield interrupted.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _first_line(result: Any, limit: int = 300) -> str:
    """The first line of what a failed task said: its msg, else its stderr."""
    if not isinstance(result, dict):
        return ""
    for key in ("msg", "stderr", "stdout"):
        text = result.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip().splitlines()[0][:limit]
    return ""


class _Progress:
    """What the event stream tells: play and task names as they start, and where hosts failed."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.tasks: dict[str, str] = {}         # task uuid -> "TASK [role : name]", as Ansible prints it
        self.last = ""                          # the play or task that started last
        self.failed_at: dict[str, str] = {}     # host -> the task it last failed at
        self.failed_why: dict[str, str] = {}    # host -> the first line of that failure's message
        self.custom_stats: dict[str, Any] = {}  # what the plays said with set_stats (per_host: false)

    def __call__(self, event: dict[str, Any]) -> bool:
        # The events' stdout, in order, is Ansible's own output; \r\n is the pty's.
        if event.get("stdout"):
            self.log.write(event["stdout"].replace("\r\n", "\n") + "\n")
        data = event.get("event_data") or {}
        kind = event.get("event")
        if kind == "playbook_on_play_start":
            self.started(f"PLAY [{data.get('name') or data.get('play', '')}]")
        elif kind == "playbook_on_task_start":
            self.tasks[data.get("task_uuid", "")] = f"TASK [{data.get('name') or data.get('task', '')}]"
            self.started(self.tasks[data.get("task_uuid", "")])
        elif (kind == "runner_on_failed" and not data.get("ignore_errors")) or kind == "runner_on_unreachable":
            host = data.get("host", "")
            self.failed_at[host] = self.tasks.get(data.get("task_uuid", ""), self.last)
            self.failed_why[host] = _first_line(data.get("res"))
        elif kind == "playbook_on_stats":
            self.custom_stats = dict(data.get("artifact_data") or {})
        # Kept in the artifacts: runner.stats is read from there.
        return True

    def started(self, name: str) -> None:
        print("    " + name, file=sys.stderr, flush=True)
        self.last = name


def playbook(inventory_path: Path | str, path: Path | str, *, step: str, extravars: Mapping[str, Any] | None = None,
             tags: str | None = None, limit: str | None = None, env: Mapping[str, str] | None = None,
             log_name: str | None = None, ssh: str = "scripts/lab ssh", state: Path = STATE) -> str:
    """Run a playbook, show its play and task names as they start, keep the rest in a log.

    Returns what the playbook says it proved (`set_stats` of PROVED_STAT, as
    the smoke job's plays end), else `changed=N` over all hosts; a failure is a
    LabError naming the host and the task.  `ssh` is the command that reaches
    a node, for that message.
    """
    try:
        import ansible_runner
    except ImportError:
        raise LabError(f"{step}: ansible-runner is missing from the toolchain: run scripts/bootstrap") from None

    state.mkdir(parents=True, exist_ok=True)
    log = state / f"{log_name or Path(path).stem}.log"
    with open(log, "w") as out, tempfile.TemporaryDirectory(prefix="ansible-runner-", dir=state) as private, \
            _interruptible() as cancelled:
        progress = _Progress(out)
        runner = ansible_runner.run(
            private_data_dir=private,
            # ansible-playbook runs in the project, as from a shell in it.
            project_dir=str(ROOT),
            playbook=str(ROOT / path),
            # An existing path is passed on as `-i PATH`, not copied.
            inventory=str(Path(inventory_path).resolve()),
            extravars=dict(extravars or {}),
            tags=tags,
            limit=limit,
            # ansible.cfg's fact cache, not one in ansible-runner's artifacts.
            fact_cache_type=None,
            # A log to read, not to replay on a terminal.
            envvars={**(env or environment()), "ANSIBLE_NOCOLOR": "1"},
            # The environment (ours, with anything secret in it) is not written to disk.
            suppress_env_files=True,
            quiet=True,
            event_handler=progress,
            cancel_callback=cancelled,
        )
        # The recap's counts, read from the artifacts before they go.
        stats = runner.stats or {}
    if runner.status == "canceled":
        raise KeyboardInterrupt
    if runner.rc != 0:
        # The recap's hosts: a failure that a rescue block handled is not one.
        bad = sorted({h for kind in ("failures", "dark") for h, n in stats.get(kind, {}).items() if n}) \
            or sorted(progress.failed_at)
        where = progress.failed_at.get(bad[0], progress.last) if bad else progress.last
        # The message too: a CI log's tail may be all that a reader has.
        why = progress.failed_why.get(bad[0], "") if bad else ""
        raise LabError(f"{step}: {', '.join(bad) or 'a node'} failed at {where or 'start'}"
                       f"{f' ({why})' if why else ''}; "
                       f"see {_shown(log)}, look with `{ssh} {bad[0] if bad else 'NODE'}`")
    proved = progress.custom_stats.get(PROVED_STAT)
    if isinstance(proved, str) and proved.strip():
        return " ".join(proved.split())
    return f"changed={sum(stats.get('changed', {}).values())}"


def smoke_steps() -> set[str]:
    """The steps that playbooks/smoke.yml really has checks for."""
    import yaml

    plays = yaml.safe_load((ROOT / "playbooks" / "smoke.yml").read_text()) or []
    return {tag for play in plays for tag in play.get("tags", [])}


def missing_step(step: str) -> None:
    # A step with no checks must not pass by running nothing.
    raise LabError(f"smoke {step}: playbooks/smoke.yml has no checks for '{step}' yet")
