"""ansible.playbook: the lab's one way to run a playbook, with real Ansible on localhost."""

import pytest

from zerolab.lab import ansible
from zerolab.lab.steps import LabError

INVENTORY = """\
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

PLAYBOOK = """\
- name: A tiny play
  hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.debug:
        msg: hello from the tiny play
    - name: Change something
      ansible.builtin.command: "true"
      changed_when: true
    - name: Only for the tagged run
      ansible.builtin.command: "false"
      tags: [never, broken]   # only when asked for
"""


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    return tmp_path


def test_a_playbook_run_shows_progress_counts_changes_and_keeps_a_log(workdir, capsys):
    (workdir / "tiny.yml").write_text(PLAYBOOK)
    detail = ansible.playbook(workdir / "hosts.yml", workdir / "tiny.yml", step="tiny",
                              extravars={"unused_var": "a value with spaces"}, state=workdir / "state")
    assert detail == "changed=1"
    progress = capsys.readouterr().err.splitlines()
    assert progress == ["    PLAY [A tiny play]", "    TASK [Say hello]", "    TASK [Change something]"]
    log = (workdir / "state" / "tiny.log").read_text()
    assert "hello from the tiny play" in log and "PLAY RECAP" in log
    assert "\x1b[" not in log and "\r" not in log
    # ansible-runner's private data went with the run.
    assert [p.name for p in (workdir / "state").iterdir()] == ["tiny.log"]


def test_tags_select_tasks(workdir):
    (workdir / "tiny.yml").write_text(PLAYBOOK)
    with pytest.raises(LabError, match=r"^tagged: localhost failed at TASK \[Only for the tagged run\]"):
        ansible.playbook(workdir / "hosts.yml", workdir / "tiny.yml", step="tagged", tags="broken",
                         state=workdir / "state")


def test_a_limit_converges_only_the_nodes_it_names(workdir):
    (workdir / "hosts.yml").write_text(INVENTORY.replace("  hosts:\n", "  hosts:\n    elsewhere:\n      ansible_host: 192.0.2.1\n"))
    (workdir / "tiny.yml").write_text(PLAYBOOK)
    # Without the limit, the unreachable host would fail the run.
    assert ansible.playbook(workdir / "hosts.yml", workdir / "tiny.yml", step="limited", limit="localhost",
                            state=workdir / "state") == "changed=1"


def test_a_failed_task_is_named_with_its_host(workdir, capsys):
    (workdir / "fails.yml").write_text(PLAYBOOK.replace("tags: [never, broken]", "tags: [always]"))
    with pytest.raises(LabError) as raised:
        ansible.playbook(workdir / "hosts.yml", workdir / "fails.yml", step="converge fails.yml",
                         state=workdir / "state")
    message = str(raised.value)
    # with the task's own message, which may be all a CI log's tail shows
    assert message.startswith("converge fails.yml: localhost failed at TASK [Only for the tagged run] "
                              "(non-zero return code); see ")
    assert message.endswith("look with `scripts/lab ssh localhost`")
    assert "\n" not in message
    assert "TASK [Only for the tagged run]" in capsys.readouterr().err
    assert "fatal: [localhost]" in (workdir / "state" / "fails.log").read_text()


def test_what_a_play_says_it_proved_is_the_steps_detail(workdir):
    (workdir / "proves.yml").write_text(PLAYBOOK + """\
    - name: Say what was proved
      ansible.builtin.set_stats:
        data:
          zerolab_proved: "the tiny play ran {{ 2 + 1 }} tasks"
        per_host: false
        aggregate: false
""")
    detail = ansible.playbook(workdir / "hosts.yml", workdir / "proves.yml", step="proves", state=workdir / "state")
    assert detail == "the tiny play ran 3 tasks"


def test_every_smoke_play_says_what_it_proved():
    # The lab's table shows it (the lab scenario checks the words); a step
    # that forgot would fall back to changed=N.
    import yaml

    plays = yaml.safe_load((ansible.ROOT / "playbooks" / "smoke.yml").read_text())
    for step in ansible.SMOKE_STEPS:
        last = [play for play in plays if step in play.get("tags", [])][-1]
        tasks = [t for task in last["tasks"] for t in [task, *task.get("block", [])]]
        said = [t["ansible.builtin.set_stats"]["data"] for t in tasks if "ansible.builtin.set_stats" in t]
        assert said and ansible.PROVED_STAT in said[-1], f"the last {step} play sets no {ansible.PROVED_STAT}"
