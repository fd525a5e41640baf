#!/usr/bin/env bash
# Provision a Docker engine and the local base image that build-image tests use.
#
# Run as root on Debian (CI and developer machines): installs docker.io when dockerd is missing,
# starts dockerd in the background when the engine is not answering, and builds the bookworm
# base image with debootstrap + `docker import` once (no registry pulls are possible here).
# Idempotent: a second run only checks and returns in about a second.
#
# Env: MLOPS_TEST_BASE_IMAGE (default mlops-test/bookworm-python:latest),
#      DOCKERD_LOG (default /var/log/mlops-dockerd.log).
set -euo pipefail

BASE_IMAGE=${MLOPS_TEST_BASE_IMAGE:-mlops-test/bookworm-python:latest}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/mlops-dockerd.log}
# apt's client, not whatever else is first on PATH: it matches the engine we start.
DOCKER=docker
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker

log() { echo "[docker.sh] $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (installs packages and starts dockerd)"
    exit 1
fi

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    apt_install docker.io
    [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: the engine must outlive this script and the shell that ran it.
    setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! "$DOCKER" info >/dev/null 2>&1; then
        log "dockerd did not answer within 60 s; last lines of $DOCKERD_LOG:"
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
fi
log "engine ready: $("$DOCKER" version --format '{{.Server.Version}}')"

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    rootfs=$(mktemp -d /var/tmp/mlops-bookworm.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrapping bookworm into $rootfs (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" >"$rootfs.log" 2>&1 || {
        tail -n 20 "$rootfs.log" >&2
        exit 1
    }
    rm -f "$rootfs.log"
    # A smaller image: apt lists and caches are of no use inside it.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | "$DOCKER" import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE"
fi
log "base image $BASE_IMAGE present"
