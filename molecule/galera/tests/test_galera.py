"""What the galera role promises on every node of a three-node cluster."""
import time
import uuid

import pytest
import testinfra

NODES = ("galera1", "galera2", "galera3")


def node(name):
    """Another node of the scenario: its container, as the verifier reaches every node."""
    return testinfra.get_host(f"podman://{name}")


def sql(host, query):
    """Run a query as root (unix socket) and return its rows as lists of strings."""
    result = host.run("mariadb --batch --skip-column-names -e %s", query)
    assert result.rc == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def status(host):
    return dict(sql(host, "SHOW GLOBAL STATUS LIKE 'wsrep%'"))


ADDRESSES = {"galera1": "10.89.61.11", "galera2": "10.89.61.12", "galera3": "10.89.61.13"}
TLS = "/etc/mysql/tls"


def client(host, address, *options):
    """The mariadb client on host, over TCP to address as the workload's user; the Result."""
    return host.run("mariadb --batch --skip-column-names -h %s -u zerolab_test -pmolecule-test-only "
                    + " ".join(options) + " -e %s", address, "SHOW SESSION STATUS LIKE 'Ssl_%%'")


def test_packages_are_installed(host):
    for name in ("mariadb-server", "galera-4", "mariadb-backup"):
        assert host.package(name).is_installed, name


def test_mariadb_runs_and_socket_activation_is_off(host):
    assert host.service("mariadb").is_running
    assert host.service("mariadb").is_enabled
    assert not host.service("mariadb.socket").is_enabled
    assert not host.service("mariadb.socket").is_running
    assert host.socket("tcp://0.0.0.0:3306").is_listening


def test_node_is_in_a_synced_three_node_primary_component(host):
    wsrep = status(host)
    assert wsrep["wsrep_cluster_size"] == "3"
    assert wsrep["wsrep_cluster_status"] == "Primary"
    assert wsrep["wsrep_ready"] == "ON"
    assert wsrep["wsrep_local_state_comment"] == "Synced"


def test_settings_are_the_ones_galera_needs(host):
    name = host.check_output("hostname")
    row = sql(host, "SELECT @@binlog_format, @@default_storage_engine, @@innodb_autoinc_lock_mode, "
                    "@@innodb_flush_log_at_trx_commit, @@wsrep_sst_method, @@wsrep_cluster_address, "
                    "@@wsrep_node_name, @@wsrep_cluster_name")[0]
    assert row == ["ROW", "InnoDB", "2", "1", "mariabackup",
                   "gcomm://10.89.61.11,10.89.61.12,10.89.61.13", name, "zerolab"]


def test_settings_file_with_the_sst_password_is_not_world_readable(host):
    config = host.file("/etc/mysql/mariadb.conf.d/60-galera.cnf")
    assert config.user == "root"
    assert config.group == "mysql"
    assert config.mode == 0o640


def test_sst_user_has_only_what_mariabackup_needs(host):
    grants = " ".join(row[0] for row in sql(host, "SHOW GRANTS FOR sst@localhost"))
    assert "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.*" in grants
    for too_much in ("ALL PRIVILEGES", "SUPER", "GRANT OPTION", "SELECT"):
        assert too_much not in grants


def test_root_logs_in_through_the_unix_socket(host):
    assert sql(host, "SELECT CURRENT_USER()") == [["root@localhost"]]
    create = sql(host, "SHOW CREATE USER root@localhost")[0][0]
    assert "unix_socket" in create


def test_a_row_written_on_node_1_is_read_on_node_3_and_every_node(host):
    marker = f"{host.check_output('hostname')}-{uuid.uuid4()}"
    sql(node("galera1"), "CREATE TABLE IF NOT EXISTS zerolab_test.replication "
                         "(marker VARCHAR(80) PRIMARY KEY) ENGINE=InnoDB")
    sql(node("galera1"), f"INSERT INTO zerolab_test.replication VALUES ('{marker}')")
    for name in ("galera3", *NODES):
        # wsrep_sync_wait: the read waits until the node applied earlier writes.
        rows = sql(node(name), "SET SESSION wsrep_sync_wait = 1; "
                               f"SELECT marker FROM zerolab_test.replication WHERE marker = '{marker}'")
        assert rows == [[marker]], name


def http(host, url):
    """GET url from the node; returns "<status> <body>" (no curl on a bare node)."""
    script = ("import sys, urllib.request, urllib.error\n"
              "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
              "except urllib.error.HTTPError as e:\n r = e\n"
              "print(r.status, r.read().decode())")
    return host.check_output("python3 -c %s %s", script, url)


