#!/usr/bin/env bash
# Customer figures for `make bench` (called by scripts/bench.sh, or alone after it):
# - GET /customers/me?include=profile ÷ GET /customers/me, with a warm profile cache and with a
#   cold one (a second host with profile_cache_ttl_secs=0), and the chained calls per request;
# - webhook ingest: events/s for valid (new ids), duplicate (same id) and stale (timestamp
#   outside the 300 s tolerance) events, signed with the app's real webhook secret.
# A benchmark: it asserts nothing. Needs the stack, the build and oha (scripts/bench.sh does both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OHA=.local/tools/bin/oha
REQUESTS=${BENCH_REQUESTS:-2000}
ROUNDS=${BENCH_ROUNDS:-9} # the ratios' alternating rounds, as in scripts/bench.sh
ROUND_REQUESTS=${BENCH_ROUND_REQUESTS:-400}
EVENTS=${BENCH_EVENTS:-500}
mkdir -p .local/bench .local/logs

. scripts/host.sh # start_host; the hosts stop when this script exits

warm=$(start_host .local/logs/bench-customer-warm.log --from spin.toml)
cold=$(SPIN_VARIABLE_PROFILE_CACHE_TTL_SECS=0 start_host .local/logs/bench-customer-cold.log --from spin.toml)

email="bench-customer-$(date +%s)-$RANDOM@example.com"
token=$(python3 - "$warm" "$email" <<'PY'
import json, sys, urllib.request
base, email = sys.argv[1], sys.argv[2]
def call(method, path, body, token=None):
    headers = {"content-type": "application/json"}
    if token: headers["authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)
reg = call("POST", "/api/v3/auth/register", {"name": "Bench Customer", "email": email, "password": "bench customer passphrase"})
call("POST", "/api/v3/customers", {"area_ids": [1, 2, 3]}, reg["access_token"])
print(reg["access_token"])
PY
)
auth_header="authorization: Bearer $token"

row() { python3 scripts/oha_report.py row ".local/bench/$1.json" "$2"; } # key name
run() { # key name url
    "$OHA" --no-tui -n 100 -c 1 -H "$auth_header" "$3" >/dev/null
    "$OHA" --no-tui --output-format json -n "$REQUESTS" -c 1 -H "$auth_header" "$3" > ".local/bench/$1.json"
    row "$1" "$2"
}
chained() { grep -c 'component=auth.*chained=true\|"component":"auth".*"chained":true' "$1" || true; }

echo "| customer route (concurrency 1) | requests/s | p50 ms | p99 ms | errors |"
echo "| --- | ---: | ---: | ---: | ---: |"
run cust-me "GET /customers/me" "$warm/api/v3/customers/me"
before=$(chained .local/logs/bench-customer-warm.log)
run cust-me-profile-warm "GET /customers/me?include=profile, warm cache" "$warm/api/v3/customers/me?include=profile"
after=$(chained .local/logs/bench-customer-warm.log)
warm_calls=$(python3 -c "print(f'{($after-$before)/($REQUESTS+100):.3f}')")
before=$(chained .local/logs/bench-customer-cold.log)
run cust-me-profile-cold "GET /customers/me?include=profile, cold cache (ttl 0)" "$cold/api/v3/customers/me?include=profile"
after=$(chained .local/logs/bench-customer-cold.log)
cold_calls=$(python3 -c "print(f'{($after-$before)/($REQUESTS+100):.3f}')")

# The p50 in seconds of a row, or nan (and a warning) when any answer was not 2xx.
p50() { python3 scripts/oha_report.py p50 ".local/bench/$1.json" s; }
echo
python3 - "$(p50 cust-me)" "$(p50 cust-me-profile-warm)" "$(p50 cust-me-profile-cold)" "$warm_calls" "$cold_calls" <<'PY'
import sys
me, warm, cold = map(float, sys.argv[1:4])
print("| ratio (same run) | value | target | chained calls to auth per request |")
print("| --- | ---: | ---: | ---: |")
print(f"| include=profile p50 ÷ /customers/me p50, warm cache | {warm/me:.2f} | ≤ 1.1 | {sys.argv[4]} |")
print(f"| include=profile p50 ÷ /customers/me p50, cold cache | {cold/me:.2f} | ≤ 1.5 | {sys.argv[5]} |")
PY

# The same ratios in alternating rounds (scripts/rounds_report.py), as scripts/bench.sh does.
rounds=.local/bench/rounds-customer.tsv
: >"$rounds"
round() { python3 scripts/rounds_report.py measure "$@"; } # key warm-up n url [oha args]
for _ in $(seq "$ROUNDS"); do
    me=$(round cust-me 20 "$ROUND_REQUESTS" "$warm/api/v3/customers/me" -H "$auth_header")
    warm_profile=$(round cust-warm 20 "$ROUND_REQUESTS" "$warm/api/v3/customers/me?include=profile" -H "$auth_header")
    cold_profile=$(round cust-cold 20 "$ROUND_REQUESTS" "$cold/api/v3/customers/me?include=profile" -H "$auth_header")
    python3 scripts/rounds_report.py add "$rounds" "include=profile p50 ÷ /customers/me p50, warm cache" "≤ 1.1" "$warm_profile" "$me"
    python3 scripts/rounds_report.py add "$rounds" "include=profile p50 ÷ /customers/me p50, cold cache" "≤ 1.5" "$cold_profile" "$me"
done
echo
echo "$ROUNDS rounds; each: $ROUND_REQUESTS requests of /customers/me, then of the warm read, then of the cold read."
echo
python3 scripts/rounds_report.py table "$rounds"

secret=$(sed -n 's/^SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET=//p' .env | head -n1 | cut -d, -f1)
echo
python3 - "$warm/api/v3/billing/stripe/webhook" "$secret" "$EVENTS" <<'PY'
import hashlib, hmac, http.client, json, sys, time, urllib.parse, uuid
url, secret, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
def post(event_id, ts):
    body = json.dumps({"id": event_id, "object": "event", "type": "bench.ping", "created": ts,
                       "data": {"object": {"id": "bench", "object": "bench"}}}).encode()
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    conn.request("POST", u.path, body, {"content-type": "application/json", "stripe-signature": f"t={ts},v1={sig}"})
    r = conn.getresponse(); r.read(); return r.status
def measure(kind):
    fixed = "evt_bench_dup_" + uuid.uuid4().hex
    post(fixed, int(time.time()))
    statuses = {}
    started = time.perf_counter()
    for _ in range(n):
        now = int(time.time())
        if kind == "valid": status = post("evt_bench_" + uuid.uuid4().hex, now)
        elif kind == "duplicate": status = post(fixed, now)
        else: status = post("evt_bench_" + uuid.uuid4().hex, now - 3600)
        statuses[status] = statuses.get(status, 0) + 1
    elapsed = time.perf_counter() - started
    print(f"| {kind} | {n/elapsed:.0f} | {elapsed/n*1000:.2f} | {statuses} |")
print("| webhook events (sequential, one connection) | events/s | mean ms | statuses |")
print("| --- | ---: | ---: | --- |")
for kind in ("valid", "duplicate", "stale"):
    measure(kind)
PY
