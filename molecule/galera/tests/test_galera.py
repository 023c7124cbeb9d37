"""What the galera role promises on every node of a three-node cluster."""
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


def test_health_check_says_200_when_synced(host):
    assert host.service("galera-health").is_running
    assert host.service("galera-health").is_enabled
    answer = http(host, "http://127.0.0.1:9200/")
    assert answer.startswith("200 Synced"), answer


def test_health_check_says_503_when_not_synced(host):
    # A desynced node (as during a backup) must be taken out of the pool.
    sql(host, "SET GLOBAL wsrep_desync = ON")
    try:
        answer = http(host, "http://127.0.0.1:9200/")
        assert answer.startswith("503 not synced"), answer
        assert "wsrep_local_state_comment: Donor/Desynced" in answer
    finally:
        sql(host, "SET GLOBAL wsrep_desync = OFF")


@pytest.mark.parametrize("name", NODES)
def test_health_check_answers_other_nodes(host, name):
    address = {"galera1": "10.89.61.11", "galera2": "10.89.61.12", "galera3": "10.89.61.13"}[name]
    assert http(host, f"http://{address}:9200/").startswith("200 Synced")
