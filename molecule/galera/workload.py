#!/usr/bin/env python3
"""List-append workload for the Galera scenario and benchmark.

run:   insert rows with client-chosen ids, round-robin over the nodes, and
       append "id node time" to a log only after the server acknowledged the
       commit.  Errors (a node down, a view change) are counted, the connection
       is dropped and the next node is tried; nothing is retried under the same id.
check: every id in the log must be in the table.  Prints a JSON summary
       (acknowledged, missing, acknowledgements per node within --since/--until).
Exit status of check: 0 when nothing acknowledged is missing, 1 otherwise.
"""
import argparse
import collections
import json
import os
import sys
import time

import pymysql

TABLE = "acks"


def connect(host, args, timeout=3):
    # TLS unless told otherwise: the cluster refuses plaintext clients.  The
    # chain is checked against --ssl-ca, not the name (a node's certificate
    # names the node, and through HAProxy the address is the proxy's).
    tls = None if args.no_tls else {"ca": args.ssl_ca, "check_hostname": False} if args.ssl_ca else {"check_hostname": False}
    return pymysql.connect(
        host=host, port=args.port, user=args.user, password=args.password, database=args.database,
        connect_timeout=timeout, read_timeout=timeout * 2, write_timeout=timeout * 2, autocommit=True, ssl=tls,
    )


def run(args):
    hosts = args.hosts.split(",")
    for host in hosts:
        try:
            with connect(host, args) as conn, conn.cursor() as cur:
                cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} "
                            "(id BIGINT PRIMARY KEY, node VARCHAR(64) NOT NULL, at DOUBLE NOT NULL)")
                cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {TABLE}")
                next_id = cur.fetchone()[0] + 1
            break
        except pymysql.MySQLError:
            continue
    else:
        sys.exit("workload: no node answered")
    conns = {}
    errors = collections.Counter()
    deadline = time.monotonic() + args.seconds
    turn = 0
    with open(args.log, "a", encoding="utf-8") as log:
        while time.monotonic() < deadline and not (args.stop_file and os.path.exists(args.stop_file)):
            host = hosts[turn % len(hosts)]
            turn += 1
            try:
                if host not in conns:
                    conns[host] = connect(host, args)
                with conns[host].cursor() as cur:
                    cur.execute(f"INSERT INTO {TABLE} (id, node, at) VALUES (%s, %s, %s)", (next_id, host, time.time()))
                # The commit was acknowledged: only now does the id count.
                log.write(f"{next_id} {host} {time.time():.3f}\n")
                log.flush()
            except pymysql.MySQLError:
                errors[host] += 1
                conn = conns.pop(host, None)
                if conn is not None:
                    try:
                        conn.close()
                    except pymysql.MySQLError:
                        pass
                time.sleep(0.1)
            # A failed id is never reused: it may or may not have committed.
            next_id += 1
    print(json.dumps({"errors": dict(errors)}))


def check(args):
    acked = []
    with open(args.log, encoding="utf-8") as log:
        for line in log:
            ident, host, at = line.split()
            acked.append((int(ident), host, float(at)))
    present = None
    for host in args.hosts.split(","):
        try:
            with connect(host, args, timeout=10) as conn, conn.cursor() as cur:
                cur.execute(f"SELECT id FROM {TABLE}")
                present = {row[0] for row in cur.fetchall()}
            break
        except pymysql.MySQLError:
            continue
    if present is None:
        sys.exit("workload check: no node answered")
    missing = sorted(ident for ident, _, _ in acked if ident not in present)
    until = args.until or float("inf")
    window = collections.Counter(host for _, host, at in acked if args.since <= at <= until)
    # The longest time without an acknowledged write that overlaps the
    # window: how long writers were failing (a failover, a restart).
    times = sorted(at for _, _, at in acked)
    gaps = [later - earlier for earlier, later in zip(times, times[1:]) if later >= args.since and earlier <= until]
    print(json.dumps({"acknowledged": len(acked), "missing": missing[:50], "missing_count": len(missing),
                      "acknowledged_in_window": dict(window), "longest_gap_seconds": round(max(gaps, default=0.0), 3)}))
    return 1 if missing else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run", "check"])
    parser.add_argument("--hosts", required=True, help="comma-separated node addresses")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="zerolab_test")
    parser.add_argument("--password", default=os.environ.get("WORKLOAD_PASSWORD", ""))
    parser.add_argument("--database", default="zerolab_test")
    parser.add_argument("--ssl-ca", help="CA file to check the servers' certificates against")
    parser.add_argument("--no-tls", action="store_true", help="plaintext (a cluster with galera_tls_enabled false)")
    parser.add_argument("--log", required=True, help="client-side log of acknowledged ids")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--stop-file", help="stop early when this file exists")
    parser.add_argument("--since", type=float, default=0.0)
    parser.add_argument("--until", type=float, default=0.0)
    args = parser.parse_args()
    if args.action == "run":
        run(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
