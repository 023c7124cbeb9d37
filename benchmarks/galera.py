#!/usr/bin/env python3
"""Galera benchmark: a 3-node cluster against one standalone MariaDB, side by side.

Builds its own containers (node image, network zerolab-galera-bench
10.89.62.0/24), deploys the cluster with playbooks/galera.yml, then measures:

  - sysbench oltp_read_write TPS on the cluster (one node) and on a standalone
    MariaDB with the same InnoDB settings, from a client container;
  - rejoin time: kill -9 of one node's server until it is Synced again
    (systemd restarts it; IST);
  - full recovery time: kill -9 of all three (automatic restart off) during a
    list-append workload, then playbooks/galera_recover.yml until all Synced;
  - acknowledged writes lost in that outage.

Prints a table with ratios and targets.  Run it alone (2 cores):

    flock /tmp/zerolab-heavy.lock .venv/bin/python benchmarks/galera.py

--inventory FILE measures a cluster that is already deployed (the hosts of
FILE's group galera, reached as containers of the same names, for example
the galera scenario's Molecule inventory): only the standalone server and
the client are created, on the cluster's own podman network, and removed
afterwards; the cluster is left recovered.  --quick makes sysbench small.
The galera scenario runs `--quick --inventory` as its full-outage case, so
this script runs on every CI pass; --json prints the numbers for it (the
scenario checks that no acknowledged write was lost, never the times).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/zerolab-node:latest"
NETWORK = "zerolab-galera-bench"
SUBNET = "10.89.62.0/24"
NODES = {"bench-galera1": "10.89.62.11", "bench-galera2": "10.89.62.12", "bench-galera3": "10.89.62.13"}
STANDALONE = ("bench-standalone", "10.89.62.20")
CLIENT = ("bench-client", "10.89.62.30")
DB_USER = "sbtest"   # sysbench's tables and the outage workload's, in its own database
DB_PASSWORD = "bench-only-password"
WORKLOAD = ROOT / "molecule" / "galera" / "workload.py"


def sh(*args, check=True, capture=False, timeout=900):
    result = subprocess.run(args, check=False, text=True, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None)
    if check and result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(map(str, args))}\n{result.stdout or ''}")
    return result


def in_node(name, script, **kwargs):
    return sh("podman", "exec", name, "bash", "-ec", script, **kwargs)


def apt_install(name, packages):
    # The package cache is shared with other containers: retry while it is locked.
    for _ in range(40):
        result = in_node(name, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {packages} >/tmp/apt.log 2>&1",
                         check=False)
        if result.returncode == 0:
            return
        time.sleep(5)
    sys.exit(f"apt-get install failed on {name}")


def wsrep_state(name):
    result = in_node(name, "mariadb -N -B -e \"SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'\"",
                     check=False, capture=True)
    return result.stdout.split()[-1] if result.returncode == 0 and result.stdout.split() else "down"


def wait_synced(name, deadline_s=300):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if wsrep_state(name) == "Synced":
            return
        time.sleep(0.5)
    sys.exit(f"{name} not Synced after {deadline_s} s")


def start_containers(network, named_addresses):
    """systemd containers of the node image; an address of None is podman's choice."""
    for name, address in named_addresses:
        sh("podman", "run", "-d", "--name", name, "--hostname", name, "--network", network,
           *(["--ip", address] if address else []), "--systemd=always", IMAGE, "/sbin/init", capture=True)
    for name, _ in named_addresses:
        in_node(name, "systemctl is-system-running --wait >/dev/null || true")


def address_of(name, network):
    found = json.loads(sh("podman", "inspect", name, capture=True).stdout)
    return found[0]["NetworkSettings"]["Networks"][network]["IPAddress"]


def network_of(name):
    found = json.loads(sh("podman", "inspect", name, capture=True).stdout)
    return next(iter(found[0]["NetworkSettings"]["Networks"]))


def remove_containers(names):
    for name in names:
        sh("podman", "rm", "-f", "-t", "0", name, check=False, capture=True)


def deploy_cluster(workdir):
    inventory = workdir / "hosts.yml"
    hosts = {name: {"ansible_connection": "containers.podman.podman", "galera_node_address": address}
             for name, address in NODES.items()}
    inventory.write_text(json.dumps({"all": {"children": {"galera": {
        "hosts": hosts,
        "vars": {"galera_databases": [DB_USER],
                 "galera_users": [{"name": DB_USER, "password": DB_PASSWORD, "priv": f"{DB_USER}.*:ALL"}]},
    }}}}))
    return inventory


