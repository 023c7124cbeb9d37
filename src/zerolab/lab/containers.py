"""scripts/lab: bring the whole lab up as one thing, and prove it.

    scripts/lab up [--no-smoke]    containers (or --vagrant VMs), site.yml over SSH, smoke job
    scripts/lab status [--json]    each node: name, groups, address, state
    scripts/lab ssh NODE [-- CMD]  a shell on a node, or one command (its exit status is ours)
    scripts/lab smoke              the end-to-end smoke job, step by step
    scripts/lab down               remove the lab's containers and networks
    ... up|status|down --vagrant   the same lab as Vagrant VMs (see vagrantlab.py)

The default way runs one systemd container per inventory host on the
project's own podman networks, at the host's inventory address, and reaches
it over SSH as the admin user, exactly as Ansible reaches bare metal.  Every
failure is one line naming the node and the step; nothing is torn down on
failure, so `scripts/lab ssh NODE` can look at what went wrong.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import inventory

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cache" / "lab"
SSH_KEY = STATE / "id_ed25519"
FACT_CACHE = ROOT / ".cache" / "ansible-facts"   # fact_caching_connection in ansible.cfg
LABEL = "org.zerolab.lab"
LAB_NETWORK = "zerolab"
PROVISIONING_NETWORK = "zerolab-provisioning"
SMOKE_STEPS = ("sandbox", "swift", "galera", "pxe")


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


# --- small helpers -----------------------------------------------------------

def run(argv, *, check=True, capture=True, input=None, step=""):
    result = subprocess.run(argv, text=True, input=input,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        last = ((result.stderr or "").strip().splitlines() or ["(no output)"])[-1]
        raise LabError(f"{step or argv[0]}: `{shlex.join(argv[:4])} ...` failed: {last}")
    return result


def podman(*args, check=True, input=None, step="podman"):
    return run(["podman", *args], check=check, input=input, step=step)


def container_name(machine):
    return f"zerolab-{machine.name}"


def script(name, step):
    result = subprocess.run([str(ROOT / "scripts" / name)], text=True, stdout=subprocess.PIPE)
    if result.returncode != 0:
        raise LabError(f"{step}: scripts/{name} failed (its message is above)")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


# --- the container lab ---------------------------------------------------------

def check_tools():
    missing = [tool for tool in ("podman", "ssh", "ssh-keygen", "ansible-playbook") if not _which(tool)]
    if missing:
        raise LabError(f"toolchain: missing {', '.join(missing)}: run scripts/bootstrap (as root)")
    return "podman, ssh, ansible-playbook"


def _which(tool):
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


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


def ansible_playbook(lab, playbook, *extra, step):
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    argv = ["ansible-playbook", "-i", str(lab.path), str(ROOT / playbook),
            "-e", f"ansible_ssh_private_key_file={SSH_KEY}", *extra]
    log = STATE / f"{Path(playbook).stem}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        recap, failed_task = {}, ""
        for line in process.stdout:
            out.write(line)
            # Progress: the play and task names as they start; the rest goes to the log.
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


def smoke(lab, timeline):
    have = smoke_steps()
    for step in SMOKE_STEPS:
        if step not in have:
            # A step with no checks must not pass by running nothing.
            timeline.run(f"smoke: {step}", _missing_step, step)
            continue
        timeline.run(f"smoke: {step}", ansible_playbook, lab, "playbooks/smoke.yml", "--tags", step,
                     step=f"smoke {step}")


def _missing_step(step):
    raise LabError(f"smoke {step}: playbooks/smoke.yml has no checks for '{step}' yet")


def up(args, lab):
    if args.vagrant:
        from . import vagrantlab
        return vagrantlab.up(args, lab)
    if args.nodes:
        raise LabError(f"up: NODE names ({' '.join(args.nodes)}) are for --vagrant; the container lab is all nodes")
    timeline = Timeline()
    try:
        timeline.run("toolchain", check_tools)
        image = timeline.run("node image", script, "build-image", "node image")
        timeline.run("addresses", check_addresses, lab)
        timeline.run("networks", networks, lab)
        timeline.run("containers", start_containers, lab, image)
        timeline.run("ssh", wait_for_ssh, lab)
        timeline.run("converge site.yml", ansible_playbook, lab, "site.yml", step="converge site.yml")
        if not args.no_smoke:
            smoke(lab, timeline)
    finally:
        timeline.print()
    return 0


def down(args, lab):
    if args.vagrant:
        from . import vagrantlab
        return vagrantlab.down(args, lab)
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
    if args.vagrant:
        from . import vagrantlab
        return vagrantlab.status(args, lab)
    containers = existing_containers()
    states = {m.name: containers[container_name(m)]["State"] for m in lab.machines if container_name(m) in containers}
    return print_status(lab, states, args.json)


def print_status(lab, states, as_json):
    """Each node's name, groups, address and state (from `states`, by name)."""
    nodes = []
    for machine in lab.machines:
        state = states.get(machine.name) or "absent"
        if state == "running":
            state = "running, ssh ok" if _ssh_port_open(machine.address) else "running, no ssh"
        nodes.append({"name": machine.name, "groups": machine.groups, "address": machine.address, "state": state})
    if as_json:
        print(json.dumps(nodes, indent=2))
    else:
        for node in nodes:
            print(f"{node['name']:10} {node['address']:15} {','.join(node['groups']):10} {node['state']}")
    return 0


