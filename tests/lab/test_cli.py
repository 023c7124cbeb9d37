"""The lab command's own behaviour that needs no running lab."""

import json
import shutil
import subprocess

import pytest
import yaml

from zerolab.lab import ansible, containers, inventory
from zerolab.lab.steps import LabError, Timeline, shown_timeline

ROOT = inventory.DEFAULT_INVENTORY.parents[2]
needs_podman = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is installed by scripts/bootstrap")


def _inventory_with(tmp_path, host, **changes):
    data = yaml.safe_load(inventory.DEFAULT_INVENTORY.read_text())
    for hosts in (g.get("hosts") or {} for g in data["all"]["children"].values()):
        if host in hosts:
            hosts[host].update(changes)
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@needs_podman
def test_an_address_held_by_the_host_stops_up_naming_the_node(tmp_path):
    broken = inventory.load(_inventory_with(tmp_path, "galera2", ansible_host="127.0.0.1"))
    with pytest.raises(LabError, match=r"galera2: address 127\.0\.0\.1 is already used by host interface lo"):
        containers.check_addresses(broken)


def _lab(*args):
    return subprocess.run([str(ROOT / "scripts" / "lab"), *args], capture_output=True, text=True, timeout=120)


@needs_podman
def test_status_json_lists_every_inventory_node():
    result = _lab("status", "--json")
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    assert [n["name"] for n in nodes] == [m.name for m in inventory.load().machines]
    assert all({"name", "groups", "address", "state"} <= set(n) for n in nodes)


def test_ssh_to_an_unknown_node_is_one_line():
    result = _lab("ssh", "nosuchnode", "--", "true")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "no machine named 'nosuchnode'" in result.stderr and "Traceback" not in result.stderr


def test_a_malformed_inventory_stops_the_lab_command(tmp_path):
    path = _inventory_with(tmp_path, "pxe1", lab_memory="lots")
    result = _lab("--inventory", str(path), "status")
    assert result.returncode == 1
    assert "host 'pxe1': 'lab_memory' must be a positive whole number" in result.stderr


def test_smoke_steps_are_the_tags_of_the_smoke_playbook():
    assert "sandbox" in ansible.smoke_steps()
    assert ansible.smoke_steps() <= set(ansible.SMOKE_STEPS)


def test_a_smoke_step_without_checks_fails_instead_of_passing():
    timeline = Timeline()
    with pytest.raises(LabError, match="smoke nothing: playbooks/smoke.yml has no checks for 'nothing'"):
        timeline.run("smoke: nothing", ansible.missing_step, "nothing")
    assert timeline.rows[-1][:2] == ("smoke: nothing", "FAIL")


def test_a_json_timeline_is_all_that_stdout_carries(capfd):
    def noisy_step():
        print("said by us")
        subprocess.run(["echo", "said by a tool"], check=True)
        return "proved something"

    def failing_step():
        raise LabError("node x: it broke")

    with pytest.raises(LabError), shown_timeline(as_json=True) as timeline:
        timeline.run("noisy", noisy_step)
        timeline.run("failing", failing_step)
    out, err = capfd.readouterr()
    table = json.loads(out)
    assert table["passed"] is False
    assert [(s["step"], s["passed"], s["detail"]) for s in table["steps"]] == \
        [("noisy", True, "proved something"), ("failing", False, "node x: it broke")]
    assert "said by us" in err and "said by a tool" in err


def test_up_and_smoke_take_json():
    for command in ("up", "smoke"):
        result = _lab(command, "--help")
        assert result.returncode == 0 and "--json" in result.stdout


def test_a_limit_with_vagrant_is_refused_in_one_line():
    result = _lab("up", "--vagrant", "--limit", "swift", "--no-smoke")
    assert result.returncode == 1
    # the last line (scripts/lab's bootstrap check prints its own lines first)
    assert result.stderr.strip().splitlines()[-1] == \
        "lab up: up: --limit (swift) is for the container lab; with --vagrant, name the machines: NODE..."
