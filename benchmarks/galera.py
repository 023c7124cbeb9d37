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


def create():
    sh("podman", "network", "create", "--subnet", SUBNET, NETWORK, capture=True)
    for name, address in [*NODES.items(), STANDALONE, CLIENT]:
        sh("podman", "run", "-d", "--name", name, "--hostname", name, "--network", NETWORK, "--ip", address,
           "--systemd=always", IMAGE, "/sbin/init", capture=True)
    for name in [*NODES, STANDALONE[0], CLIENT[0]]:
        in_node(name, "systemctl is-system-running --wait >/dev/null || true")


def destroy():
    for name in [*NODES, STANDALONE[0], CLIENT[0]]:
        sh("podman", "rm", "-f", "-t", "0", name, check=False, capture=True)
    sh("podman", "network", "rm", "-f", NETWORK, check=False, capture=True)


def deploy_cluster(workdir):
    inventory = workdir / "hosts.yml"
    hosts = {name: {"ansible_connection": "containers.podman.podman", "galera_node_address": address}
             for name, address in NODES.items()}
    inventory.write_text(json.dumps({"all": {"children": {"galera": {
        "hosts": hosts,
        "vars": {"galera_databases": ["sbtest", "zerolab_test"],
                 "galera_users": [{"name": "sbtest", "password": DB_PASSWORD, "priv": "sbtest.*:ALL"},
                                  {"name": "zerolab_test", "password": DB_PASSWORD, "priv": "zerolab_test.*:ALL"}]},
    }}}}))
    return inventory


def playbook(inventory, name):
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                             str(ROOT / "playbooks" / name)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        sys.exit(f"{name} failed:\n{result.stdout[-4000:]}")
    return time.monotonic() - started


def setup_standalone():
    name = STANDALONE[0]
    apt_install(name, "mariadb-server")
    # The cluster's InnoDB settings, without wsrep.
    in_node(name, f"""cat > /etc/mysql/mariadb.conf.d/60-bench.cnf <<'CNF'
[mysqld]
bind_address = 0.0.0.0
innodb_flush_log_at_trx_commit = 1
innodb_buffer_pool_size = 128M
binlog_format = ROW
CNF
systemctl restart mariadb
mariadb -e "CREATE DATABASE IF NOT EXISTS sbtest; CREATE USER IF NOT EXISTS sbtest@'%' IDENTIFIED BY '{DB_PASSWORD}';
GRANT ALL ON sbtest.* TO sbtest@'%'" """)


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


def rejoin_time():
    victim = "bench-galera2"
    started = time.monotonic()
    in_node(victim, "systemctl kill --signal=SIGKILL mariadb")
    time.sleep(1)  # let systemd see the death before polling
    wait_synced(victim)
    return time.monotonic() - started


def full_outage(inventory, workdir):
    log, stop = workdir / "acks.log", workdir / "stop"
    hosts = ",".join(NODES.values())
    workload = subprocess.Popen([sys.executable, str(WORKLOAD), "run", "--hosts", hosts, "--password", DB_PASSWORD,
                                 "--seconds", "120", "--log", str(log), "--stop-file", str(stop)],
                                stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 200):
        time.sleep(0.2)
    for name in NODES:  # like machines that stay down: no automatic restart
        in_node(name, "mkdir -p /run/systemd/system/mariadb.service.d && printf '[Service]\\nRestart=no\\n' "
                      "> /run/systemd/system/mariadb.service.d/zz-bench.conf && systemctl daemon-reload")
    killers = [subprocess.Popen(["podman", "exec", name, "systemctl", "kill", "--signal=SIGKILL", "mariadb"])
               for name in NODES]
    for killer in killers:
        killer.wait()
    stop.touch()
    workload.communicate(timeout=60)
    recovery = playbook(inventory, "galera_recover.yml")
    for name in NODES:
        in_node(name, "rm -f /run/systemd/system/mariadb.service.d/zz-bench.conf && systemctl daemon-reload")
    check = subprocess.run([sys.executable, str(WORKLOAD), "check", "--hosts", hosts, "--password", DB_PASSWORD,
                            "--log", str(log)], capture_output=True, text=True, check=False)
    result = json.loads(check.stdout)
    return recovery, result["acknowledged"], result["missing_count"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="sysbench run time per target")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--tables", type=int, default=4)
    parser.add_argument("--table-size", type=int, default=10000)
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "containers.conf"))
    destroy()
    workdir = Path(tempfile.mkdtemp(prefix="zerolab-galera-bench-"))
    try:
        began = time.monotonic()
        create()
        apt_install(CLIENT[0], "sysbench")
        setup_standalone()
        inventory = deploy_cluster(workdir)
        deploy = playbook(inventory, "galera.yml")
        print(f"set up in {time.monotonic() - began:.0f} s (cluster playbook {deploy:.0f} s)", file=sys.stderr)
        tps_standalone = sysbench(STANDALONE[1], args)
        tps_cluster = sysbench(NODES["bench-galera1"], args)
        rejoin = rejoin_time()
        recovery, acknowledged, lost = full_outage(inventory, workdir)
    finally:
        if not args.keep:
            destroy()
    rows = [
        ("sysbench oltp_read_write TPS, standalone", f"{tps_standalone:.1f}", "", ""),
        ("sysbench oltp_read_write TPS, 3-node cluster", f"{tps_cluster:.1f}",
         f"{tps_cluster / tps_standalone:.2f}x", ">= 0.50x"),
        ("rejoin after kill -9 of one node (s)", f"{rejoin:.1f}", f"{rejoin / 60:.2f} of target", "<= 60 s"),
        ("full recovery, galera_recover.yml (s)", f"{recovery:.1f}", f"{recovery / 120:.2f} of target", "<= 120 s"),
        (f"acknowledged writes lost (of {acknowledged})", str(lost), "", "0"),
    ]
    passed = [tps_cluster / tps_standalone >= 0.5, rejoin <= 60, recovery <= 120, lost == 0]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>9}  {'ratio':>15}  target")
    for row in rows:
        print(f"{row[0]:<{width}}  {row[1]:>9}  {row[2]:>15}  {row[3]}")
    print(f"(sysbench: {args.tables} tables x {args.table_size} rows, {args.threads} threads, {args.seconds} s each; "
          "cluster measured on one node; one machine, 2 cores)")
    print("targets met" if all(passed) else "targets MISSED")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
