#!/usr/bin/env bash
# make bench: throughput and latency of the app on the local host, measured with oha
# (crates.io, installed into .local/tools). A benchmark, not a test: it asserts nothing and
# prints a Markdown table (also saved to .local/bench/latest.md) for docs/benchmarks.md.
#
# Env: BENCH_REQUESTS (default 2000 per run), BENCH_CONCURRENCY (default "1 16"); for the ratios'
# alternating rounds (below the tables) BENCH_ROUNDS (default 9), BENCH_ROUND_REQUESTS (400 per
# part) and BENCH_ROUND_LOGINS (20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUESTS=${BENCH_REQUESTS:-2000}
LOGINS=${BENCH_LOGINS:-40}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16"}
ROUNDS=${BENCH_ROUNDS:-9}
ROUND_REQUESTS=${BENCH_ROUND_REQUESTS:-400}
ROUND_LOGINS=${BENCH_ROUND_LOGINS:-20}
OHA=.local/tools/bin/oha
OHA_VERSION=1.16.0
mkdir -p .local/bench .local/logs

if [ ! -x "$OHA" ]; then
    echo "installing oha $OHA_VERSION into .local/tools (once)..."
    cargo install --quiet --locked --root .local/tools oha --version "$OHA_VERSION"
fi

bash scripts/stack.sh up >/dev/null
make --no-print-directory build build-test-fixtures >/dev/null
cargo build --quiet --profile native -p integration-tests --bin native-baselines
target/native/admin migrate up >/dev/null

. scripts/host.sh # start_host and the hosts' shared settings; the hosts stop when this script exits

set -a; . .local/stack.env; set +a
# argon2's memory stays resident (scripts/host.sh); a second host keeps Spin's default (2 MiB)
# for comparison.
app=$(start_host .local/logs/bench-app.log --from spin.toml)
app_spin_default=$(SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT=2097152 start_host .local/logs/bench-app-default.log --from spin.toml)
probe=$(SPIN_VARIABLE_SECRET_TOKEN=bench SPIN_VARIABLE_DB_ADDRESS="127.0.0.1:$DB_PORT" start_host .local/logs/bench-probe.log \
    --from tests/fixtures/probe/spin.toml --env-file /dev/null --state-dir .local/bench/probe-state)
# The probe's route that opens a connection and runs one statement: the floor of any request
# that reads MySQL (what the issue measured on Spin as "a component that only runs SELECT 1").
auth_db_url=$(sed -n 's/^SPIN_VARIABLE_AUTH_DB_URL=//p' .env)
select1_url="$probe/mysql?url=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$auth_db_url")&sql=SELECT%201"

# key|name|url
routes=(
    "hello|bare hello (probe component)|$probe/hello"
    "select1|probe: open a MySQL connection, SELECT 1|$select1_url"
    "auth-health|GET /api/v3/auth/health (SELECT 1)|$app/api/v3/auth/health"
    "customer-health|GET /api/v3/customers/health (SELECT 1; auth and Stripe checked at most every 5 s)|$app/api/v3/customers/health"
)

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)"

# Runs oha and prints one table row; keeps the JSON as .local/bench/<key>.json.
# Usage: measure <key> <name> <concurrency> <requests> <url> [oha args...]
measure() {
    local key=$1 name=$2 c=$3 n=$4 url=$5
    shift 5
    "$OHA" --no-tui --output-format json -n "$n" -c "$c" "$@" "$url" > ".local/bench/$key.json"
    python3 scripts/oha_report.py row ".local/bench/$key.json" "$name" "$c"
}

# The p50 in ms of a row, or nan (and a warning) when any answer was not 2xx.
p50() { python3 scripts/oha_report.py p50 ".local/bench/$1.json" ms; }