def cluster_of(inventory):
    """{host: address} of the inventory's galera group (galera_node_address, else ansible_host)."""
    listed = json.loads(sh(str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory), "--list",
                           capture=True).stdout)
    hostvars = listed.get("_meta", {}).get("hostvars", {})
    names = listed.get("galera", {}).get("hosts", [])
    if len(names) < 3:
        sys.exit(f"{inventory}: its group galera has {len(names)} hosts; the benchmark needs a cluster of three or more")
    return {name: hostvars[name].get("galera_node_address") or hostvars[name].get("ansible_host") for name in names}


def add_bench_user(node):
    """The benchmark's own database and user on a server (on a cluster node: replicated to every node)."""
    in_node(node, f"""mariadb -e "CREATE DATABASE IF NOT EXISTS {DB_USER};
CREATE USER IF NOT EXISTS {DB_USER}@'%' IDENTIFIED BY '{DB_PASSWORD}';
GRANT ALL ON {DB_USER}.* TO {DB_USER}@'%'" """)


def playbook(inventory, name):
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                             str(ROOT / "playbooks" / name)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stdout[-4000:]}")
    return time.monotonic() - started


def setup_standalone(name):
    apt_install(name, "mariadb-server")
    # The cluster's InnoDB settings, without wsrep.
    in_node(name, """cat > /etc/mysql/mariadb.conf.d/60-bench.cnf <<'CNF'
[mysqld]
bind_address = 0.0.0.0
innodb_flush_log_at_trx_commit = 1
innodb_buffer_pool_size = 128M
binlog_format = ROW
CNF
systemctl restart mariadb""")
    add_bench_user(name)


def sysbench(host, args):
    common = (f"--db-driver=mysql --mysql-host={host} --mysql-user=sbtest --mysql-password={DB_PASSWORD} "
              f"--mysql-db=sbtest --tables={args.tables} --table-size={args.table_size}")
    in_node(CLIENT[0], f"sysbench oltp_read_write {common} cleanup >/dev/null 2>&1 || true; "
                       f"sysbench oltp_read_write {common} --threads=4 prepare >/dev/null")
    out = in_node(CLIENT[0], f"sysbench oltp_read_write {common} --threads={args.threads} --time={args.seconds} "
                             "--report-interval=0 --mysql-ignore-errors=1213,1205 run", capture=True).stdout
    for line in out.splitlines():
        if "transactions:" in line:
            return float(line.split("(")[1].split()[0])
    sys.exit(f"no TPS in sysbench output:\n{out}")


def rejoin_time(victim):
    started = time.monotonic()
    in_node(victim, "systemctl kill --signal=SIGKILL mariadb")
    time.sleep(1)  # let systemd see the death before polling
    wait_synced(victim)
    return time.monotonic() - started


