"""The wheel roles/sandbox installs on every node: the runtime, and nothing of the controller."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("zerolab/sandbox/", "zerolab/zerocloud/")
CONTROLLER = ("zerolab/lab/", "zerolab/pxe/")


def build_task_argv() -> list[str]:
    """The argv of roles/sandbox's wheel build, so that the test builds what the role builds."""
    tasks = yaml.safe_load((ROOT / "roles" / "sandbox" / "tasks" / "build.yml").read_text())
    (task,) = [t for t in tasks if "wheel" in t.get("ansible.builtin.command", {}).get("argv", [])]
    return task["ansible.builtin.command"]["argv"]


def build(project: Path, wheelhouse: Path) -> Path:
    argv = [word.replace("{{ ansible_playbook_python }}", sys.executable)
                .replace("{{ sandbox_build_dir }}", str(wheelhouse.parent))
                .replace("{{ sandbox_project_dir }}", str(project)) for word in build_task_argv()]
    assert str(wheelhouse) in argv and not any("{{" in word for word in argv), argv
    subprocess.run(argv, check=True, env=dict(os.environ, SOURCE_DATE_EPOCH="315532800"), timeout=300)
    (wheel,) = wheelhouse.glob("zerolab-*.whl")
    return wheel


def copy_project(destination: Path) -> Path:
    # A copy, so that the build's own files (build/, egg-info) stay out of the work tree.
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("src", "runtime"):
        shutil.copytree(ROOT / folder, destination / folder, ignore=ignore)
    return destination


def test_the_node_wheel_holds_the_runtime_and_nothing_of_the_controller(tmp_path):
    project = copy_project(tmp_path / "project")
    wheel = build(project, tmp_path / "first" / "wheelhouse")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    code = [n for n in names if ".dist-info/" not in n]
    assert "zerolab/__init__.py" in code
    assert not [n for n in code if n.startswith(CONTROLLER)]
    assert sorted(n for n in code if n != "zerolab/__init__.py" and not n.startswith(RUNTIME)) == []
    runtime_sources = {p.relative_to(ROOT / "src").as_posix() for folder in RUNTIME
                       for p in (ROOT / "src" / folder).rglob("*.py")}
    assert runtime_sources <= set(code)
    assert "zvsh = zerolab.sandbox.zvsh:main" in entry_points
    assert "zerovm = zerolab.sandbox.zerovm:main" in entry_points

    # Controller code changes; the node's wheel does not, so nothing on the node restarts.
    cli = project / "src" / "zerolab" / "lab" / "cli.py"
    cli.write_text(cli.read_text() + "\n# a controller-only change\n")
    again = build(project, tmp_path / "second" / "wheelhouse")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(wheel.read_bytes()).digest()


def test_the_runtime_distribution_keeps_in_step_with_the_project():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())["project"]
    assert runtime["name"] == project["name"] and runtime["version"] == project["version"]
    # The node's commands are the project's; the project also has the
    # client's (zerolab-app), which never runs on a node.
    assert set(runtime["scripts"].items()) <= set(project["scripts"].items())
    assert set(project["scripts"]) - set(runtime["scripts"]) == {"zerolab-app"}
    assert set(runtime["dependencies"]) <= set(project["dependencies"])
