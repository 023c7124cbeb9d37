#!/usr/bin/python3
"""HTTP health check of one Galera node, for load balancers.

GET (any path) answers 200 when the node is Synced, ready and in the Primary
component, and 503 otherwise, with the wsrep status in the body.  It asks the
local server through its unix socket as the OS user it runs as (a MariaDB
account that authenticates with unix_socket and has no privileges).
"""
import argparse
import http.server
import subprocess

QUERY = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN "
    "('wsrep_local_state_comment', 'wsrep_cluster_status', 'wsrep_ready', 'wsrep_cluster_size')"
)


def node_status(socket):
    """The node's wsrep status as a dict, and an error message if it could not be read."""
    command = ["mariadb", "--no-defaults", "--socket", socket, "--batch", "--skip-column-names", "-e", QUERY]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return {}, str(error)
    if result.returncode != 0:
        return {}, result.stderr.strip() or f"mariadb exited with {result.returncode}"
    status = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    return status, ""


def is_healthy(status):
    return (
        status.get("wsrep_local_state_comment") == "Synced"
        and status.get("wsrep_cluster_status") == "Primary"
        and status.get("wsrep_ready") == "ON"
    )


def make_handler(socket):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, with_body):
            status, error = node_status(socket)
            healthy = is_healthy(status)
            lines = [f"{name}: {value}" for name, value in sorted(status.items())]
            if error:
                lines.append(f"error: {error}")
            body = ("\n".join(["Synced" if healthy else "not synced"] + lines) + "\n").encode()
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._answer(with_body=True)

        def do_HEAD(self):  # noqa: N802
            self._answer(with_body=False)

        def log_message(self, format, *args):  # noqa: A002
            # Load balancers ask every few seconds: do not fill the journal.
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--socket", default="/run/mysqld/mysqld.sock")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer((args.bind, args.port), make_handler(args.socket))
    server.serve_forever()


if __name__ == "__main__":
    main()
