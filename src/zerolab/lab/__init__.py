"""The controller's lab tooling: `scripts/lab` and what it reads; never installed on a node.

    cli         the `scripts/lab` command (argparse, and which way runs each action)
    containers  the default way: one systemd container per node on podman networks
    vagrant     the same lab as Vagrant/libvirt VMs (`--vagrant`)
    ansible     running ansible-playbook and the smoke job's steps
    status      the node table `status` prints, for either way
    steps       what every step shares: LabError, the step table, running a tool
    inventory   inventories/lab/hosts.yml, checked
    hostconfig  the host's apt mirror (stdlib only: the shell scripts run it before .venv exists)
    toolchain   the pinned Ansible collections, without Galaxy

Imports go one way (tests/test_imports.py checks): steps, status, inventory,
hostconfig and toolchain import nothing of the lab; ansible imports steps;
containers imports ansible, status and steps; vagrant imports those and
containers (it will not start VMs while the container lab holds the
addresses); cli imports both ways.  This file imports nothing, so that
scripts/bootstrap's `python -m zerolab.lab.toolchain` loads nothing else.
"""
