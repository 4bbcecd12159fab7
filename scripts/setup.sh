#!/usr/bin/env bash
# Installs what KataAgent needs on a Debian 12 host and builds it. Idempotent; run as root.
#
#   scripts/setup.sh            packages + build + runner publish
#   SETUP_SKIP_BUILD=1 ...      packages only
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "error: run as root (installs Debian packages, drives containerd, CNI and iptables)"; exit 1
fi

# Runtime: containerd + runc + gVisor, CNI, netns/iptables tools, a registry for pull/push tests.
# Build: containerd's API protos (compiled at build time), the OCI runtime-spec schema (tests),
# debootstrap + clang for the base image and the runner's glibc-2.31 sysroot; python3-matplotlib
# and python3-ipython for the runner's media tests; redis-server, etcd-server, python3-zmq and python3-msgpack for
# the Backend.AI manager adapter's tests (each test starts its own servers on 127.0.0.1).
packages=(
  containerd runc runsc containernetworking-plugins iptables nftables iproute2 docker-registry busybox-static
  golang-github-containerd-containerd-dev golang-github-containerd-cgroups-dev
  golang-github-gogo-protobuf-dev golang-github-gogo-googleapis-dev golang-github-opencontainers-specs-dev
  debootstrap clang-14 binutils zstd python3 python3-matplotlib python3-ipython gcc make ca-certificates
  dropbear-bin tmux
  redis-server etcd-server python3-zmq python3-msgpack python3-redis
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No system services out of the install (redis, etcd, containerd): the agent and the tests start their own.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$had_policy" = 1 ] || rm -f "$policy"
fi
# The Debian containerd package may start a system containerd; the agent and the tests use
# their own private instances and need none.

if ! command -v dotnet >/dev/null 2>&1; then
  log "error: the .NET 10 SDK (dotnet) is not on PATH"; exit 1
fi

[ "${SETUP_SKIP_BUILD:-0}" = 1 ] && exit 0

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
log "building"
dotnet build "$repo_root/KataAgent.slnx" -nologo -v:q -clp:ErrorsOnly
log "publishing the kernel runner"
"$repo_root/scripts/publish-runner.sh" >/dev/null
log "done"
