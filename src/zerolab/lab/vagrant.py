"""The lab as Vagrant VMs (libvirt provider): `scripts/lab up|down|status --vagrant`.

    scripts/lab up --vagrant [NODE ...]   pre-flight, box, VMs, site.yml, smoke job
    scripts/lab status --vagrant          each VM: name, groups, address, state
    scripts/lab down --vagrant            destroy the VMs, their networks and volumes

Vagrant is driven through python-vagrant (its machine-readable output), and
the Vagrantfile reads the same inventory as everything else.  Every check of
bad input runs before any VM starts and ends in one line: which, and what to do.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import ansible, containers, hostdaemons
from .status import print_status
from .steps import ROOT, STATE, LabError, run, script, shown_timeline, which

LIBVIRT = "qemu:///system"
PROVIDER = "libvirt"
BUILT_BOX = "zerolab/debian12"
# The libvirt networks the Vagrantfile makes: lab, PXE provisioning, management.
NETWORKS = ("zerolab", "zerolab-provisioning", "zerolab-vagrant")
DOMAIN_PREFIX = "zerolab_"
# What the host keeps for itself besides the VMs' memory.
HOST_RESERVE_MIB = 512
# Variables that Vagrant's own inventory sets (see the Vagrantfile).
VAGRANT_OWNED = ("ansible_host", "ansible_user", "ansible_become", "ansible_port")
# The VMs' facts apart from the containers' (same host names, other machines).
FACT_CACHE = ROOT / ".cache" / "ansible-facts-vagrant"


def box_name():
    return os.environ.get("ZEROLAB_BOX", BUILT_BOX)


def vagrant_env(names, lab):
    env = ansible.environment(ZEROLAB_BOX=box_name(), VAGRANT_DEFAULT_PROVIDER=PROVIDER,
                              ZEROLAB_LIMIT=",".join(names), ZEROLAB_PROVISION_FROM=names[-1],
                              ANSIBLE_CACHE_PLUGIN_CONNECTION=str(FACT_CACHE))
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    return env


def vagrant_handle(names, lab, quiet=False):
    import vagrant  # python-vagrant, not this module: imports are absolute

    return vagrant.Vagrant(str(ROOT), quiet_stdout=quiet, quiet_stderr=quiet, env=vagrant_env(names, lab))


def target(names):
    """One Vagrant machine argument for several machines: Vagrant's /regex/ form."""
    return names[0] if len(names) == 1 else "/^(" + "|".join(re.escape(n) for n in names) + ")$/"


def virsh(*args, check=False):
    return subprocess.run(["virsh", "-c", LIBVIRT, *args], text=True, capture_output=True, check=check)


# --- pre-flight: bad input, before any VM starts --------------------------------

