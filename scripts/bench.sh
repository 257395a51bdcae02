#!/usr/bin/env bash
# make bench: throughput and latency of the app on the local host, measured with oha
# (crates.io, installed into .local/tools). A benchmark, not a test: it asserts nothing and
# prints a Markdown table (also saved to .local/bench/latest.md) for docs/benchmarks.md.
#
# Env: BENCH_REQUESTS (default 2000 per run), BENCH_CONCURRENCY (default "1 16").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUESTS=${BENCH_REQUESTS:-2000}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16"}
OHA=.local/tools/bin/oha
OHA_VERSION=1.16.0
mkdir -p .local/bench .local/logs

if [ ! -x "$OHA" ]; then
    echo "installing oha $OHA_VERSION into .local/tools (once)..."
    cargo install --quiet --locked --root .local/tools oha --version "$OHA_VERSION"
fi

bash scripts/stack.sh up >/dev/null
make --no-print-directory build build-test-fixtures >/dev/null
target/native/admin migrate up >/dev/null

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts the host in the background; prints the base URL once it serves.
start_host() {
    local log=$1; shift
    local out
    out=$(mktemp)
    target/native/spin-local up --listen 127.0.0.1:0 "$@" >"$out" 2>"$log" &
    pids+=($!)
    for _ in $(seq 1 200); do
        if grep -q '^Serving ' "$out"; then
            sed -n 's/^Serving //p' "$out" | head -n1
            return 0
        fi
        sleep 0.05
    done
    echo "the host did not start; see $log" >&2
    return 1
}

app=$(start_host .local/logs/bench-app.log --from spin.toml)
probe=$(SPIN_VARIABLE_SECRET_TOKEN=bench start_host .local/logs/bench-probe.log \
    --from tests/fixtures/probe/spin.toml --env-file /dev/null --state-dir .local/bench/probe-state)

# name|url
routes=(
    "bare hello (probe component)|$probe/hello"
    "GET /api/v3/auth/health (SELECT 1)|$app/api/v3/auth/health"
    "GET /api/v3/customers/health (SELECT 1 + chained auth health)|$app/api/v3/customers/health"
)

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)"
{
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $machine; load generator: oha $OHA_VERSION (keep-alive), $REQUESTS requests per row after 200 warm-up requests."
    echo
    echo "| route | concurrency | requests/s | p50 ms | p99 ms | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for entry in "${routes[@]}"; do
        name=${entry%%|*}
        url=${entry#*|}
        "$OHA" --no-tui -n 200 -c 4 "$url" >/dev/null
        for c in $CONCURRENCY; do
            "$OHA" --no-tui --output-format json -n "$REQUESTS" -c "$c" "$url" > .local/bench/run.json
            python3 - "$name" "$c" .local/bench/run.json <<'PY'
import json, sys
name, c, path = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(path))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(d.get("errorDistribution", {}).values())
print(f"| {name} | {c} | {s['requestsPerSec']:.0f} | {p['p50']*1000:.2f} | {p['p99']*1000:.2f} | {errors} |")
PY
        done
    done
} | tee .local/bench/latest.md
