#!/usr/bin/env bash
# Does the server's memory grow with the number of commits it has served?
#
#   bench/memory_per_commit.sh                      5,000 commits, local repository
#   COMMITS=1000 MODE=remote bench/memory_per_commit.sh
#
# Starts the release `confhub` (no subscribers, no config requests) on a fresh copy of
# examples/config-repo, makes COMMITS commits — each a one-line change to one service
# file, cycling over orders.yml, payments.yml and inventory.yml — and after each waits
# (10 s deadline) until `/v1/status` reports that commit as the served version. RSS
# (VmRSS and RssAnon of /proc/PID/status) is printed at the start, every SAMPLE commits,
# and at the end, with the growth per commit between N/2 and N (past the warm-up).
#
# Settings (environment):
#   COMMITS   commits to make (default 5000)
#   SAMPLE    print RSS every SAMPLE commits (default COMMITS/10)
#   MODE      local: the server reads the repository directly and watches its refs;
#             remote: it serves a file:// clone, fetched on a GitLab-style webhook per
#             commit (default local)
#   CONFHUB   the binary (default $CARGO_TARGET_DIR or target, /release/confhub; built
#             if missing)
#   WRAP      a command to run the server under, e.g. WRAP="heaptrack -o /tmp/confhub"
#             (RSS figures then include the profiler's own)
#   STOP_SIGNAL  how the server is stopped at the end (default TERM; KILL leaves under
#             heaptrack everything still allocated as "leaked": what the server held)
#   OUT       where the repository, data dir and server log go (default a temp dir)
#   SMAPS     set: copy /proc/PID/smaps to OUT/smaps-<commits> at each sample
#   EXTRA     more `confhub serve` arguments, e.g. EXTRA="--set limits.x=y"
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

commits="${COMMITS:-5000}"
sample="${SAMPLE:-$(( commits >= 10 ? commits / 10 : 1 ))}"
mode="${MODE:-local}"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="${CONFHUB:-$target/release/confhub}"
if [ ! -x "$bin" ]; then
  cargo build --release -p confhub-server
fi
out="${OUT:-$(mktemp -d /tmp/confhub-mem.XXXXXX)}"
mkdir -p "$out"
work="$out/repo"
rm -rf "$work" "$out/data"
cp -r "$root/examples/config-repo" "$work"
git -C "$work" init -q -b main
git -C "$work" -c user.name=bench -c user.email=bench@confhub.invalid add -A
git -C "$work" -c user.name=bench -c user.email=bench@confhub.invalid commit -q -m "initial"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
secret="bench-secret"
args=(serve --listen "127.0.0.1:$port")
case "$mode" in
  local) args+=(--repo "$work" --poll 30s) ;;
  remote) args+=(--repo "file://$work" --data-dir "$out/data" --poll 1h --webhook-secret "$secret") ;;
  *) echo "MODE must be local or remote" >&2; exit 2 ;;
esac
# shellcheck disable=SC2206
args+=(${EXTRA:-})

# shellcheck disable=SC2086
RUST_LOG="${RUST_LOG:-warn}" ${WRAP:-} "$bin" "${args[@]}" >"$out/server.log" 2>&1 &
launched=$!
cleanup() {
  # Only what this script started: the server (or its wrapper), by pid.
  [ -n "${pid:-}" ] && kill -s "${STOP_SIGNAL:-TERM}" "$pid" 2>/dev/null || true
  kill "$launched" 2>/dev/null || true
  wait "$launched" 2>/dev/null || true
}
trap cleanup EXIT

deadline=$(( $(date +%s) + 60 ))
until curl -fs "$base/readyz" >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$launched" 2>/dev/null; then
    echo "server did not become ready; log:" >&2; cat "$out/server.log" >&2; exit 1
  fi
  sleep 0.05
done
# The process listening (under WRAP, not the wrapper's pid).
pid="$(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)"
[ -n "$pid" ] || pid="$launched"

rss() { awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} END {printf "%d %d\n", r, a}' "/proc/$pid/status"; }

wait_served() {
  local sha="$1" until=$(( $(date +%s) + 10 ))
  while :; do
    if curl -fs "$base/v1/status" | grep -q "\"version\":\"$sha\""; then return 0; fi
    if [ "$(date +%s)" -ge "$until" ]; then
      echo "commit $sha not served within 10 s; log:" >&2; tail -20 "$out/server.log" >&2; exit 1
    fi
    sleep 0.005
  done
}

files=(orders.yml payments.yml inventory.yml)
commit_one() {
  local i="$1" f="${files[$(( $1 % 3 ))]}"
  # One real change: a key whose value is the commit number.
  sed -i '/^bench-revision:/d' "$work/$f"
  echo "bench-revision: $i" >>"$work/$f"
  git -C "$work" -c user.name=bench -c user.email=bench@confhub.invalid commit -q -a -m "bench: $f revision $i"
  if [ "$mode" = remote ]; then
    curl -fs -o /dev/null -X POST -H "X-Gitlab-Token: $secret" -H 'X-Gitlab-Event: Push Hook' \
      -H 'Content-Type: application/json' -d '{"object_kind":"push"}' "$base/v1/webhook"
  fi
  wait_served "$(git -C "$work" rev-parse HEAD)"
}

echo "mode=$mode commits=$commits pid=$pid binary=$bin out=$out"
read -r start_rss start_anon < <(rss)
echo "commits=0 rss_kib=$start_rss anon_kib=$start_anon"
if [ -n "${SMAPS:-}" ]; then cp "/proc/$pid/smaps" "$out/smaps-0"; fi
half_rss=$start_rss
half_anon=$start_anon
started=$(date +%s)
for i in $(seq 1 "$commits"); do
  commit_one "$i"
  if [ $(( i % sample )) -eq 0 ] || [ "$i" -eq $(( commits / 2 )) ]; then
    read -r r a < <(rss)
    echo "commits=$i rss_kib=$r anon_kib=$a"
    if [ -n "${SMAPS:-}" ]; then cp "/proc/$pid/smaps" "$out/smaps-$i"; fi
    if [ "$i" -eq $(( commits / 2 )) ]; then half_rss=$r; half_anon=$a; fi
  fi
done
read -r end_rss end_anon < <(rss)
took=$(( $(date +%s) - started ))
half=$(( commits - commits / 2 ))
echo "summary: start ${start_rss} KiB, after $(( commits / 2 )) ${half_rss} KiB, after ${commits} ${end_rss} KiB (RssAnon ${start_anon} / ${half_anon} / ${end_anon} KiB) in ${took} s"
awk -v a="$half_anon" -v b="$end_anon" -v r1="$half_rss" -v r2="$end_rss" -v n="$half" \
  'BEGIN { printf "growth per commit over the second half: VmRSS %.0f B, RssAnon %.0f B\n", (r2-r1)*1024/n, (b-a)*1024/n }'
curl -fs "$base/metrics" >"$out/metrics.txt" || true
