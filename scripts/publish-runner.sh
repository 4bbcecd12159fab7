#!/usr/bin/env bash
# Publishes the in-guest kernel runner (NativeAOT) so that it runs on glibc >= 2.31 guests.
#
# Why a sysroot: a plain NativeAOT publish links against this host's (Debian 12) glibc and then
# needs GLIBC_2.34. Linking against a Debian 11 (bullseye, glibc 2.31) sysroot with clang keeps the
# binary's symbol versions at or below 2.31. See docs: shared/DESIGN.md "Publishing the runner for old guests".
#
# Usage: scripts/publish-runner.sh [OUTPUT_DIR]
#   OUTPUT_DIR          default: <repo>/artifacts/runner (also settable via KATA_RUNNER_OUT)
#   KATA_AGENT_CACHE    cache dir for the sysroot, default /var/cache/kata-agent
#   KATA_RUNNER_CONFIGURATION  default Release
# Idempotent: the sysroot is made once and reused; re-running only re-publishes.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-${KATA_RUNNER_OUT:-$repo_root/artifacts/runner}}"
cache_dir="${KATA_AGENT_CACHE:-/var/cache/kata-agent}"
sysroot="$cache_dir/sysroot-bullseye"
configuration="${KATA_RUNNER_CONFIGURATION:-Release}"

log() { echo "publish-runner: $*" >&2; }

ensure_tools() {
  local missing=()
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v clang-14 >/dev/null 2>&1 || missing+=(clang-14)
  command -v objdump >/dev/null 2>&1 || missing+=(binutils)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing missing packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
      log "error: need root to apt-get install ${missing[*]}"; exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Absolute symlinks inside the sysroot point at the host's files (e.g. libpthread.so -> /lib/...);
# rewrite them to stay inside the sysroot, otherwise the linker silently mixes in the host's glibc.
rewrite_absolute_symlinks() {
  local root="$1" link target
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    case "$target" in
      /*) ln -sfn "$root$target" "$link" ;;
    esac
  done < <(find "$root" -xdev -type l -print0)
}

ensure_sysroot() {
  if [ -f "$sysroot/.kata-sysroot-complete" ]; then return; fi
  mkdir -p "$cache_dir"
  exec 9>"$cache_dir/.sysroot-bullseye.lock"
  flock 9
  if [ -f "$sysroot/.kata-sysroot-complete" ]; then return; fi
  local staging="$sysroot.staging"
  rm -rf "$staging"
  log "creating Debian 11 sysroot in $sysroot (debootstrap, about a minute)"
  debootstrap --variant=minbase --include=libc6-dev,libgcc-10-dev bullseye "$staging" >"$cache_dir/debootstrap.log" 2>&1 \
    || { log "debootstrap failed, see $cache_dir/debootstrap.log"; tail -20 "$cache_dir/debootstrap.log" >&2; exit 1; }
  rm -rf "$sysroot"
  mv "$staging" "$sysroot"
  # Rewrite after the move: the links must name the final location.
  rewrite_absolute_symlinks "$sysroot"
  touch "$sysroot/.kata-sysroot-complete"
}

ensure_tools
ensure_sysroot

log "publishing KataAgent.Runner ($configuration) to $out_dir"
mkdir -p "$out_dir"
dotnet publish "$repo_root/src/KataAgent.Runner/KataAgent.Runner.csproj" \
  -c "$configuration" -r linux-x64 \
  -p:PublishAot=true -p:SysRoot="$sysroot" -p:CppCompilerAndLinker=clang-14 \
  -o "$out_dir" -nologo -v:q

test -x "$out_dir/kata-runner" || { log "error: $out_dir/kata-runner was not produced"; exit 1; }
test -f "$out_dir/kata_runner_driver.py" || { log "error: driver script missing in $out_dir"; exit 1; }
test -f "$out_dir/batch-site/sitecustomize.py" || { log "error: batch-site/sitecustomize.py missing in $out_dir"; exit 1; }
max_glibc="$(objdump -T "$out_dir/kata-runner" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
log "done: $out_dir/kata-runner (highest GLIBC symbol version needed: $max_glibc)"
