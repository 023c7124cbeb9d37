#!/bin/sh
# Runs inside the freshly debootstrapped root file system (chroot) and turns
# it into a lab node: an admin user with passwordless sudo, SSH, systemd.
# Part of the image recipe: changing it rebuilds the image.
set -eu
admin="$1"

useradd --create-home --shell /bin/bash --groups sudo "$admin"
passwd --lock "$admin"
echo "$admin ALL=(ALL) NOPASSWD: ALL" > "/etc/sudoers.d/$admin"
chmod 0440 "/etc/sudoers.d/$admin"
install -d -m 0700 -o "$admin" -g "$admin" "/home/$admin/.ssh"

# A container gets its machine-id and host keys on first boot, not at build.
: > /etc/machine-id
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
systemctl enable ssh.service

# The host's package cache, when there is one (see apt-proxy-detect).
install -m 0755 /tmp/apt-proxy-detect /usr/local/sbin/zerolab-apt-proxy-detect
echo 'Acquire::http::Proxy-Auto-Detect "/usr/local/sbin/zerolab-apt-proxy-detect";' > /etc/apt/apt.conf.d/01zerolab-proxy

# Units that have nothing to do in a container and only slow the boot.
systemctl mask systemd-udevd.service systemd-udev-trigger.service \
    systemd-modules-load.service sys-kernel-config.mount \
    getty@tty1.service console-getty.service systemd-resolved.service 2>/dev/null || true

apt-get update -qq && apt-get clean
# Package lists stay: apt on a fresh node is ready at once.
