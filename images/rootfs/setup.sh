#!/bin/sh
# Runs inside a freshly debootstrapped root file system (chroot) and turns it
# into a zerolab machine: the node image's containers (scripts/build-image)
# and the Vagrant box's VMs (scripts/build-box) alike.  Part of both recipes:
# changing it rebuilds both.
#
#   setup.sh ADMIN_USER container
#   setup.sh ADMIN_USER vm AUTHORIZED_KEYS_FILE
#
# Both get: the admin user with passwordless sudo, SSH with host keys made on
# first boot, an empty machine-id (each machine makes its own), apt through
# the host's package cache when it answers.  A container gets units it has no
# use for masked and its package lists kept; a VM gets DHCP on its first NIC,
# the key in AUTHORIZED_KEYS_FILE and no package lists (its first apt run
# fetches fresh ones).
set -eu
admin="$1"
kind="$2"
case "$kind" in
    container | vm) ;;
    *) echo "setup.sh: the kind is 'container' or 'vm', not '$kind'" >&2; exit 2 ;;
esac

useradd --create-home --shell /bin/bash --groups sudo "$admin"
echo "$admin ALL=(ALL) NOPASSWD: ALL" > "/etc/sudoers.d/$admin"
chmod 0440 "/etc/sudoers.d/$admin"
install -d -m 0700 -o "$admin" -g "$admin" "/home/$admin/.ssh"

# Each machine gets its machine-id and SSH host keys on first boot, not here.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
# Debian's unit checks the configuration (sshd -t) first, which fails with
# no host keys: make the keys before that check.
cat > /etc/systemd/system/ssh.service.d/host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
systemctl enable --quiet ssh.service

# The host's package cache, when there is one (see apt-proxy-detect).
install -m 0755 /tmp/apt-proxy-detect /usr/local/sbin/zerolab-apt-proxy-detect
echo 'Acquire::http::Proxy-Auto-Detect "/usr/local/sbin/zerolab-apt-proxy-detect";' > /etc/apt/apt.conf.d/01zerolab-proxy

if [ "$kind" = container ]; then
    passwd --lock "$admin" >/dev/null
    # Units that have nothing to do in a container and only slow the boot.
    systemctl mask systemd-udevd.service systemd-udev-trigger.service \
        systemd-modules-load.service sys-kernel-config.mount \
        getty@tty1.service console-getty.service systemd-resolved.service 2>/dev/null || true
    apt-get update -qq && apt-get clean
    # Package lists stay: apt on a fresh node is ready at once.
    exit 0
fi

# A VM: Vagrant's conventions (the password is the user's name, the key is
# Vagrant's insecure one, which Vagrant replaces on first `vagrant up`).
echo "$admin:$admin" | chpasswd
install -m 0600 -o "$admin" -g "$admin" /tmp/authorized_keys "/home/$admin/.ssh/authorized_keys"
# DHCP on the first NIC only.  Vagrant writes its private_network files as
# 50-vagrant-<dev>.network; a 99- file sorts after them and never wins.
cat > /etc/systemd/network/99-zerolab-dhcp.network <<'NETWORK'
[Match]
Name=eth0

[Network]
DHCP=ipv4
NETWORK
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
systemctl enable --quiet systemd-networkd.service systemd-resolved.service
apt-get clean
# No package lists in the box, and none that look fresh: a VM's first apt run
# (Ansible's cache_valid_time included) fetches them from its mirror.
rm -rf /var/lib/apt/lists/* /var/lib/apt/periodic/update-success-stamp /var/log/*.log
touch -d @0 /var/lib/apt/lists
