#!/usr/bin/env bash
# A Docker engine and compose for docker-compose.yml on a machine that
# reaches Debian's packages and the Go module proxy but no container
# registry (CI, and developers' machines like it).
#
#   deploy/docker-env.sh setup    # docker.io, debootstrap, the compose plugin; dockerd if not running
#   deploy/docker-env.sh images   # stand-ins for the images docker-compose.yml pulls or builds
#   deploy/docker-env.sh stop     # stop the dockerd that setup started, if it did
#
# Then the stack runs as `go tool task up` does, with the stand-ins:
#   COMPOSE_FILE=docker-compose.yml:deploy/compose.standin.yml go tool task up
#
# Stand-ins (deploy/compose.standin.yml changes nothing but images):
#   sft-standin/debian:bookworm   debootstrap's minimal Debian, imported
#   sft-standin/nats:VERSION      nats-server of the version in go.mod, static, on that base
#   sft-standin/redis:7           Debian's redis-server on that base
#   sft-standin/sftd:local        sftd and sft-cli of this tree, static, on an empty image
#                                 (as deploy/Dockerfile's distroless one: nonroot user, CA bundle)
#
# What takes minutes is built once per machine and kept in SFT_CI_CACHE
# (default /var/cache/sft-ci), keyed by versions: the compose plugin (about
# 3 minutes on 2 cores) and the Debian root file system (about 1.5).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${SFT_CI_CACHE:-/var/cache/sft-ci}"
compose_version=v5.6.0
suite=bookworm
# The plugin goes where every docker CLI looks, whatever HOME or
# DOCKER_CONFIG say (CI runs the tests with a decoy HOME).
plugin_dir=/usr/local/lib/docker/cli-plugins
# Set by setup when it starts dockerd, read by stop.
started_pid=/run/sft-docker-env.dockerd.pid

log() { echo "docker-env: $*" >&2; }

# Whichever docker CLI is first on PATH (Debian's, or a newer one) talks
# to Debian's dockerd: the client settles on the engine's API version.
docker_ok() { docker info >/dev/null 2>&1; }

setup() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # The compose v2 CLI plugin is not packaged in Debian 12: build it from
  # its Go module. `go install` refuses the module (it has exclude
  # directives), so it is built inside the downloaded module's directory.
  local built="$cache/compose-$compose_version-$(go env GOVERSION)/docker-compose"
  if [[ ! -x $built ]]; then
    log "building the compose plugin $compose_version (a few minutes, once per machine)"
    local dir
    dir="$(cd / && GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v5@$compose_version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    mkdir -p "$(dirname "$built")"
    (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
      -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$compose_version" \
      -o "$built.tmp" ./cmd)
    mv "$built.tmp" "$built"
  fi
  if ! cmp -s "$built" "$plugin_dir/docker-compose"; then
    install -D -m 0755 "$built" "$plugin_dir/docker-compose"
  fi

  if ! docker_ok; then
    log "starting dockerd"
    mkdir -p "$(dirname "$started_pid")"
    nohup dockerd >/var/log/sft-dockerd.log 2>&1 &
    echo $! >"$started_pid"
    for _ in $(seq 120); do
      docker_ok && break
      if ! kill -0 "$(cat "$started_pid")" 2>/dev/null; then
        rm -f "$started_pid"
        log "dockerd exited; its log:"
        tail -n 30 /var/log/sft-dockerd.log >&2
        exit 1
      fi
      sleep 0.5
    done
    docker_ok || { log "dockerd did not answer within a minute; see /var/log/sft-dockerd.log"; exit 1; }
  fi
  docker version --format 'docker-env: docker client {{.Client.Version}}, engine {{.Server.Version}}' >&2
  docker compose version >&2
}

stop() {
  [[ -f $started_pid ]] || return 0
  local pid
  pid="$(cat "$started_pid")"
  rm -f "$started_pid"
  kill -0 "$pid" 2>/dev/null || return 0
  log "stopping the dockerd setup started (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "dockerd (pid $pid) still running after 30 s"
  return 1
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

# build_image TAG DIR: docker build of DIR (its Dockerfile) as TAG, quietly.
build_image() {
  log "building $1"
  # Without buildx the CLI warns that the classic builder is deprecated;
  # its output matters only when the build fails.
  docker build -q -t "$1" "$2" >"$2.log" 2>&1 || { cat "$2.log" >&2; return 1; }
}

images() {
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN

  local base="sft-standin/debian:$suite"
  if ! has_image "$base"; then
    local tarball="$cache/debian-$suite-minbase.tar"
    if [[ ! -s $tarball ]]; then
      log "debootstrap $suite (about 1.5 minutes, once per machine)"
      mkdir -p "$cache"
      # wget answers the nats service's health check, as busybox's does in
      # the nats image.
      debootstrap --variant=minbase --include=wget "$suite" "$tmp/root" http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1 ||
        { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }
      rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
      tar -C "$tmp/root" -cf "$tarball.tmp" .
      mv "$tarball.tmp" "$tarball"
      rm -rf "$tmp/root"
    fi
    log "importing $base"
    docker import "$tarball" "$base" >/dev/null
  fi

  local nats_version
  nats_version="$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)"
  local nats="sft-standin/nats:${nats_version#v}"
  if ! has_image "$nats"; then
    mkdir -p "$tmp/nats"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/nats/nats-server" github.com/nats-io/nats-server/v2
    # As the nats image: arguments are nats-server's.
    cat >"$tmp/nats/Dockerfile" <<EOF
FROM $base
COPY nats-server /usr/local/bin/nats-server
ENTRYPOINT ["nats-server"]
EOF
    build_image "$nats" "$tmp/nats"
  fi

  local redis=sft-standin/redis:7
  if ! has_image "$redis"; then
    mkdir -p "$tmp/redis"
    # As the redis image: the redis user in /data, where the volume's
    # first mount copies that ownership, and protected mode off unless
    # the command says otherwise (that image's build changes the default),
    # since the services connect from other containers.
    cat >"$tmp/redis/redis-entrypoint" <<'EOF'
#!/bin/sh
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
EOF
    chmod 0755 "$tmp/redis/redis-entrypoint"
    cat >"$tmp/redis/Dockerfile" <<EOF
FROM $base
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null \\
 && rm -rf /var/lib/apt/lists/* && mkdir /data && chown redis:redis /data
COPY redis-entrypoint /usr/local/bin/redis-entrypoint
USER redis
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
EOF
    build_image "$redis" "$tmp/redis"
  fi

  # Always rebuilt: it is this tree's code.
  mkdir -p "$tmp/sftd/etc"
  CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/sftd/" ./services/sftd ./cli/sft-cli
  cp /etc/ssl/certs/ca-certificates.crt "$tmp/sftd/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$tmp/sftd/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$tmp/sftd/etc/group"
  cat >"$tmp/sftd/Dockerfile" <<'EOF'
FROM scratch
COPY etc/ /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY sftd sft-cli /
USER 65532:65532
ENTRYPOINT ["/sftd"]
EOF
  build_image sft-standin/sftd:local "$tmp/sftd"
}

case "${1:-}" in
setup) setup ;;
images) images ;;
stop) stop ;;
*)
  echo "usage: $0 setup|images|stop" >&2
  exit 2
  ;;
esac
