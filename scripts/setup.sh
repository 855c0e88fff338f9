#!/usr/bin/env bash
# Installs everything pg_lifecycle needs on a fresh Debian machine, idempotently.
# A second run only checks and returns in seconds.
set -euo pipefail

PG_MAJOR=15
PGRX_VERSION=0.18.1
PACKAGES=(
    "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-$PG_MAJOR-cron"
    sudo clang libclang-dev pkg-config make
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    echo "setup: installing packages: $(echo $missing | tr '\n' ' ')"
    # Debian's postgresql package would create and start a 'main' cluster on 5432; we only
    # ever run throwaway clusters of our own, so ask it not to.
    as_root mkdir -p /etc/postgresql-common
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_cargo_pgrx() {
    if cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
        return 0
    fi
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes a few minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
}

install_packages
install_cargo_pgrx
echo "setup: ok (postgresql $PG_MAJOR, pg_cron, cargo-pgrx $PGRX_VERSION)"
