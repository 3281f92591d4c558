#!/usr/bin/env bash
# Stand-ins for the two public images the stack starts from, built from Debian packages only, for machines
# that cannot pull from a container registry (this project's CI machines). Normal users never need this:
# `docker compose` pulls python:3.11-slim and redis:7.2-alpine itself.
#
#   eval "$(docker/local-bases.sh)"      # builds (or reuses) the images, exports the variables compose reads
#
# What it builds (tags chosen here; the compose file only sees them through the two variables):
#   rvpo-local/debian:bookworm      debootstrap --variant=minbase, then `docker import`
#   rvpo-local/python:3.11-slim     + Debian's python3 (3.11) and python3-venv: stands in for python:3.11-slim
#   rvpo-local/redis:7              + Debian's redis-server (7.0): stands in for redis:7.2-alpine
# and prints `export RVPO_BASE_IMAGE=... RVPO_REDIS_IMAGE=...` on stdout (progress goes to stderr).
# The Python stand-in trusts this machine's CA bundle (the one pip is configured with, else the system's; or
# CA_BUNDLE=FILE), so pip inside the image builds reaches PyPI through a TLS-inspecting proxy too.
# Needs root, debootstrap and a running Docker engine; apt inside the builds uses the host's network.
# REBUILD=1 rebuilds images that already exist; DEBIAN_MIRROR picks another Debian mirror.
set -euo pipefail

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_TAG=rvpo-local/debian:$SUITE
PYTHON_TAG=rvpo-local/python:3.11-slim
REDIS_TAG=rvpo-local/redis:7
CA_BUNDLE=${CA_BUNDLE:-$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}

log() { echo "local-bases: $*" >&2; }
have() { [ -z "${REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

work=$(mktemp -d /tmp/rvpo-bases.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! have "$DEBIAN_TAG"; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    log "debootstrap $SUITE (minbase) from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$MIRROR" >&2
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/cache/apt/*.bin \
           "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* \
           "$work"/rootfs/usr/share/locale/*
    log "docker import -> $DEBIAN_TAG"
    tar -C "$work/rootfs" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' - "$DEBIAN_TAG" >&2
    rm -rf "$work/rootfs"
fi

# One image on top of the imported rootfs per stand-in: apt-get install, then drop apt's lists and caches.
build_on_debian() {  # TAG PACKAGES DOCKERFILE-TAIL
    local tag=$1 packages=$2 tail=$3
    if have "$tag"; then log "$tag exists (REBUILD=1 rebuilds)"; return; fi
    log "building $tag ($packages)"
    mkdir -p "$work/$tag"
    cp "$CA_BUNDLE" "$work/$tag/ca-certificates.crt"
    {
        echo "FROM $DEBIAN_TAG"
        echo "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends" \
             "$packages && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt" \
             "/usr/share/doc/* /usr/share/man/*"
        echo "$tail"
    } > "$work/$tag/Dockerfile"
    docker build --network host -t "$tag" "$work/$tag" >&2
}

build_on_debian "$PYTHON_TAG" "python3 python3-venv ca-certificates" \
'COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]'

# Like the official image: data in /data owned by the redis user, the server runs as that user and, started
# without a config file, listens on every interface with protected mode off (the entrypoint adds the flag).
build_on_debian "$REDIS_TAG" "redis-server redis-tools" \
'RUN mkdir -p /data && chown redis:redis /data \
 && printf "%s\\n" "#!/bin/sh" "[ \"\${1#-}\" != \"\$1\" ] && set -- redis-server \"\$@\"" \
      "[ \"\$1\" = redis-server ] && { shift; set -- redis-server --protected-mode no \"\$@\"; }" \
      "exec \"\$@\"" > /usr/local/bin/docker-entrypoint.sh && chmod 755 /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]'

echo "export RVPO_BASE_IMAGE=$PYTHON_TAG RVPO_REDIS_IMAGE=$REDIS_TAG"
