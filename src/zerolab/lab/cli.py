"""scripts/lab: bring the whole lab up as one thing, and prove it.

    scripts/lab up [--no-smoke] [--json]  containers (or --vagrant VMs), site.yml over SSH, smoke job
    scripts/lab status [--json]           each node: name, groups, address, state
    scripts/lab ssh NODE [-- CMD]         a shell on a node, or one command (its exit status is ours)
    scripts/lab smoke [--json]            the end-to-end smoke job, step by step
    scripts/lab down               remove the lab's containers and networks
    ... up|status|down --vagrant   the same lab as Vagrant VMs (see vagrant.py)

The default way is containers (see containers.py).  Every failure is one line
naming the node and the step; nothing is torn down on failure.  `up` and
`smoke` end with a table of their steps, what each proved and its time; with
--json that table is the only thing on standard output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import containers, inventory, vagrant
from .steps import ROOT, LabError


def way(args):
    return vagrant if args.vagrant else containers


def up(args, lab):
    return way(args).up(args, lab)


def down(args, lab):
    return way(args).down(args, lab)


def status(args, lab):
    return way(args).status(args, lab)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="scripts/lab", description="The zerolab lab: up, status, ssh, smoke, down.")
    parser.add_argument("--inventory", type=Path, default=inventory.DEFAULT_INVENTORY)
    commands = parser.add_subparsers(dest="action", required=True)
    up_parser = commands.add_parser("up", help="bring the lab up, converge site.yml, run the smoke job")
    up_parser.add_argument("--no-smoke", action="store_true", help="stop after the converge")
    up_parser.add_argument("--vagrant", action="store_true", help="Vagrant VMs (libvirt) instead of containers")
    up_parser.add_argument("--json", action="store_true", help="the table of steps as JSON on standard output")
    up_parser.add_argument("--limit", metavar="PATTERN",
                           help="containers: converge only the nodes of this Ansible host pattern (e.g. sandbox:swift)")
    up_parser.add_argument("nodes", nargs="*", metavar="NODE", help="with --vagrant: only these machines")
    up_parser.set_defaults(func=up)
    status_parser = commands.add_parser("status", help="each node's name, groups, address, state")
    status_parser.add_argument("--json", action="store_true")
    status_parser.add_argument("--vagrant", action="store_true", help="the Vagrant VMs")
    status_parser.set_defaults(func=status)
    ssh_parser = commands.add_parser("ssh", help="a shell on NODE, or one command")
    ssh_parser.add_argument("node")
    ssh_parser.add_argument("command", nargs=argparse.REMAINDER)
    ssh_parser.set_defaults(func=containers.ssh)
    smoke_parser = commands.add_parser("smoke", help="run the smoke job")
    smoke_parser.add_argument("--json", action="store_true", help="the table of steps as JSON on standard output")
    smoke_parser.set_defaults(func=containers.smoke_command)
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