def full_outage(inventory, workdir, nodes):
    log, stop = workdir / "acks.log", workdir / "stop"
    hosts = ",".join(nodes.values())
    as_bench = ["--user", DB_USER, "--database", DB_USER, "--password", DB_PASSWORD]
    workload = subprocess.Popen([sys.executable, str(WORKLOAD), "run", "--hosts", hosts, *as_bench,
                                 "--seconds", "120", "--log", str(log), "--stop-file", str(stop)],
                                stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 200):
        time.sleep(0.2)
    for name in nodes:  # like machines that stay down: no automatic restart
        in_node(name, "mkdir -p /run/systemd/system/mariadb.service.d && printf '[Service]\\nRestart=no\\n' "
                      "> /run/systemd/system/mariadb.service.d/zz-bench.conf && systemctl daemon-reload")
    killers = [subprocess.Popen(["podman", "exec", name, "systemctl", "kill", "--signal=SIGKILL", "mariadb"])
               for name in nodes]
    for killer in killers:
        killer.wait()
    stop.touch()
    workload.communicate(timeout=60)
    recovery = playbook(inventory, "galera_recover.yml")
    for name in nodes:
        in_node(name, "rm -f /run/systemd/system/mariadb.service.d/zz-bench.conf && systemctl daemon-reload")
    check = subprocess.run([sys.executable, str(WORKLOAD), "check", "--hosts", hosts, *as_bench,
                            "--log", str(log)], capture_output=True, text=True, check=False)
    result = json.loads(check.stdout)
    return recovery, result["acknowledged"], result["missing_count"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="sysbench run time per target")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--table-size", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="sysbench: 1 table x 1000 rows, 2 threads, 5 s")
    parser.add_argument("--inventory", type=Path,
                        help="measure this deployed cluster (its group galera) instead of building one")
    parser.add_argument("--json", action="store_true", help="the measurements as JSON on standard output")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.threads, args.tables, args.table_size = 5, 2, 1, 1000
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "containers.conf"))
    workdir = Path(tempfile.mkdtemp(prefix="zerolab-galera-bench-"))
    if args.inventory:
        if not args.inventory.exists():
            sys.exit(f"--inventory {args.inventory}: no such file")
        nodes = cluster_of(args.inventory)
        network = network_of(next(iter(nodes)))
        extras = [(STANDALONE[0], None), (CLIENT[0], None)]
    else:
        nodes, network = NODES, NETWORK
        extras = [STANDALONE, CLIENT]
    ours = [name for name, _ in extras] + ([] if args.inventory else list(NODES))
    remove_containers(ours)
    if not args.inventory:
        sh("podman", "network", "rm", "-f", NETWORK, check=False, capture=True)
    try:
        began = time.monotonic()
        if not args.inventory:
            sh("podman", "network", "create", "--subnet", SUBNET, NETWORK, capture=True)
            start_containers(NETWORK, list(NODES.items()))
        start_containers(network, extras)
        apt_install(CLIENT[0], "sysbench")
        setup_standalone(STANDALONE[0])
        if args.inventory:
            inventory, deploy = args.inventory, 0.0
            add_bench_user(next(iter(nodes)))
        else:
            inventory = deploy_cluster(workdir)
            deploy = playbook(inventory, "galera.yml")
        print(f"set up in {time.monotonic() - began:.0f} s (cluster playbook {deploy:.0f} s)", file=sys.stderr)
        tps_standalone = sysbench(address_of(STANDALONE[0], network), args)
        tps_cluster = sysbench(next(iter(nodes.values())), args)
        rejoin = rejoin_time(list(nodes)[1])
        recovery, acknowledged, lost = full_outage(inventory, workdir, nodes)
    finally:
        if not args.keep:
            remove_containers(ours)
            if not args.inventory:
                sh("podman", "network", "rm", "-f", NETWORK, check=False, capture=True)
    passed = [tps_cluster / tps_standalone >= 0.5, rejoin <= 60, recovery <= 120, lost == 0]
    sysbench_size = (f"{args.tables} tables x {args.table_size} rows, {args.threads} threads, "
                     f"{args.seconds} s each")
    if args.json:
        print(json.dumps({"tps_standalone": tps_standalone, "tps_cluster": tps_cluster,
                          "tps_ratio": tps_cluster / tps_standalone, "rejoin_seconds": rejoin,
                          "recovery_seconds": recovery, "acknowledged": acknowledged, "lost": lost,
                          "sysbench": sysbench_size, "targets_met": all(passed)}))
        return 0   # measured; the caller judges (the galera scenario checks lost == 0, never the times)
    rows = [
        ("sysbench oltp_read_write TPS, standalone", f"{tps_standalone:.1f}", "", ""),
        ("sysbench oltp_read_write TPS, 3-node cluster", f"{tps_cluster:.1f}",
         f"{tps_cluster / tps_standalone:.2f}x", ">= 0.50x"),
        ("rejoin after kill -9 of one node (s)", f"{rejoin:.1f}", f"{rejoin / 60:.2f} of target", "<= 60 s"),
        ("full recovery, galera_recover.yml (s)", f"{recovery:.1f}", f"{recovery / 120:.2f} of target", "<= 120 s"),
        (f"acknowledged writes lost (of {acknowledged})", str(lost), "", "0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>9}  {'ratio':>15}  target")
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:>9}  {row[2]:>15}  {row[3]}")
    print(f"(sysbench: {sysbench_size}; cluster measured on one node; one machine, 2 cores)")
    print("targets met" if all(passed) else "targets MISSED")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