def _ssh_port_open(address):
    try:
        with socket.create_connection((address, 22), timeout=1):
            return True
    except OSError:
        return False


def ssh(args, lab):
    machine = lab.machine(args.node)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = ssh_argv(lab, machine, tty=not command and sys.stdin.isatty())
    # Like ssh itself: the words are joined into one remote shell command.
    return subprocess.call([*argv, *([" ".join(command)] if command else [])])


def smoke_command(args, lab):
    timeline = Timeline()
    try:
        smoke(lab, timeline)
    finally:
        timeline.print()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="scripts/lab", description="The zerolab lab: up, status, ssh, smoke, down.")
    parser.add_argument("--inventory", type=Path, default=inventory.DEFAULT_INVENTORY)
    commands = parser.add_subparsers(dest="action", required=True)
    up_parser = commands.add_parser("up", help="bring the lab up, converge site.yml, run the smoke job")
    up_parser.add_argument("--no-smoke", action="store_true", help="stop after the converge")
    up_parser.add_argument("--vagrant", action="store_true", help="Vagrant VMs (libvirt) instead of containers")
    up_parser.add_argument("nodes", nargs="*", metavar="NODE", help="with --vagrant: only these machines")
    up_parser.set_defaults(func=up)
    status_parser = commands.add_parser("status", help="each node's name, groups, address, state")
    status_parser.add_argument("--json", action="store_true")
    status_parser.add_argument("--vagrant", action="store_true", help="the Vagrant VMs")
    status_parser.set_defaults(func=status)
    ssh_parser = commands.add_parser("ssh", help="a shell on NODE, or one command")
    ssh_parser.add_argument("node")
    ssh_parser.add_argument("command", nargs=argparse.REMAINDER)
    ssh_parser.set_defaults(func=ssh)
    commands.add_parser("smoke", help="run the smoke job").set_defaults(func=smoke_command)
    down_parser = commands.add_parser("down", help="remove the lab's containers and networks")
    down_parser.add_argument("--vagrant", action="store_true", help="destroy the Vagrant VMs, their networks and volumes")
    down_parser.set_defaults(func=down)
    args = parser.parse_args(argv)
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "containers.conf"))
    try:
        lab = inventory.load(args.inventory)
        return args.func(args, lab)
    except (LabError, inventory.InventoryError) as error:
        print(f"lab {args.action}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lab {args.action}: interrupted; the lab is left as it is (scripts/lab status)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # As zerolab.lab, not __main__: one LabError for this module and vagrantlab.
    from zerolab.lab import main as package_main
    sys.exit(package_main())
