"""The default way to run the lab: one systemd container per inventory host.

Each container runs on the project's own podman networks, at the host's
inventory address, and is reached over SSH as the admin user, exactly as
Ansible reaches bare metal.  Nothing is torn down on failure, so
`scripts/lab ssh NODE` can look at what went wrong.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time

from . import ansible
from .status import print_status
from .steps import ROOT, STATE, LabError, run, script, shown_timeline, which

SSH_KEY = STATE / "id_ed25519"
FACT_CACHE = ROOT / ".cache" / "ansible-facts"   # fact_caching_connection in ansible.cfg
LABEL = "org.zerolab.lab"
LAB_NETWORK = "zerolab"
PROVISIONING_NETWORK = "zerolab-provisioning"


def podman(*args, check=True, input=None, step="podman"):
    return run(["podman", *args], check=check, input=input, step=step)


def container_name(machine):
    return f"zerolab-{machine.name}"


def check_tools():
    missing = [tool for tool in ("podman", "ssh", "ssh-keygen", "ansible-playbook") if not which(tool)]
    if missing:
        raise LabError(f"toolchain: missing {', '.join(missing)}: run scripts/bootstrap (as root)")
    return "podman, ssh, ansible-playbook"


def existing_containers():
    out = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "json").stdout
    return {c["Names"][0]: c for c in json.loads(out or "[]")}


def check_addresses(lab):
    """An address of ours held by a container that is not ours, or by the host."""
    ours = {container_name(m) for m in lab.machines}
    holders = {}
    for line in podman("ps", "-a", "--format", "{{.Names}}").stdout.split():
        if line in ours:
            continue
        info = json.loads(podman("inspect", line, check=False).stdout or "[]")
        for settings in (info[0].get("NetworkSettings", {}).get("Networks") or {}).values() if info else []:
            holders[settings.get("IPAddress")] = f"container {line}"
    for entry in json.loads(run(["ip", "-j", "address"]).stdout):
        for address in entry.get("addr_info", []):
            holders.setdefault(address["local"], f"host interface {entry['ifname']}")
    for machine in lab.machines:
        if machine.address in holders:
            raise LabError(f"{machine.name}: address {machine.address} is already used by "
                           f"{holders[machine.address]}; free it or change {lab.path}")
    return f"{len(lab.machines)} addresses free"


def ensure_network(name, subnet, gateway=None, internal=False):
    found = json.loads(podman("network", "inspect", name, check=False).stdout or "[]")
    if found:
        have = [s["subnet"] for s in found[0].get("subnets", [])]
        if str(subnet) not in have:
            raise LabError(f"networks: podman network '{name}' exists with {have}, not {subnet}; "
                           f"remove it (scripts/lab down) or change the inventory")
        return
    args = ["network", "create", "--subnet", str(subnet)]
    if gateway:
        args += ["--gateway", str(gateway)]
    if internal:
        args += ["--internal", "--disable-dns"]
    podman(*args, name, step="networks")


def networks(lab):
    ensure_network(LAB_NETWORK, ipaddress.ip_network(lab.vars["lab_network"]), lab.vars.get("lab_gateway"))
    if "lab_provisioning_network" in lab.vars:
        ensure_network(PROVISIONING_NETWORK, ipaddress.ip_network(lab.vars["lab_provisioning_network"]), internal=True)
    return f"{LAB_NETWORK}: {lab.vars['lab_network']}"


def ssh_key():
    STATE.mkdir(parents=True, exist_ok=True)
    if not SSH_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zerolab-lab", "-f", str(SSH_KEY)], step="ssh key")
    return SSH_KEY.with_suffix(".pub").read_text().strip()


def start_containers(lab, image):
    existing = existing_containers()
    public_key = ssh_key()
    user = lab.vars.get("ansible_user", "zerolab")
    started = []
    for machine in lab.machines:
        name = container_name(machine)
        if name in existing and existing[name]["State"] == "running":
            continue
        if name in existing:
            podman("start", name, step=f"{machine.name}: start")
        else:
            args = ["run", "-d", "--name", name, "--hostname", machine.name, "--label", f"{LABEL}=1",
                    "--systemd=always", "--memory", f"{machine.memory}m",
                    # Fixed interface names: podman does not promise an order.
                    "--network", f"{LAB_NETWORK}:ip={machine.address},interface_name=eth0"]
            if machine.vars.get("lab_provisioning_address"):
                args += ["--network",
                         f"{PROVISIONING_NETWORK}:ip={machine.vars['lab_provisioning_address']},interface_name=eth1"]
            for capability in machine.vars.get("lab_container_capabilities", []):
                args += ["--cap-add", capability]
            podman(*args, image, "/sbin/init", step=f"{machine.name}: create container")
        # The admin user's key, so that Ansible and `lab ssh` log in as on bare metal.
        podman("exec", "-i", name, "sh", "-c",
               f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh && "
               f"cat > /home/{user}/.ssh/authorized_keys && chown {user}: /home/{user}/.ssh/authorized_keys && "
               f"chmod 0600 /home/{user}/.ssh/authorized_keys",
               input=public_key + "\n", step=f"{machine.name}: authorize the lab's SSH key")
        started.append(machine.name)
    return f"started {', '.join(started)}" if started else "all running"


def ssh_argv(lab, machine, tty=False):
    user = lab.vars.get("ansible_user", "zerolab")
    return ["ssh", "-i", str(SSH_KEY), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            *(["-t"] if tty else []), f"{user}@{machine.address}"]


def wait_for_ssh(lab, deadline_seconds=90):
    for machine in lab.machines:
        deadline = time.monotonic() + deadline_seconds
        while True:
            if run([*ssh_argv(lab, machine), "true"], check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{machine.name}: does not answer SSH at {machine.address}:22 after "
                               f"{deadline_seconds} s; look with `podman logs {container_name(machine)}`")
            time.sleep(1)
    return f"{len(lab.machines)} nodes answer"


def ansible_playbook(lab, path, *, step, tags=None, limit=None):
    # The lab's key, so that Ansible logs in as the admin user, as on bare metal;
    # it is also the admin's key on the machines the pxe node installs (an
    # install nobody can log into is refused), unless the inventory names keys.
    extravars: dict[str, object] = {"ansible_ssh_private_key_file": str(SSH_KEY)}
    if "common_admin_authorized_keys" not in lab.vars:
        extravars["common_admin_authorized_keys"] = [ssh_key()]
    return ansible.playbook(lab.path, path, extravars=extravars, tags=tags, limit=limit, step=step)


def smoke(lab, timeline):
    have = ansible.smoke_steps()
    for step in ansible.SMOKE_STEPS:
        if step not in have:
            timeline.run(f"smoke: {step}", ansible.missing_step, step)
            continue
        timeline.run(f"smoke: {step}", ansible_playbook, lab, "playbooks/smoke.yml", tags=step, step=f"smoke {step}")


def up(args, lab):
    if args.nodes:
        raise LabError(f"up: NODE names ({' '.join(args.nodes)}) are for --vagrant; the container lab is all nodes")
    with shown_timeline(args.json) as timeline:
        timeline.run("toolchain", check_tools)
        image = timeline.run("node image", script, "build-image", "node image")
        timeline.run("addresses", check_addresses, lab)
        timeline.run("networks", networks, lab)
        timeline.run("containers", start_containers, lab, image)
        timeline.run("ssh", wait_for_ssh, lab)
        timeline.run("converge site.yml", ansible_playbook, lab, "site.yml", step="converge site.yml",
                     limit=args.limit)
        if not args.no_smoke:
            smoke(lab, timeline)
    return 0


def down(args, lab):
    names = list(existing_containers())
    if names:
        podman("rm", "-f", "-t", "5", *names, step="down")
    for network in (PROVISIONING_NETWORK, LAB_NETWORK):
        podman("network", "rm", "-f", network, check=False)
    # Facts cached for these machines describe containers that are gone.
    for machine in lab.machines:
        (FACT_CACHE / machine.name).unlink(missing_ok=True)
    print(f"removed {len(names)} containers and the lab networks")
    return 0


def status(args, lab):
    containers = existing_containers()
    states = {m.name: containers[container_name(m)]["State"] for m in lab.machines if container_name(m) in containers}
    return print_status(lab, states, args.json)


def ssh(args, lab):
    machine = lab.machine(args.node)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = ssh_argv(lab, machine, tty=not command and sys.stdin.isatty())
    # Like ssh itself: the words are joined into one remote shell command.
    return subprocess.call([*argv, *([" ".join(command)] if command else [])])


def smoke_command(args, lab):
    with shown_timeline(args.json) as timeline:
        smoke(lab, timeline)
    return 0
