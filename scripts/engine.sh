#!/usr/bin/env bash
# Make sure a Docker engine, Compose v2 and the base image exist on this machine.
# Idempotent: every step checks first and does nothing when its result is already there.
# Used by .ci/run; users with Docker Desktop or a packaged Docker Engine never need it.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-debian:trixie-slim}"
LOG_DIR="${ENGINE_LOG_DIR:-/var/log}"

say() { printf '[engine] %s\n' "$*"; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. The engine. Debian 12's docker.io (20.10) is what these machines get from apt.
if ! command -v dockerd >/dev/null 2>&1; then
  say "installing docker.io from Debian packages"
  apt_install docker.io
fi
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $LOG_DIR/dockerd.log)"
  setsid dockerd >"$LOG_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s; see $LOG_DIR/dockerd.log"; exit 1; }
fi
say "engine $(docker version --format '{{.Server.Version}}')"

# 2. Compose v2. Debian 12 only ships v1; Debian 13's docker-compose package carries the
#    static v2 plugin, taken out with dpkg -x so that no newer libc comes along.
if ! docker compose version >/dev/null 2>&1; then
  say "installing the Compose v2 plugin from Debian 13's docker-compose package"
  src=/etc/apt/sources.list.d/debian.sources
  if [ ! -f /etc/apt/sources.list.d/trixie.sources ]; then
    sed -E 's/^Suites:.*/Suites: trixie/' "$src" | grep -v '^#' > /etc/apt/sources.list.d/trixie.sources
    # only the main archive: security suites differ in name
    awk 'BEGIN{RS="";ORS="\n\n"} !/debian-security/' /etc/apt/sources.list.d/trixie.sources > /tmp/trixie.sources
    mv /tmp/trixie.sources /etc/apt/sources.list.d/trixie.sources
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie-low
    apt_updated=0
  fi
  [ "$apt_updated" = 1 ] || { apt-get update -qq; apt_updated=1; }
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq docker-compose/trixie && dpkg -x docker-compose_*.deb x)
  mkdir -p /usr/local/lib/docker/cli-plugins
  cp "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/
  rm -rf "$tmp"
fi
say "$(docker compose version)"

# 3. The base image. Users pull it; here no registry is reachable, so build the same tag
#    with debootstrap from Debian's own archive.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "building $BASE_IMAGE with debootstrap (about a minute)"
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  root=$(mktemp -d)
  suite="${BASE_IMAGE#debian:}"; suite="${suite%-slim}"
  debootstrap --variant=minbase "$suite" "$root" >/tmp/debootstrap.log 2>&1 \
    || { say "debootstrap failed; see /tmp/debootstrap.log"; exit 1; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
  tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi
say "base image $BASE_IMAGE present"
