#!/usr/bin/env bash
# deploy/build-base-images.sh - builds the base images debian:bookworm-slim and postgres:15 from
# Debian packages, for a Docker engine that cannot pull from a registry.
#
#   deploy/build-base-images.sh [--force] [--refresh]
#
# With a registry at hand nobody needs this: docker compose pulls both images. Without one,
# this script debootstraps a minimal bookworm root from the Debian mirror this machine's apt
# uses, slims it as the official image is slimmed, imports it as debian:bookworm-slim, and
# builds postgres:15 (deploy/postgres/) on top of it, so that deploy/Dockerfile and
# docker-compose.yml build and run unchanged.
#
# Images already present are kept. --force rebuilds both images (from the cached root);
# --refresh also debootstraps the root afresh. The root is cached as a tarball in
# var/docker-base/ (CRM_BASE_CACHE), so a second build takes seconds. DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR override the mirrors read from /etc/apt. Needs root (or sudo) for
# debootstrap, and the docker command.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CRM_BASE_CACHE:-$ROOT/var/docker-base}
SUITE=bookworm
BASE_IMAGE=debian:bookworm-slim
PG_IMAGE=postgres:15
TARBALL=$CACHE/debian-$SUITE-slim-rootfs.tar

say() { echo "build-base-images: $*" >&2; }
die() {
    say "$*"
    exit 1
}

force=0
refresh=0
for arg in "$@"; do
    case $arg in
    --force) force=1 ;;
    --refresh) force=1 refresh=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $arg (try --help)" ;;
    esac
done

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# mirror_for SUITE: the first URI this machine's apt uses for SUITE (deb822 or one-line format)
mirror_for() {
    local want=$1 f files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk -v want="$want" '
        function flush() {
            if (found == "" && uris != "" && (" " suites " ") ~ (" " want " ")) {
                split(uris, u, " "); found = u[1]
            }
            uris = ""; suites = ""
        }
        FNR == 1 { flush() }
        /^[[:space:]]*$/ { flush(); next }
        /^URIs:/ { uris = $0; sub(/^URIs:[[:space:]]*/, "", uris) }
        /^Suites:/ { suites = $0; sub(/^Suites:[[:space:]]*/, "", suites) }
        /^deb[[:space:]]/ {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if (found == "" && $(i + 1) == want) found = $i
        }
        END { flush(); print found }' "${files[@]}"
}

# --- the root file system ---------------------------------------------------------------
build_rootfs() {
    command -v debootstrap >/dev/null || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
            debootstrap >/dev/null || die "could not install debootstrap"
    }
    local mirror security
    mirror=${DEBIAN_MIRROR:-$(mirror_for "$SUITE")}
    mirror=${mirror:-http://deb.debian.org/debian}
    security=${DEBIAN_SECURITY_MIRROR:-$(mirror_for "$SUITE-security")}
    security=${security:-http://deb.debian.org/debian-security}

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/crm-rootfs.XXXXXX")
    local rootfs=$WORK/rootfs
    # debootstrap may leave /proc or /sys mounted inside the root when it fails: unmount
    # those before deleting, or rm would walk into them
    trap 'grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r "${SUDO[@]}" umount -l 2>/dev/null; "${SUDO[@]}" rm -rf "$WORK"' EXIT

    say "debootstrap $SUITE (minbase) from $mirror"
    "${SUDO[@]}" debootstrap --variant=minbase --components=main "$SUITE" "$rootfs" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 || {
        tail -n 30 "$WORK/debootstrap.log" >&2
        die "debootstrap failed"
    }

    # The same minimising configuration as the official slim image: no documentation,
    # manuals or translations, no cached packages or package lists, no services started
    # by package installation
    "${SUDO[@]}" bash -euo pipefail -s "$rootfs" "$SUITE" "$mirror" "$security" <<'SETUP'
rootfs=$1 suite=$2 mirror=$3 security=$4
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Files a container image does without
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
// Downloaded packages are deleted once installed: images stay small
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes" <<'EOF'
Acquire::GzipIndexes "true";
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'EOF'
Apt::AutoRemove::SuggestsImportant "false";
EOF
cat >"$rootfs/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# No init system in a container: package installation starts no service
exit 101
EOF
chmod 755 "$rootfs/usr/sbin/policy-rc.d"

# Bring the root up to date with bookworm-updates and the security archive
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get dist-upgrade -y -qq && apt-get clean' \
    >"$rootfs/../upgrade.log" 2>&1 || {
    tail -n 30 "$rootfs/../upgrade.log" >&2
    echo "could not bring the root up to date" >&2
    exit 1
}

# What the path-excludes would have kept out had they been there from the start
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/*
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
    "$rootfs"/root/.bash_history
mkdir -p "$rootfs/var/lib/apt/lists/partial" "$rootfs/var/cache/apt/archives/partial"
# The engine provides these per container
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/machine-id"
SETUP

    mkdir -p "$CACHE"
    "${SUDO[@]}" tar --numeric-owner --xattrs -C "$rootfs" -cf "$TARBALL.tmp" .
    "${SUDO[@]}" chown "$(id -u):$(id -g)" "$TARBALL.tmp"
    mv "$TARBALL.tmp" "$TARBALL"
    "${SUDO[@]}" rm -rf "$WORK"
    trap - EXIT
    say "root file system cached in ${TARBALL#"$ROOT"/} ($(du -h "$TARBALL" | cut -f1))"
}

started=$SECONDS
built_base=0
if [ $force -eq 1 ] || ! have_image "$BASE_IMAGE"; then
    if [ $refresh -eq 1 ] || [ ! -s "$TARBALL" ]; then
        build_rootfs
    else
        say "using the cached root ${TARBALL#"$ROOT"/} (--refresh makes a new one)"
    fi
    say "importing $BASE_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --change 'LABEL org.opencontainers.image.description="Debian bookworm, minbase, slimmed; built locally by deploy/build-base-images.sh"' \
        --message "debootstrap --variant=minbase $SUITE" \
        "$TARBALL" "$BASE_IMAGE" >/dev/null
    built_base=1
else
    say "$BASE_IMAGE is present"
fi

if [ $force -eq 1 ] || [ $built_base -eq 1 ] || ! have_image "$PG_IMAGE"; then
    say "building $PG_IMAGE from deploy/postgres"
    mkdir -p "$CACHE"
    docker build -t "$PG_IMAGE" "$ROOT/deploy/postgres" >"$CACHE/postgres-build.log" 2>&1 || {
        tail -n 30 "$CACHE/postgres-build.log" >&2
        die "could not build $PG_IMAGE (log in ${CACHE#"$ROOT"/}/postgres-build.log)"
    }
else
    say "$PG_IMAGE is present"
fi

say "done in $((SECONDS - started)) s: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$BASE_IMAGE" | tr '\n' ' ')$(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$PG_IMAGE")"