def check_provider():
    for tool, package in (("vagrant", "vagrant"), ("virsh", "libvirt-clients"), ("libvirtd", "libvirt-daemon-system"),
                          ("qemu-system-x86_64", "qemu-system-x86"), ("ansible-playbook", "the .venv toolchain")):
        if not shutil.which(tool, path=f"{ROOT / '.venv' / 'bin'}:/usr/sbin:{os.environ.get('PATH', '')}"):
            raise LabError(f"provider: {tool} is missing ({package}): run scripts/bootstrap as root")
    plugins = Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-libvirt-*")
    home_plugins = Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d")).glob("gems/*/gems/vagrant-libvirt-*")
    if not any(plugins) and not any(home_plugins):
        raise LabError("provider: the vagrant-libvirt plugin is missing: apt-get install vagrant-libvirt "
                       "(or run scripts/bootstrap as root)")
    if virsh("version").returncode != 0:
        raise LabError(f"provider: libvirtd does not answer on {LIBVIRT}: start it (scripts/lab up --vagrant "
                       "starts it as root when the host has no init system), or run as root")
    return f"libvirt ({os.environ.get('ZEROLAB_LIBVIRT_DRIVER', 'qemu')})"


def check_box(box):
    import vagrant

    boxes = vagrant.Vagrant(str(ROOT), quiet_stdout=True, quiet_stderr=True).box_list()
    if not any(b.name == box and b.provider == PROVIDER for b in boxes):
        how = ("run scripts/build-box as root" if box == BUILT_BOX else
               f"vagrant box add {box} (public boxes need internet), or use ZEROLAB_BOX={BUILT_BOX} "
               "after scripts/build-box")
        raise LabError(f"box: '{box}' is not installed for the {PROVIDER} provider: {how}")
    return box


def libvirt_bridge(network):
    """The host bridge of a libvirt network, or None when there is no such network."""
    for line in virsh("net-info", network).stdout.splitlines():
        if line.startswith("Bridge:"):
            return line.split()[1]
    return None


def libvirt_bridges():
    return {bridge for bridge in map(libvirt_bridge, NETWORKS) if bridge}


def lab_domains():
    return [d for d in virsh("list", "--all", "--name").stdout.split() if d.startswith(DOMAIN_PREFIX)]


def check_addresses(lab, machines):
    """The lab's subnets must be ours alone: no host interface or container on them."""
    if which("podman"):
        held = containers.podman("ps", "-a", "--filter", f"label={containers.LABEL}", "--format", "{{.Names}}",
                                 check=False).stdout.split()
        if held:
            raise LabError(f"addresses: the container lab holds the lab's addresses ({', '.join(held)}): "
                           "run scripts/lab down first")
    ours = libvirt_bridges()
    subnets = [ipaddress.ip_network(lab.vars["lab_network"])]
    if "lab_provisioning_network" in lab.vars:
        subnets.append(ipaddress.ip_network(lab.vars["lab_provisioning_network"]))
    wanted = {m.address: m.name for m in machines}
    for entry in json.loads(run(["ip", "-j", "address"]).stdout):
        if entry["ifname"] in ours:
            continue
        for address in entry.get("addr_info", []):
            if address.get("family") != "inet":
                continue
            if address["local"] in wanted:
                raise LabError(f"addresses: {wanted[address['local']]}'s address {address['local']} is held by "
                               f"host interface {entry['ifname']}: free it or change {lab.path}")
            for subnet in subnets:
                if ipaddress.ip_address(address["local"]) in subnet:
                    raise LabError(f"addresses: {subnet} is already used by host interface {entry['ifname']} "
                                   f"({address['local']}): remove it (scripts/lab down, if it is the container "
                                   f"lab's) or change {lab.path}")
    return f"{len(machines)} addresses free"


def check_memory(machines, running):
    needed = sum(m.memory for m in machines if m.name not in running)
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) // 1024
    if needed + HOST_RESERVE_MIB > available:
        names = ", ".join(f"{m.name} {m.memory}" for m in machines if m.name not in running)
        raise LabError(f"memory: the VMs need {needed} MiB ({names}) plus {HOST_RESERVE_MIB} MiB for the host, "
                       f"but only {available} MiB are available: bring up fewer nodes "
                       "(scripts/lab up --vagrant NODE ...) or free memory")
    return f"{needed} MiB of {available} MiB"


def running_machines(names, lab):
    try:
        return {s.name for s in vagrant_handle(names, lab, quiet=True).status() if s.state == "running"}
    except Exception as error:  # python-vagrant raises CalledProcessError with no message of Vagrant's
        raise LabError(f"status: `vagrant status` failed ({error}); run `vagrant status` to see why") from None


# --- the commands ------------------------------------------------------------------

def selected(args, lab):
    names = getattr(args, "nodes", None) or [m.name for m in lab.machines]
    for name in names:
        lab.machine(name)
    return [m for m in lab.machines if m.name in names]


def up(args, lab):
    if getattr(args, "limit", None):
        raise LabError(f"up: --limit ({args.limit}) is for the container lab; with --vagrant, name the machines: NODE...")
    machines = selected(args, lab)
    names = [m.name for m in machines]
    with shown_timeline(args.json) as timeline:
        timeline.run("libvirt daemons", hostdaemons.start_libvirt)
        timeline.run("pre-flight: provider", check_provider)
        if box_name() == BUILT_BOX:
            timeline.run("box", script, "build-box", "box")
        timeline.run("pre-flight: box", check_box, box_name())
        running = running_machines(names, lab)
        timeline.run("pre-flight: addresses", check_addresses, lab, [m for m in machines if m.name not in running])
        timeline.run("pre-flight: memory", check_memory, machines, running)
        timeline.run("ssh key", lambda: f"{containers.SSH_KEY} ({containers.ssh_key().split()[0]})")
        timeline.run("vagrant up", vagrant_up, names, lab)
        timeline.run("provision site.yml", vagrant_provision, names, lab)
        if not args.no_smoke:
            inventory_path = timeline.run("vagrant ssh-config", write_inventory, names, lab).split()[-1]
            groups = {g for m in machines for g in m.groups}
            have = ansible.smoke_steps()
            for step in ansible.SMOKE_STEPS:
                if step not in groups:
                    continue
                if step not in have:
                    timeline.run(f"smoke: {step}", ansible.missing_step, step)
                    continue
                timeline.run(f"smoke: {step}", smoke, Path(inventory_path), step)
    return 0


def vagrant_up(names, lab):
    try:
        vagrant_handle(names, lab).up(vm_name=target(names), provider=PROVIDER, no_provision=True)
    except subprocess.CalledProcessError:
        raise LabError(f"vagrant up: {', '.join(names)} did not come up (Vagrant's message is above); "
                       "look with `vagrant status` and `virsh list --all`") from None
    return f"{len(names)} VMs running"


def vagrant_provision(names, lab):
    try:
        vagrant_handle(names, lab).provision(vm_name=names[-1])
    except subprocess.CalledProcessError:
        raise LabError(f"provision: site.yml failed on {', '.join(names)} (Ansible's output is above); "
                       f"look with `vagrant ssh {names[0]}`") from None
    return f"site.yml --limit {','.join(names)}"


def write_inventory(names, lab):
    """An Ansible inventory of the running VMs, from `vagrant ssh-config`."""
    handle = vagrant_handle(names, lab, quiet=True)
    hosts = {}
    for machine in lab.machines:
        if machine.name not in names:
            continue
        conf = handle.conf(vm_name=machine.name)
        hosts[machine.name] = {
            **{k: v for k, v in machine.vars.items() if k not in VAGRANT_OWNED},
            "ansible_host": conf["HostName"], "ansible_port": int(conf.get("Port", 22)),
            "ansible_user": conf["User"], "ansible_ssh_private_key_file": conf["IdentityFile"],
        }
    groups = {g: {"hosts": {n: None for n in names if g in lab.machine(n).groups}} for g in ansible.SMOKE_STEPS}
    data = {"all": {"vars": {**{k: v for k, v in lab.vars.items() if k not in VAGRANT_OWNED},
                             "ansible_become": True, "common_admin_user": "vagrant"},
                    "hosts": hosts, "children": {g: v for g, v in groups.items() if v["hosts"]}}}
    STATE.mkdir(parents=True, exist_ok=True)
    path = STATE / "vagrant-inventory.json"
    path.write_text(json.dumps(data, indent=2))
    return f"inventory {path}"


def smoke(inventory_path, step):
    return ansible.playbook(inventory_path, "playbooks/smoke.yml", tags=step, step=f"smoke {step}",
                     env=ansible.environment(ANSIBLE_CACHE_PLUGIN_CONNECTION=str(FACT_CACHE)),
                     log_name=f"vagrant-smoke-{step}", ssh="vagrant ssh")


# Where libvirt keeps what it defines: domains, networks, the default pool.
LIBVIRT_FILES = (Path("/etc/libvirt/qemu"), Path("/etc/libvirt/qemu/networks"), Path("/var/lib/libvirt/images"))


def libvirt_files_of_the_lab(places=LIBVIRT_FILES):
    """The lab's domains, networks and volumes as libvirt stores them on disk:
    they outlive libvirtd, and only a running libvirtd can remove them."""
    return sorted(str(f) for place in places if place.is_dir() for f in place.glob("zerolab*"))


def down(args, lab):
    names = [m.name for m in lab.machines]
    # A lab left behind while libvirtd was stopped (a reboot, an earlier down
    # that stopped it): start it for as long as the removal takes.
    left_on_disk = libvirt_files_of_the_lab() if virsh("version").returncode != 0 else []
    if left_on_disk:
        print(f"down: {', '.join(left_on_disk)} left behind; {hostdaemons.start_libvirt()}", file=sys.stderr)
    if shutil.which("vagrant") and virsh("version").returncode == 0:
        try:
            vagrant_handle(names, lab).destroy()
        except subprocess.CalledProcessError:
            # A VM that an interrupted `up` left half made trips Vagrant; libvirt
            # itself can still remove it, which cleanup_libvirt does next.
            print("down: `vagrant destroy` failed (its message is above); removing the lab's VMs with virsh",
                  file=sys.stderr)
    leftovers = cleanup_libvirt()
    remaining = lab_domains()
    if remaining:
        raise LabError(f"down: {', '.join(remaining)} could not be removed; look with `virsh list --all`")
    shutil.rmtree(ROOT / ".vagrant" / "machines", ignore_errors=True)
    print(f"down: {hostdaemons.stop_libvirt()}", file=sys.stderr)
    print(f"destroyed the Vagrant lab{'; also removed ' + ', '.join(leftovers) if leftovers else ''}")
    return 0


def cleanup_libvirt():
    """What a destroy leaves in libvirt: the lab's networks, the box's copy in the pool."""
    removed = []
    if virsh("version").returncode != 0:
        return removed
    for domain in lab_domains():
        virsh("destroy", domain)
        virsh("undefine", domain, "--remove-all-storage")
        removed.append(f"domain {domain}")
    for network in NETWORKS:
        if virsh("net-info", network).returncode == 0:
            virsh("net-destroy", network)
            virsh("net-undefine", network)
            removed.append(f"network {network}")
    box_prefix = BUILT_BOX.replace("/", "-VAGRANTSLASH-")
    for pool in virsh("pool-list", "--name").stdout.split():
        for volume in virsh("vol-list", pool).stdout.splitlines()[2:]:
            name = volume.split()[0] if volume.split() else ""
            if name.startswith((DOMAIN_PREFIX, box_prefix)):
                virsh("vol-delete", "--pool", pool, name)
                removed.append(f"volume {name}")
    return removed


def status(args, lab):
    states = {}
    if shutil.which("vagrant"):
        try:
            states = {s.name: s.state for s in vagrant_handle([m.name for m in lab.machines], lab, quiet=True).status()}
        except subprocess.CalledProcessError:
            print("status: `vagrant status` failed; run it to see why", file=sys.stderr)
            return 1
    return print_status(lab, states, args.json)
