"""The repository as the Ansible collection zerolab.lab, used as another project would."""

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
PLAYBOOKS = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("collection")
    subprocess.run([BIN / "ansible-galaxy", "collection", "build", "--output-path", out, ROOT],
                   check=True, capture_output=True, cwd=ROOT)
    (tarball,) = out.glob("zerolab-lab-*.tar.gz")
    return tarball


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """The collection installed beside the toolchain's own collections, in a project of its own."""
    project = tmp_path_factory.mktemp("another-project")
    subprocess.run([BIN / "ansible-galaxy", "collection", "install", built, "-p", project / "collections", "--no-deps",
                    # even when another copy is installed where Ansible looks by default
                    "--force"],
                   check=True, capture_output=True, cwd=project)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_COLLECTIONS_PATH": f"{project / 'collections'}:{sysconfig.get_paths()['purelib']}"}
    env.pop("ANSIBLE_CONFIG", None)
    return project, env


def test_the_collection_holds_the_roles_and_what_they_need_and_nothing_of_the_controller(built):
    with tarfile.open(built) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    for role in ROLES:
        assert f"roles/{role}/meta/argument_specs.yml" in names and f"roles/{role}/README.md" in names
    assert {"LICENSE", "meta/runtime.yml", "runtime/pyproject.toml", "scripts/build-guests",
            "src/zerolab/sandbox/wasi.py", "src/zerolab/zerocloud/proxy.py"} <= names
    for name in names:
        top = name.split("/")[0]
        assert top not in {".git", ".venv", ".cache", "build", "tests", "molecule", "benchmarks"}, name
        assert not top.startswith(".") and "__pycache__" not in name, name
        assert not name.startswith(("src/zerolab/lab", "src/zerolab/pxe")), name
    assert (manifest["namespace"], manifest["name"], manifest["license_file"]) == ("zerolab", "lab", "LICENSE")


def test_its_dependencies_are_pinned_for_the_lab_itself():
    # What the collection asks of its users is what the lab is tested with.
    wanted = yaml.safe_load((ROOT / "galaxy.yml").read_text())["dependencies"]
    pinned = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    assert wanted == {name: f">={pinned[name]}" for name in wanted}
    used = {line.strip().lstrip("- ").split(".")[0] + "." + line.strip().lstrip("- ").split(".")[1]
            for path in (ROOT / "roles").rglob("*.yml") for line in path.read_text().splitlines()
            if line.strip().lstrip("- ").startswith(("ansible.posix.", "community.", "containers."))}
    assert used <= set(wanted), f"the roles call {used - set(wanted)}, which galaxy.yml does not declare"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_documents_its_arguments_by_its_collection_name(installed, role):
    project, env = installed
    result = subprocess.run([BIN / "ansible-doc", "-t", "role", f"zerolab.lab.{role}"], capture_output=True,
                            text=True, cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert "ENTRY POINT: *main*" in result.stdout
    options = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    for option in options["argument_specs"]["main"]["options"]:
        # ansible-doc marks a required option with '=', another with '-'.
        assert re.search(rf"^[-=] {option}\b", result.stdout, re.M), option


def test_a_role_runs_from_another_projects_playbook_and_checks_its_input(installed):
    project, env = installed
    (project / "play.yml").write_text("""\
- name: Use a zerolab role from another project
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: zerolab.lab.galera
      vars:
        galera_cluster_group: no_such_group
""")
    result = subprocess.run([BIN / "ansible-playbook", "-i", "localhost,", "play.yml"], capture_output=True,
                            text=True, cwd=project, env=env)
    assert result.returncode != 0
    # The role's own assert answered, before it changed anything.
    assert "is not a host of the group galera_cluster_group 'no_such_group'" in result.stdout
    assert "changed=0" in result.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_each_playbook_runs_by_its_collection_name(installed, playbook):
    project, env = installed
    result = subprocess.run([BIN / "ansible-playbook", "-i", "localhost,", f"zerolab.lab.{playbook}",
                             "--syntax-check"], capture_output=True, text=True, cwd=project, env=env)
    assert result.returncode == 0, result.stderr
