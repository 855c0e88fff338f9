#!/usr/bin/env bash
# `make package PG=15|16|17|18`: installable artifacts of the release build for one PostgreSQL major,
# in target/package/:
#   pg_lifecycle-<version>-pg<PG>.tar.gz  the files under the server's own paths
#                                         (pg_config --pkglibdir / --sharedir), from `cargo pgrx
#                                         package`, plus the frozen scripts of earlier releases
#   postgresql-15-lifecycle_<version>_amd64.deb   (PG=15) the same files for Debian's server
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG:?}" "${PG_CONFIG:?}" "${PG_FEATURES:?}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=target/package
tree=$out/tree-pg$PG
rm -rf "$tree" && mkdir -p "$out"
# shellcheck disable=SC2086
cargo pgrx package --pg-config "$PG_CONFIG" $PG_FEATURES --out-dir "$tree" >/dev/null
# cargo pgrx package writes the current script and the step scripts; add the frozen full
# scripts so that CREATE EXTENSION ... VERSION and upgrades from them work.
sharedir=$("$PG_CONFIG" --sharedir)
install -m 644 $(ls sql/pg_lifecycle--*.sql | grep -v -- '--.*--') "$tree$sharedir/extension/"
# Where the server keeps libraries and extension scripts under one prefix (the wheel's
# relocatable tree: lib/, share/), the tarball is relative to that prefix and unpacks into any
# copy of the tree (tar -xzf ... -C <tree>); else (Debian: /usr/lib/..., /usr/share/...) it is
# relative to / (tar -xzf ... -C /).
prefix=$(cd "$("$PG_CONFIG" --bindir)/.." && pwd)
case "$("$PG_CONFIG" --pkglibdir)" in "$prefix"/*) root=$tree$prefix ;; *) root=$tree ;; esac
case "$sharedir" in "$prefix"/*) ;; *) root=$tree ;; esac
tarball=$out/pg_lifecycle-$version-pg$PG.tar.gz
tar -czf "$tarball" -C "$root" .
echo "package: $tarball"
if [ "$PG" = 15 ]; then
    deb=$out/deb-pg15
    rm -rf "$deb" && mkdir -p "$deb/DEBIAN"
    cp -a "$tree/." "$deb/"
    cat > "$deb/DEBIAN/control" <<CONTROL
Package: postgresql-15-lifecycle
Version: $version
Architecture: $(dpkg --print-architecture)
Maintainer: pg_lifecycle developers <noreply@example.invalid>
Depends: postgresql-15
Section: database
Priority: optional
Description: pg_lifecycle for PostgreSQL 15
 Identity-data lifecycle inside PostgreSQL: token expiry, activity liveness,
 declarative retention. Add pg_lifecycle to shared_preload_libraries, then
 CREATE EXTENSION pg_lifecycle (or ALTER EXTENSION pg_lifecycle UPDATE).
CONTROL
    debfile=$out/postgresql-15-lifecycle_${version}_$(dpkg --print-architecture).deb
    dpkg-deb --root-owner-group --build "$deb" "$debfile" >/dev/null
    echo "package: $debfile"
fi
