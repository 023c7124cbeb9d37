# Shared by the scripts in this folder: paths, messages, podman settings.
# shellcheck shell=bash

ZEROLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZEROLAB_VENV="${ZEROLAB_VENV:-$ZEROLAB_ROOT/.venv}"
ZEROLAB_BUILD="${ZEROLAB_BUILD:-$ZEROLAB_ROOT/build}"
ZEROLAB_IMAGE_NAME="${ZEROLAB_IMAGE_NAME:-localhost/zerolab-node}"

# Every podman call of the project goes through the project's own settings.
export CONTAINERS_CONF="$ZEROLAB_ROOT/containers.conf"
export PATH="$ZEROLAB_VENV/bin:$PATH"

# One apt package cache for every lab container (mounted at
# /var/cache/apt/archives), so a package is downloaded once per machine.
ZEROLAB_APT_CACHE="${ZEROLAB_APT_CACHE:-/var/cache/zerolab/apt}"

# Heavy work (a Molecule scenario, VMs) runs one at a time on a small machine.
ZEROLAB_HEAVY_LOCK="${ZEROLAB_HEAVY_LOCK:-/tmp/zerolab-heavy.lock}"
one_at_a_time() { flock "$ZEROLAB_HEAVY_LOCK" "$@"; }

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Debian's archive and security archive as the host's apt is configured for
# them, so users behind their own mirror get the same mirror in the lab.
debian_mirror() { python3 -P "$ZEROLAB_ROOT/src/zerolab/hostconfig.py" debian-mirror; }
debian_security_mirror() { python3 -P "$ZEROLAB_ROOT/src/zerolab/hostconfig.py" debian-security-mirror; }

podman_usable() {
    command -v podman >/dev/null 2>&1 || return 1
    podman info >/dev/null 2>&1
}