def http_until(host, url, status, seconds=5.0):
    """GET url until it answers status (the endpoint's status may be a second old); the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        answer = http(host, url)
        if answer.startswith(status) or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def own_health_url(host):
    return f"http://{ADDRESSES[host.check_output('hostname')]}:9200/"


def test_health_check_says_200_when_synced(host):
    assert host.service("galera-health").is_running
    assert host.service("galera-health").is_enabled
    answer = http(host, own_health_url(host))
    assert answer.startswith("200 Synced"), answer


def test_health_check_listens_on_the_cluster_address_only(host):
    assert host.socket(f"tcp://{ADDRESSES[host.check_output('hostname')]}:9200").is_listening
    assert not host.socket("tcp://0.0.0.0:9200").is_listening


def test_health_check_says_503_when_not_synced(host):
    # A desynced node (as during a backup) must be taken out of the pool.
    # The endpoint answers from a status at most a second old: ask until it sees.
    sql(host, "SET GLOBAL wsrep_desync = ON")
    try:
        answer = http_until(host, own_health_url(host), "503")
        assert answer.startswith("503 not synced"), answer
        assert "wsrep_local_state_comment: Donor/Desynced" in answer
    finally:
        sql(host, "SET GLOBAL wsrep_desync = OFF")
        # Leave the node in the pool for the tests that follow.
        assert http_until(host, own_health_url(host), "200").startswith("200 Synced")


@pytest.mark.parametrize("name", NODES)
def test_health_check_answers_other_nodes(host, name):
    address = ADDRESSES[name]
    assert http(host, f"http://{address}:9200/").startswith("200 Synced")


@pytest.mark.parametrize("name", NODES)
def test_a_client_without_tls_is_refused(host, name):
    plaintext = client(host, ADDRESSES[name], "--skip-ssl")
    assert plaintext.rc != 0
    # MariaDB 10.11 answers "Access denied" (later versions name the
    # transport): the same login over TLS, at once, succeeds.
    assert "Access denied" in plaintext.stderr or "insecure transport" in plaintext.stderr, plaintext.stderr
    assert client(host, ADDRESSES[name], "--ssl").rc == 0


@pytest.mark.parametrize("name", NODES)
def test_a_tls_client_gets_a_cipher_after_checking_the_cluster_ca(host, name):
    result = client(host, ADDRESSES[name], f"--ssl --ssl-ca={TLS}/ca.pem --ssl-verify-server-cert")
    assert result.rc == 0, result.stderr
    status = dict(line.split("\t") for line in result.stdout.splitlines())
    assert status["Ssl_cipher"], status
    assert status["Ssl_version"] in ("TLSv1.2", "TLSv1.3"), status


def test_a_server_certificate_of_another_ca_is_refused_by_a_verifying_client(host):
    # The system CAs never signed the lab CA: a verifying client must refuse.
    result = client(host, ADDRESSES["galera1"], "--ssl --ssl-ca=/etc/ssl/certs/ca-certificates.crt --ssl-verify-server-cert")
    assert result.rc != 0, result.stdout


def test_the_tls_key_is_readable_by_mysql_only(host):
    key = host.file(f"{TLS}/node.key")
    assert (key.user, key.group, key.mode) == ("root", "mysql", 0o640)
    assert host.file(TLS).mode == 0o750


def test_the_node_certificate_names_the_node_and_is_signed_by_the_ca(host):
    name = host.check_output("hostname")
    verify = host.run(f"openssl verify -CAfile {TLS}/ca.pem {TLS}/node.pem")
    assert verify.rc == 0, verify.stderr
    text = host.check_output(f"openssl x509 -in {TLS}/node.pem -noout -ext subjectAltName")
    assert f"DNS:{name}" in text and f"IP Address:{ADDRESSES[name]}" in text, text


def test_replication_runs_over_tls(host):
    options = sql(host, "SELECT @@wsrep_provider_options")[0][0]
    assert f"socket.ssl_cert = {TLS}/node.pem" in options, options
    assert f"socket.ssl_ca = {TLS}/ca.pem" in options, options
    # Galera logs the cipher of each peer link it opens.
    log = host.check_output("journalctl -u mariadb --no-pager -o cat")
    assert "SSL handshake successful" in log or "ssl" in log.lower(), log[-2000:]


def test_state_transfers_run_over_tls(host):
    settings = host.file("/etc/mysql/mariadb.conf.d/60-galera.cnf").content_string
    assert "[sst]\n" in settings and "ssl-mode = VERIFY_CA" in settings
    if host.check_output("hostname") != "galera1":
        # galera2 and galera3 joined by a full state transfer (SST) from a donor.
        log = host.check_output("journalctl -u mariadb --no-pager -o cat")
        assert "Using openssl based encryption with socat" in log, log[-3000:]


def test_a_dead_node_is_suspected_after_three_seconds_not_galeras_five(host):
    options = sql(host, "SELECT @@wsrep_provider_options")[0][0]
    assert "evs.suspect_timeout = PT3S" in options, options
