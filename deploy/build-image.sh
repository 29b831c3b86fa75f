#!/usr/bin/env bash
# Build and start the Colony image without a Docker engine: buildah (chroot isolation) as
# root. See docs/deploy.md ("The image").
#
#   deploy/build-image.sh base    # a python:3.11 base image from Debian packages (mmdebstrap)
#   deploy/build-image.sh build   # base (when missing), then deploy/Dockerfile -> $COLONY_IMAGE
#   deploy/build-image.sh check   # start the image as Kubernetes runs it (read-only root,
#                                 # empty /tmp and data dir, uid 10001): --help; migrate, api
#                                 # /healthz and a worker when DATABASE_URL and
#                                 # TEMPORAL_ADDRESS are set
#   deploy/build-image.sh all     # build, then check (default)
#
# Environment:
#   COLONY_IMAGE   image to build and check (default localhost/colony:local)
#   PYTHON_IMAGE   base for both Dockerfile stages; when set (e.g. python:3.11-slim-bookworm
#                  where Docker Hub is reachable) no local base is built
#   DEBIAN_MIRROR  apt mirror for the local base (default http://deb.debian.org/debian)
#   EXTRA_CA_DIR   *.crt files added to the local base's trust store, for an egress proxy
#                  that re-signs TLS (default /usr/local/share/ca-certificates)
#   EXTRAS         Dockerfile build arg (optional dependency groups, e.g. e2b)
#   STORAGE_DRIVER buildah's storage driver (default: the store's, overlay where the kernel
#                  allows it as root; vfs works everywhere, slower, on a fresh store)
#   DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, COLONY_PAYLOAD_KEYS
#                  passed to the container by `check`; COLONY_CHECK_PORT is the API's port
#                  (default 18000). The container shares the host network.
set -euo pipefail

export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
buildah() { command buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} "$@"; }
COLONY_IMAGE="${COLONY_IMAGE:-localhost/colony:local}"
LOCAL_BASE=localhost/colony-python:3.11-bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
EXTRA_CA_DIR="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[build-image] %s\n' "$*" >&2; }
need() { type -P "$1" >/dev/null || { log "missing $1: apt-get install -y $2"; exit 2; }; }

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# The official python:3.11-slim-bookworm image, rebuilt from Debian packages: Debian's
# python3.11 (/usr/bin/python, with venv), passwd for useradd, and the CA bundle.
build_base() {
  need mmdebstrap mmdebstrap
  local work ctr
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  log "bootstrapping Debian bookworm from $DEBIAN_MIRROR"
  mmdebstrap --quiet --variant=apt \
    --include=python3.11,python3.11-venv,python3,python-is-python3,passwd,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$work/rootfs.tar" \
    "deb $DEBIAN_MIRROR bookworm main" \
    "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main"
  ctr="$(buildah from scratch)"
  buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
  if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
    log "adding CA certificates from $EXTRA_CA_DIR"
    buildah copy "$ctr" "$EXTRA_CA_DIR" /usr/local/share/ca-certificates/ >/dev/null
    buildah run "$ctr" -- update-ca-certificates >/dev/null
  fi
  # SSL_CERT_FILE: uv verifies TLS against its own roots unless pointed at the system's.
  buildah config --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
  log "base image $LOCAL_BASE"
}

build_image() {
  local base="${PYTHON_IMAGE:-}"
  if [[ -z "$base" ]]; then
    base="$LOCAL_BASE"
    image_exists "$base" || build_base
  fi
  log "building $COLONY_IMAGE from deploy/Dockerfile on $base"
  buildah build --layers --tag "$COLONY_IMAGE" \
    --build-arg PYTHON_IMAGE="$base" --build-arg EXTRAS="${EXTRAS:-}" \
    -f "$ROOT/deploy/Dockerfile" "$ROOT"
}

# Stop a command as a container runtime stops a container: SIGTERM to its PID 1, tini,
# which forwards it to colony.
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1"); do echo "$child"; descendants "$child"; done
}

stop_in_image() {
  local pid
  for pid in $(descendants "$1"); do
    [[ "$(ps -o comm= -p "$pid")" == tini ]] && kill -TERM "$pid" 2>/dev/null
  done
  return 0
}

# On any exit: kill what still runs in a container, remove the working container.
BACKGROUND=()
cleanup() {
  local pid
  for pid in "${BACKGROUND[@]}"; do
    # shellcheck disable=SC2046
    kill -KILL $(descendants "$pid") 2>/dev/null || true
  done
  if [[ -n "$CTR" ]]; then buildah umount "$CTR" >/dev/null 2>&1 || true; fi
  if [[ -n "$CTR" ]]; then buildah rm "$CTR" >/dev/null 2>&1 || true; fi
}

