#!/usr/bin/env bash
# Reproduce BENCHMARKS.md with one command.
#
#   bench/run.sh            full run (~10-15 min on 2 cores once built): 10,000 subscribers,
#                           100 services x 5 envs, 10,000 commits, 10 s wrk runs x 3
#   bench/run.sh --smoke    CI smoke run (< 1 min once built): 200 subscribers, a small
#                           repo, 2 s wrk runs, criterion benches run once each (--test)
#
# Extra arguments go to `confhub-bench run` (see `confhub-bench run --help`), e.g.
#   bench/run.sh --subscribers 2000 --only fanout,etcd
#
# Steps: install the Debian packages that are missing (wrk, nginx-light, etcd-server,
# protobuf-compiler for the etcd client), build the release `confhub` and the load tool,
# run the load tool (every server it starts is its own child and is stopped at the end),
# then the criterion benches. Results: $BENCH_OUT (default target/bench-results/<mode>):
# results.md, results.json, criterion.txt, and each server's log.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
if [ "${1:-}" = "--smoke" ]; then
  mode=smoke
  shift
fi
out="${BENCH_OUT:-target/bench-results/$mode}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# 1. Tools, from Debian's packages, only when missing.
need=()
command -v git >/dev/null || need+=(git)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# Debian's protoc needs the well-known types (descriptor.proto, struct.proto) beside it.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -q
  # Packages whose services would start (nginx, etcd) are not started in containers
  # without an init; the load tool runs its own instances on free loopback ports.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# 2. Build (release): the server binary as shipped, and the load tool with etcd support.
cargo build --release -p confhub-server -p confhub-bench --features confhub-bench/etcd
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
target="${target:-target}"

# 3. The load tool. It records the pid of every server it starts in $out/pids; if it is
# killed before stopping them, stop them here, by id (only processes whose command line
# names $out, so a reused pid is never hit).
: >"$out/pids"
cleanup() {
  while read -r pid; do
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
      tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$out"; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done <"$out/pids"
}
trap cleanup EXIT INT TERM

args=(run --out "$out" --confhub "$target/release/confhub")
if [ "$mode" = smoke ]; then args+=(--smoke); fi
"$target/release/confhub-bench" "${args[@]}" "$@"

# 4. criterion benches (same release build profile).
if [ "$mode" = smoke ]; then
  crit=(-- --test)
else
  crit=()
fi
{
  cargo bench -p confhub-server --bench resolve --bench snapshot "${crit[@]}"
  cargo bench -p confhub-client --bench watched "${crit[@]}"
} 2>&1 | tee "$out/criterion.txt"

echo "results: $out/results.md, $out/criterion.txt" >&2
