#!/usr/bin/env bash
# First and incremental `/v1/history/{service}/{env}` on a generated repository.
#
#   bench/history.sh [COMMITS] [CONFHUB]     defaults: 1500, target/release/confhub
#
# The repository (git fast-import, a few seconds): `application.yml`, ten services, and
# COMMITS commits that each change `orders.yml` (a new `pool`) and one other service's
# file, so every commit changes the asked pair: the worst case, where each commit is
# resolved. Then: the first request (a full scan), the same request again (nothing new),
# one more commit and the request again (one commit scanned). Each figure is the median
# of 5 servers started afresh; times are curl's `time_total`.
set -euo pipefail
cd "$(dirname "$0")/.."
commits="${1:-1500}"
confhub="${2:-target/release/confhub}"
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

repo="$work/repo"
git init -q -b main "$repo"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
git -C "$repo" config user.name bench
git -C "$repo" config user.email bench@confhub.invalid
{
  for ((i = 0; i < commits; i++)); do
    echo "commit refs/heads/main"
    echo "committer bench <bench@confhub.invalid> $((1700000000 + i)) +0000"
    msg="change $i"
    echo "data ${#msg}"; echo "$msg"
    if ((i == 0)); then
      body=$'region: eu\nlogging:\n  level: info\n'
      echo "M 100644 inline application.yml"; echo "data ${#body}"; echo "$body"
      body=$'tier: prod\n'
      echo "M 100644 inline application-prod.yml"; echo "data ${#body}"; echo "$body"
    fi
    body="db:
  pool: $i
  url: jdbc:postgresql://db/orders
feature:
  flag$((i % 7)): true"
    echo "M 100644 inline orders.yml"; echo "data ${#body}"; echo "$body"
    body="revision: $i"
    echo "M 100644 inline svc$((i % 10)).yml"; echo "data ${#body}"; echo "$body"
  done
  echo done
} | git -C "$repo" fast-import --quiet --done
git -C "$repo" reset -q --hard

port=18931
url="http://127.0.0.1:$port/v1/history/orders/prod?limit=1000"
t() { curl -s -o /dev/null -w '%{time_total}\n' "$url"; }
scanned() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^confhub_history_commits_scanned_total /{print $2}'; }
first=() again=() incr=()
for round in 1 2 3 4 5; do
  "$confhub" serve --repo "$repo" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
  first+=("$(t)")
  again+=("$(t)")
  echo "pool: $round" >"$repo/svc9.yml"
  printf 'db:\n  pool: %s\n' "$((100000 + round))" >"$repo/orders.yml"
  git -C "$repo" commit -qam "round $round"
  incr+=("$(t)")
  echo "round $round: first ${first[-1]} s, again ${again[-1]} s, after one commit ${incr[-1]} s; commits scanned $(scanned)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
echo "commits: $((commits + 5)) at most; medians of 5: first $(median "${first[@]}") s, again $(median "${again[@]}") s, after one commit $(median "${incr[@]}") s"
