# Shared by the scripts in this folder: paths, messages, podman settings.
# shellcheck shell=bash

ZEROLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZEROLAB_VENV="${ZEROLAB_VENV:-$ZEROLAB_ROOT/.venv}"
ZEROLAB_BUILD="${ZEROLAB_BUILD:-$ZEROLAB_ROOT/build}"
ZEROLAB_IMAGE_NAME="${ZEROLAB_IMAGE_NAME:-localhost/zerolab-node}"

# Every podman call of the project goes through the project's own settings.
export CONTAINERS_CONF="$ZEROLAB_ROOT/containers.conf"
export PATH="$ZEROLAB_VENV/bin:$PATH"

# The host daemons the lab leans on (the package cache, libvirt) are started
# from Python: `python -m zerolab.lab.hostdaemons --help`.
host_daemon() { "$ZEROLAB_VENV/bin/python" -m zerolab.lab.hostdaemons "$@"; }

# Heavy work (a Molecule scenario, VMs) runs one at a time on a small machine.
# --close: daemons started inside (libvirtd, the package cache) must not keep
# holding the lock after the command ends.
ZEROLAB_HEAVY_LOCK="${ZEROLAB_HEAVY_LOCK:-/tmp/zerolab-heavy.lock}"
one_at_a_time() { flock --close "$ZEROLAB_HEAVY_LOCK" "$@"; }

say() { printf '==> %s\n' "$*" >&2; }
# `SCRIPT --help` (or -h) prints the comment at the top of the script, which
# is its usage, and exits; call it first thing with the script's arguments.
usage_if_asked() {
    case "${1:-}" in
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    esac
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Debian's archive and security archive as the host's apt is configured for
# them, so users behind their own mirror get the same mirror in the lab.
debian_mirror() { python3 -P "$ZEROLAB_ROOT/src/zerolab/lab/hostconfig.py" debian-mirror; }
debian_security_mirror() { python3 -P "$ZEROLAB_ROOT/src/zerolab/lab/hostconfig.py" debian-security-mirror; }
# The package names in the given lists (one per line, # comments), comma
# separated as debootstrap's --include wants them.
package_list() { sed 's/#.*//' "$@" | xargs | tr ' ' ','; }

podman_usable() {
    command -v podman >/dev/null 2>&1 || return 1
    podman info >/dev/null 2>&1
}