# A user to log in with and a token for /users/me.
email="bench-$(date +%s)-$RANDOM@example.com"
password="bench passphrase $RANDOM $RANDOM"
credentials=$(python3 -c 'import json,sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' "$email" "$password")
registration=$(python3 -c 'import json,sys; print(json.dumps({"name": "Bench User", "email": sys.argv[1], "password": sys.argv[2]}))' "$email" "$password")
token=$(curl -sf -X POST "$app/api/v3/auth/register" -H 'content-type: application/json' -d "$registration" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

{
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $machine; load generator: oha $OHA_VERSION (keep-alive), $REQUESTS requests per row after 200 warm-up requests (login: $LOGINS)."
    echo
    echo "| route | concurrency | requests/s | p50 ms | p99 ms | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for entry in "${routes[@]}"; do
        IFS='|' read -r key name url <<<"$entry"
        "$OHA" --no-tui -n 200 -c 4 "$url" >/dev/null
        for c in $CONCURRENCY; do
            measure "$key-c$c" "$name" "$c" "$REQUESTS" "$url"
        done
    done
    "$OHA" --no-tui -n 200 -c 1 -H "authorization: Bearer $token" "$app/api/v3/users/me" >/dev/null
    for c in $CONCURRENCY; do
        measure "me-c$c" "GET /api/v3/users/me (token claims, 1 query that reads the user and recognizes the token, decrypt email)" "$c" "$REQUESTS" "$app/api/v3/users/me" -H "authorization: Bearer $token"
    done
    "$OHA" --no-tui -n 3 -c 1 -m POST -H 'content-type: application/json' -d "$credentials" "$app/api/v3/auth/login" >/dev/null
    measure "login-c1" "POST /api/v3/auth/login (argon2id verify)" 1 "$LOGINS" "$app/api/v3/auth/login" -m POST -H 'content-type: application/json' -d "$credentials"
    "$OHA" --no-tui -n 3 -c 1 -m POST -H 'content-type: application/json' -d "$credentials" "$app_spin_default/api/v3/auth/login" >/dev/null
    measure "login-default-c1" "POST /api/v3/auth/login, Spin's default keep-resident (2 MiB)" 1 "$LOGINS" "$app_spin_default/api/v3/auth/login" -m POST -H 'content-type: application/json' -d "$credentials"

    baselines=$(target/native/native-baselines "$DB_ADMIN_URL" "$LOGINS" "$REQUESTS")
    hello=$(p50 hello-c1)
    me=$(p50 me-c1)
    login=$(p50 login-c1)
    login_default=$(p50 login-default-c1)
    select1=$(p50 select1-c1)
    auth_size=$(stat -c %s target/wasm32-wasip2/release/auth.wasm)
    customer_size=$(stat -c %s target/wasm32-wasip2/release/customer.wasm)
    python3 - "$baselines" "$hello" "$me" "$login" "$auth_size" "$customer_size" "$login_default" "$select1" <<'PY'
import json, sys
b = json.loads(sys.argv[1]); hello, me, login = map(float, sys.argv[2:5]); auth, customer = map(int, sys.argv[5:7])
login_default, select1 = map(float, sys.argv[7:9])
argon, select = b["argon2id_hash_p50_ms"], b["select1_fresh_connection_p50_ms"]
print()
print("| ratio (same run) | value | target |")
print("| --- | ---: | ---: |")
print(f"| login p50 {login:.1f} ms ÷ native argon2id hash p50 {argon:.1f} ms | {login/argon:.2f} | ≤ 2.0 |")
print(f"| login with Spin's default keep-resident p50 {login_default:.1f} ms ÷ native argon2id hash | {login_default/argon:.2f} | (≤ 2.0) |")
print(f"| /users/me p50 {me:.2f} ms ÷ (hello p50 {hello:.2f} ms + native fresh-connection SELECT 1 p50 {select:.2f} ms) | {me/(hello+select):.2f} | ≤ 1.5 |")
print(f"| floor: probe SELECT 1 p50 {select1:.2f} ms ÷ the same denominator | {select1/(hello+select):.2f} | (Spin 4.0.2: 1.34) |")
print(f"| auth.wasm size | {auth/1e6:.3f} MB ({auth:,} bytes) | ≤ 1 MB |")
print(f"| customer.wasm size | {customer/1e6:.3f} MB ({customer:,} bytes) | |")
PY

    # The same two ratios in alternating rounds (scripts/rounds_report.py): each round measures
    # a ratio's parts seconds apart, so the machine's drift between minutes, which moves one
    # run of a row by more than the margin of a target here, moves both parts alike.
    rounds=.local/bench/rounds-auth.tsv
    : >"$rounds"
    round() { python3 scripts/rounds_report.py measure "$@"; } # key warm-up n url [oha args]
    for _ in $(seq "$ROUNDS"); do
        read -r native_hash native_select < <(target/native/native-baselines "$DB_ADMIN_URL" "$ROUND_LOGINS" "$ROUND_REQUESTS" |
            python3 -c 'import json,sys; b = json.load(sys.stdin); print(b["argon2id_hash_p50_ms"], b["select1_fresh_connection_p50_ms"])')
        login=$(round login 2 "$ROUND_LOGINS" "$app/api/v3/auth/login" -m POST -H 'content-type: application/json' -d "$credentials")
        hello=$(round hello 20 "$ROUND_REQUESTS" "$probe/hello")
        me=$(round me 20 "$ROUND_REQUESTS" "$app/api/v3/users/me" -H "authorization: Bearer $token")
        python3 scripts/rounds_report.py add "$rounds" "login p50 ÷ native argon2id hash p50" "≤ 2.0" "$login" "$native_hash"
        python3 scripts/rounds_report.py add "$rounds" "/users/me p50 ÷ (hello p50 + native fresh-connection SELECT 1 p50)" "≤ 1.5" "$me" "$hello" "$native_select"
    done
    echo
    echo "$ROUNDS rounds; each: the native baselines ($ROUND_LOGINS hashes, $ROUND_REQUESTS connections), $ROUND_LOGINS logins, $ROUND_REQUESTS hello, $ROUND_REQUESTS /users/me."
    echo
    python3 scripts/rounds_report.py table "$rounds"
} | tee .local/bench/latest.md

# Customer figures (profile ratio, webhook ingest): a script of their own.
bash scripts/bench_customer.sh | tee -a .local/bench/latest.md
