#!/usr/bin/env bash
# make bench (after scripts/bench.sh): the main journeys under load, concurrency 1 -> 64, on the
# local host with the development stack. A benchmark, not a test: it asserts nothing but prints
# requests/s, p50, p99 and the error count per step (Markdown, also .local/bench/load.md).
#
#   register   POST /api/v3/auth/register, a new email per request (Python driver: oha sends
#              one fixed body)
#   login      POST /api/v3/auth/login, one user, right password (oha)
#   me         GET /api/v3/users/me (oha)
#   customer   GET /api/v3/customers/me (oha)
#   profile    GET /api/v3/customers/me?include=profile (oha; profile cache warm)
#   enumeration  login with an unknown email vs a wrong password, side by side (oha, c=1)
#
# Env: LOAD_CONCURRENCY (default "1 4 16 64"), LOAD_REQUESTS (oha, default 2000 per step),
# LOAD_ARGON_REQUESTS (register/login, default 4 x concurrency, at least 32).
# Only successful logins are sent (the throttle counts failures only), except the enumeration
# rows, which send LOAD_ENUM_REQUESTS (default 40) failures each, far below the per-address
# limit (100 per 15 minutes) once; rerunning within 15 minutes would trip it, so this script
# raises the limits for its own host (auth_login_max_failures_per_address=100000,
# ..._per_account=100).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONCURRENCY=${LOAD_CONCURRENCY:-"1 4 16 64"}
REQUESTS=${LOAD_REQUESTS:-2000}
ENUM=${LOAD_ENUM_REQUESTS:-40}
OHA=.local/tools/bin/oha
OHA_VERSION=1.16.0
PY=.local/venv/bin/python
mkdir -p .local/bench .local/logs
if [ ! -x "$OHA" ]; then
    cargo install --quiet --locked --root .local/tools oha --version "$OHA_VERSION"
fi
bash scripts/stack.sh up >/dev/null
make --no-print-directory build >/dev/null
target/native/admin migrate up >/dev/null

. scripts/host.sh # start_host and the hosts' shared settings (argon2's memory resident, the address limit)
app=$(SPIN_VARIABLE_AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT=100 start_host .local/logs/load-app.log --from spin.toml)

# A user who is a customer (card at the stack's localstripe not needed for these reads).
run_id="load-$(date +%s)-$RANDOM"
read -r email password token < <("$PY" - "$app" "$run_id" <<'PY'
import json, sys, urllib.request
base, run = sys.argv[1], sys.argv[2]
def call(method, path, body, token=None):
    headers = {"content-type": "application/json"}
    if token: headers["authorization"] = "Bearer " + token
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")
email, password = f"{run}@example.com", f"load passphrase {run}"
s = call("POST", "/api/v3/auth/register", {"name": "Load", "email": email, "password": password})
call("POST", "/api/v3/customers", {"area_ids": [1, 2, 3]}, s["access_token"])
print(email, password.replace(" ", "_"), s["access_token"])
PY
)
password=${password//_/ }
credentials=$("$PY" -c 'import json,sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' "$email" "$password")

row() { "$PY" scripts/oha_report.py row --count "$3" "$1" "$2"; } # name concurrency json

oha_row() { # name c n url [oha args]
    local name=$1 c=$2 n=$3 url=$4
    shift 4
    "$OHA" --no-tui --output-format json -n "$n" -c "$c" "$@" "$url" >".local/bench/load-$c.json"
    row "$name" "$c" ".local/bench/load-$c.json"
}

register_row() { # c n
    "$PY" - "$app" "$1" "$2" "$run_id" <<'PY'
import json, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
base, c, n, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def one(i):
    body = json.dumps({"name": "Load", "email": f"{run}-c{c}-{i}@example.com", "password": f"load passphrase {run}"}).encode()
    req = urllib.request.Request(base + "/api/v3/auth/register", data=body, method="POST", headers={"content-type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception:
        status = 0
    return status, time.perf_counter() - t
start = time.perf_counter()
with ThreadPoolExecutor(max_workers=c) as pool:
    results = list(pool.map(one, range(n)))
elapsed = time.perf_counter() - start
lat = sorted(l for _, l in results)
errors = sum(1 for s, _ in results if s != 201)
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"| POST /api/v3/auth/register (new email each) | {c} | {n} | {n/elapsed:.0f} | {pct(0.5):.2f} | {pct(0.99):.2f} | {errors} |")
PY
}

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
{
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $machine; oha $OHA_VERSION (keep-alive) and a Python thread-pool driver for register; $REQUESTS requests per oha step after 200 warm-up requests."
    echo
    echo "| journey | concurrency | requests | requests/s | p50 ms | p99 ms | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for c in $CONCURRENCY; do
        n=$(( c * 4 > 32 ? c * 4 : 32 ))
        register_row "$c" "${LOAD_ARGON_REQUESTS:-$n}"
    done
    "$OHA" --no-tui -n 3 -c 1 -m POST -H 'content-type: application/json' -d "$credentials" "$app/api/v3/auth/login" >/dev/null
    for c in $CONCURRENCY; do
        n=$(( c * 4 > 32 ? c * 4 : 32 ))
        oha_row "POST /api/v3/auth/login" "$c" "${LOAD_ARGON_REQUESTS:-$n}" "$app/api/v3/auth/login" -m POST -H 'content-type: application/json' -d "$credentials"
    done
    for entry in "GET /api/v3/users/me|/api/v3/users/me" "GET /api/v3/customers/me|/api/v3/customers/me" "GET /api/v3/customers/me?include=profile (warm cache)|/api/v3/customers/me?include=profile"; do
        IFS='|' read -r name path <<<"$entry"
        "$OHA" --no-tui -n 200 -c 4 -H "authorization: Bearer $token" "$app$path" >/dev/null
        for c in $CONCURRENCY; do
            oha_row "$name" "$c" "$REQUESTS" "$app$path" -H "authorization: Bearer $token"
        done
    done
    echo
    echo "Enumeration (not a test): login latency, unknown email vs wrong password, $ENUM requests each at concurrency 1 (both answer the same 401)."
    echo
    echo "| login | requests | p50 ms | p90 ms | p99 ms | statuses |"
    echo "| --- | ---: | ---: | ---: | ---: | --- |"
    for kind in unknown wrong; do
        if [ "$kind" = unknown ]; then
            body=$("$PY" -c 'import json,sys; print(json.dumps({"email": "nobody-"+sys.argv[1]+"@example.com", "password": sys.argv[2]}))' "$run_id" "$password")
        else
            body=$("$PY" -c 'import json,sys; print(json.dumps({"email": sys.argv[1], "password": "not the password at all"}))' "$email")
        fi
        "$OHA" --no-tui --output-format json -n "$ENUM" -c 1 -m POST -H 'content-type: application/json' -d "$body" "$app/api/v3/auth/login" >".local/bench/enum-$kind.json"
        "$PY" - "$kind" ".local/bench/enum-$kind.json" <<'PY'
import json, sys
kind, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
p = d["latencyPercentiles"]
codes = ", ".join(f"{k}: {v}" for k, v in sorted(d.get("statusCodeDistribution", {}).items()))
label = "unknown email" if kind == "unknown" else "wrong password"
print(f"| {label} | {sum(d.get('statusCodeDistribution', {}).values())} | {p['p50']*1000:.1f} | {p['p90']*1000:.1f} | {p['p99']*1000:.1f} | {codes} |")
PY
    done
} | tee .local/bench/load.md
