"""What the common role promises on every node."""


def test_time_zone_is_the_configured_one(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Oslo"
    assert host.file("/etc/timezone").content_string.strip() == "Europe/Oslo"
    assert host.run("date +%Z").stdout.strip() in {"CET", "CEST"}


def test_base_and_extra_packages_are_installed(host):
    for name in ("curl", "less", "rsync", "tzdata", "jq"):
        assert host.package(name).is_installed, name


def test_admin_user_has_passwordless_sudo(host):
    admin = host.user("zerolab")
    assert admin.exists
    assert "sudo" in admin.groups
    assert admin.shell == "/bin/bash"
    with host.sudo("zerolab"):
        assert host.run("sudo -n id -u").stdout.strip() == "0"


def test_admin_user_has_the_authorized_key(host):
    keys = host.file("/home/zerolab/.ssh/authorized_keys")
    assert keys.user == "zerolab"
    assert keys.mode == 0o600
    assert "molecule@zerolab" in keys.content_string


def test_sshd_is_running_hardened_and_listening(host):
    assert host.service("ssh").is_running
    assert host.service("ssh").is_enabled
    assert host.socket("tcp://0.0.0.0:22").is_listening
    settings = host.run("sshd -T").stdout.lower().splitlines()
    assert "permitrootlogin no" in settings
    assert "passwordauthentication no" in settings


def test_systemd_is_the_init_and_healthy(host):
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    assert state in {"running", "degraded"}, state
    failed = host.run("systemctl --failed --no-legend --plain").stdout.strip()
    assert failed == "", failed


def test_admin_user_lingers(host):
    assert host.file("/var/lib/systemd/linger/zerolab").exists