# Run one command in the image as a Kubernetes pod of deploy/k8s runs it: the image's
# root filesystem read-only, empty writable /tmp and data dir (the pods' emptyDirs), uid
# 10001, only the image's environment plus ENV_ARGS, its working directory and entrypoint.
# A private mount namespace keeps the mounts away from the host.
ROOTFS=""
inspect_image() { buildah inspect --type image --format "$1" "$COLONY_IMAGE" | sed '/^$/d'; }
run_in_image() {
  local env entrypoint workdir user
  mapfile -t env < <(inspect_image '{{range .OCIv1.Config.Env}}{{println .}}{{end}}')
  mapfile -t entrypoint < <(inspect_image '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}')
  workdir="$(inspect_image '{{.OCIv1.Config.WorkingDir}}')"
  user="$(inspect_image '{{.OCIv1.Config.User}}')"
  unshare --mount --propagation private --fork /bin/bash -c '
    set -e
    root="$1" workdir="$2" user="$3"; shift 3
    mount --bind "$root" "$root"
    mount -o remount,bind,ro "$root"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    mount -t tmpfs -o "uid=${user%%:*},gid=${user##*:},mode=0700" tmpfs "$root/var/lib/colony"
    exec chroot --userspec="$user" "$root" /bin/sh -c '\''cd "$0" && exec /usr/bin/env -i "$@"'\'' \
      "$workdir" "$@"
  ' _ "$ROOTFS" "${workdir:-/}" "${user:-0:0}" "${env[@]}" "${ENV_ARGS[@]}" "${entrypoint[@]}" "$@"
}

check_image() {
  image_exists "$COLONY_IMAGE" || { log "no image $COLONY_IMAGE: run '$0 build' first"; exit 1; }
  local port="${COLONY_CHECK_PORT:-18000}" api_pid code
  # No PID namespace here, so tini is not PID 1: let it reap as a subreaper.
  ENV_ARGS=("COLONY_API_PORT=$port" COLONY_API_HOST=127.0.0.1 TINI_SUBREAPER=1)
  for var in DATABASE_URL TEMPORAL_ADDRESS TEMPORAL_NAMESPACE COLONY_PAYLOAD_KEYS; do
    if [[ -n "${!var:-}" ]]; then ENV_ARGS+=("$var=${!var}"); fi
  done
  trap cleanup EXIT
  trap 'exit 143' TERM INT
  CTR="$(buildah from "$COLONY_IMAGE")"
  ROOTFS="$(buildah mount "$CTR")"

  log "colony --help"
  run_in_image --help >/dev/null
  [[ "$(inspect_image '{{.OCIv1.Config.User}}')" == 10001:10001 ]] \
    || { log "the image should run as 10001:10001"; exit 1; }
  if [[ -z "${DATABASE_URL:-}" || -z "${TEMPORAL_ADDRESS:-}" ]]; then
    log "DATABASE_URL or TEMPORAL_ADDRESS unset: skipping migrate and api"
    return 0
  fi
  log "colony migrate"
  run_in_image migrate
  log "colony api on 127.0.0.1:$port"
  run_in_image api &
  api_pid=$!
  BACKGROUND+=("$api_pid")
  code=000
  for _ in $(seq 1 120); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)"
    [[ "$code" == 200 ]] && break
    kill -0 "$api_pid" 2>/dev/null || break
    sleep 1
  done
  curl -s "http://127.0.0.1:$port/healthz" >&2 || true
  echo >&2
  stop_in_image "$api_pid"
  wait "$api_pid" 2>/dev/null || true
  [[ "$code" == 200 ]] || { log "api /healthz answered $code"; exit 1; }
  log "api /healthz answered 200"

  # One worker process serving every lane: each lane's activities and workflows load and
  # poll; SIGTERM stops it and it exits 0.
  local lanes=() worker_pid worker_log rc=0
  for lane in orchestration llm tools memory; do lanes+=(--lane "$lane"); done
  worker_log="$(mktemp)"
  log "colony worker ${lanes[*]}"
  run_in_image worker "${lanes[@]}" >"$worker_log" 2>&1 &
  worker_pid=$!
  BACKGROUND+=("$worker_pid")
  for _ in $(seq 1 120); do
    grep -q "worker serving lanes" "$worker_log" && break
    kill -0 "$worker_pid" 2>/dev/null || break
    sleep 1
  done
  if ! grep -q "worker serving lanes" "$worker_log"; then
    cat "$worker_log" >&2
    log "the worker did not start"; exit 1
  fi
  grep "worker serving lanes" "$worker_log" >&2
  stop_in_image "$worker_pid"
  wait "$worker_pid" || rc=$?
  rm -f "$worker_log"
  [[ "$rc" == 0 ]] || { log "the worker exited $rc after SIGTERM"; exit 1; }
  log "the worker stopped on SIGTERM (exit 0)"
}

need buildah buildah
case "${1:-all}" in
  base) build_base ;;
  build) build_image ;;
  check) check_image ;;
  all) build_image && check_image ;;
  *) log "usage: $0 [base|build|check|all]"; exit 2 ;;
esac
