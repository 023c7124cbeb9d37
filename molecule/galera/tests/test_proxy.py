"""The front door: HAProxy on galera-proxy1 in front of the three nodes."""
import testinfra

# The verifier's hosts are the Galera nodes; these tests take no `host`, so
# they run once, against the proxy's container.
PROXY_NODE = testinfra.get_host("podman://galera-proxy1")

PROXY = "10.89.61.20"


def galera1():
    return testinfra.get_host("podman://galera1")


def stats(host):
    """HAProxy's view of the servers: {server: (status, is backup)}."""
    script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8404/;csv', timeout=5).read().decode())"
    out = host.check_output("python3 -c %s", script)
    header, *lines = out.splitlines()
    names = header.lstrip("# ").split(",")
    rows = [dict(zip(names, line.split(","))) for line in lines if line]
    return {row["svname"]: (row["status"], row["bck"]) for row in rows
            if row["pxname"] == "galera" and row["svname"] not in ("FRONTEND", "BACKEND")}


def test_haproxy_runs_with_a_valid_configuration():
    host = PROXY_NODE
    assert host.service("haproxy").is_running
    assert host.service("haproxy").is_enabled
    assert host.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").rc == 0
    assert host.socket("tcp://0.0.0.0:3306").is_listening
    assert host.socket("tcp://127.0.0.1:8404").is_listening


def test_one_writer_and_two_backups_all_up():
    servers = stats(PROXY_NODE)
    assert servers == {"galera1": ("UP", "0"), "galera2": ("UP", "1"), "galera3": ("UP", "1")}, servers


def test_a_tls_client_through_the_front_door_reaches_the_writer_and_checks_its_name():
    # The node certificates name the proxy too (galera_tls_extra_names), so a
    # client can check the server's name through it.
    result = galera1().run(
        "mariadb --batch --skip-column-names -h %s -u zerolab_test -pmolecule-test-only "
        "--ssl --ssl-ca=/etc/mysql/tls/ca.pem --ssl-verify-server-cert -e %s",
        PROXY, "SELECT @@hostname; SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    assert result.rc == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "galera1"
    assert lines[1].split("\t")[1], lines


def test_a_plaintext_client_through_the_front_door_is_refused():
    result = galera1().run("mariadb -h %s -u zerolab_test -pmolecule-test-only --skip-ssl -e 'SELECT 1'", PROXY)
    assert result.rc != 0
