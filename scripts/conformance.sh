#!/usr/bin/env bash
# API contract check: schemathesis (PyPI, in .local/venv) generates requests for every operation
# of openapi/auth.yaml and openapi/customer.yaml and sends them to the real app on the local
# host, authenticated as a user who registered and became a customer. Checks: no 5xx, every
# status code, content type, header and body as documented.
#
# Own everything: fresh databases on the stack's MariaDB, a private localstripe, the host on a
# free port; all removed at the end. Exits non-zero on any failure and ends with the line
# "N passed, N failed" (operations).
#
#   scripts/conformance.sh                     CONFORMANCE_EXAMPLES (default 300) per operation (make test)
#   CONFORMANCE_EXAMPLES=2000 scripts/conformance.sh   (make conformance)
# Env: CONFORMANCE_SEED (fixed seed for a reproducible run), CONFORMANCE_MAX_TIME (seconds per
# service; note that schemathesis then keeps fuzzing until the time is spent).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

EXAMPLES=${CONFORMANCE_EXAMPLES:-300}
MAX_TIME=${CONFORMANCE_MAX_TIME:-}
SEED=${CONFORMANCE_SEED:-}
VENV=.local/venv
ST="$VENV/bin/schemathesis"
[ -x "$ST" ] || { echo "conformance: $ST missing: run scripts/stack.sh deps (make test does)" >&2; exit 1; }
[ -x target/native/spin-local ] && [ -x target/native/admin ] || { echo "conformance: run make build first" >&2; exit 1; }
# shellcheck disable=SC1091
set -a; . .local/stack.env; set +a

work=$(mktemp -d /tmp/conformance.XXXXXX)
pids=()
suffix=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
dbs=("t_conf_auth_$suffix" "t_conf_customer_$suffix")
admin_pw=$(printf '%s' "$DB_ADMIN_URL" | sed -E 's#^mysql://[^:]+:([^@]*)@.*#\1#')
sql() { mariadb --no-defaults -h 127.0.0.1 -P "$DB_PORT" -u stack_admin -p"$admin_pw" -e "$1"; }
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for db in "${dbs[@]}"; do sql "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for db in "${dbs[@]}"; do sql "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"; done

stripe_port=$(free_port)
"$VENV/bin/python" scripts/localstripe_serve.py --host 127.0.0.1 --port "$stripe_port" >"$work/localstripe.log" 2>&1 &
pids+=($!)

env_file="$work/app.env"
{
    target/native/admin keys generate 2>/dev/null | grep '^SPIN_VARIABLE_'
    echo "SPIN_VARIABLE_AUTH_DB_URL=$DB_ADMIN_URL/${dbs[0]}"
    echo "SPIN_VARIABLE_AUTH_DB_ADDRESS=127.0.0.1:$DB_PORT"
    echo "SPIN_VARIABLE_CUSTOMER_DB_URL=$DB_ADMIN_URL/${dbs[1]}"
    echo "SPIN_VARIABLE_CUSTOMER_DB_ADDRESS=127.0.0.1:$DB_PORT"
    echo "SPIN_VARIABLE_STRIPE_API_BASE=http://127.0.0.1:$stripe_port"
    # Generated logins come from one address: keep the throttle out of the contract check.
    echo "SPIN_VARIABLE_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS=1000000"
    echo "SPIN_VARIABLE_AUTH_LOGIN_MAX_FAILURES_PER_ACCOUNT=100"
    # One generated user makes thousands of billing calls: keep customer's per-user budget out of
    # it too, so the operations' other answers are what gets checked (the budget has its own test).
    echo "SPIN_VARIABLE_STRIPE_CALLS_PER_USER_PER_MINUTE=1000000"
    # Checkout is configured as an operator using it would (without it, its answer is the 500
    # naming the variable, which tests/customer_api.rs checks).
    echo "SPIN_VARIABLE_CUSTOMER_CHECKOUT_SUCCESS_URL=https://app.example.org/billing?session={CHECKOUT_SESSION_ID}"
} >"$env_file"
grep -q '^SPIN_VARIABLE_TOKEN_SIGNING_KEYS=' "$env_file" || { echo "conformance: admin keys generate printed no keys" >&2; exit 1; }
target/native/admin --env-file "$env_file" migrate up >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; exit 1; }

target/native/spin-local up --from spin.toml --listen 127.0.0.1:0 --env-file "$env_file" --state-dir "$work/state" \
    >"$work/host.out" 2>"$work/host.log" &
pids+=($!)
base=""
for _ in $(seq 1 300); do
    base=$(sed -n 's/^Serving //p' "$work/host.out" | head -n1)
    [ -n "$base" ] && break
    sleep 0.1
done
[ -n "$base" ] || { echo "conformance: the host did not start" >&2; cat "$work/host.log" >&2; exit 1; }
"$VENV/bin/python" - "http://127.0.0.1:$stripe_port/v1/balance" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"authorization": "Bearer sk_test_x"}), timeout=2)
        break
    except Exception:
        time.sleep(0.1)
PY

# The fixture: a user who registered, became a customer, has a card, and a price to subscribe to.
fixture=$("$VENV/bin/python" - "$base" "http://127.0.0.1:$stripe_port" <<'PY'
import json, sys, urllib.request, urllib.parse
base, stripe = sys.argv[1], sys.argv[2]
def call(method, url, body=None, token=None, form=None):
    headers = {}
    data = None
    if body is not None:
        data, headers["content-type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data, headers["content-type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    if token:
        headers["authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")
session = call("POST", base + "/api/v3/auth/register", {"name": "Conformance", "email": "conformance@example.org", "password": "contract-checker-2718"})
token = session["access_token"]
customer = call("POST", base + "/api/v3/customers", {"area_ids": [1, 2]}, token)
sk = ("sk_test_x", "")
def stripe_post(path, form):
    req = urllib.request.Request(stripe + path, data=urllib.parse.urlencode(form).encode(), method="POST",
                                 headers={"authorization": "Bearer sk_test_x"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
pm = stripe_post("/v1/payment_methods", {"type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12", "card[exp_year]": "2031", "card[cvc]": "123"})
stripe_post(f"/v1/payment_methods/{pm['id']}/attach", {"customer": customer["stripe_customer_id"]})
stripe_post(f"/v1/customers/{customer['stripe_customer_id']}", {"invoice_settings[default_payment_method]": pm["id"]})
price = stripe_post("/v1/prices", {"currency": "eur", "unit_amount": "500", "recurring[interval]": "month", "product_data[name]": "Areas"})
sub = call("POST", base + "/api/v3/customers/me/subscriptions", {"price_id": price["id"]}, token)
print(json.dumps({"token": token, "user": session["user"]["id"], "price": price["id"], "subscription": sub["id"]}))
PY
)
token=$("$VENV/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$fixture")

echo "conformance: app $base, $EXAMPLES examples per operation${SEED:+, seed $SEED}"
passed=0
failed=0
total_cases=0
status=0
for spec in auth customer; do
    report="$work/$spec.junit.xml"
    args=(run "openapi/$spec.yaml" --url "$base" -H "Authorization: Bearer $token"
          --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
          --phases examples,coverage,fuzzing --max-examples "$EXAMPLES" --workers 2
          --request-timeout 30 --suppress-health-check all --warnings off
          --report junit --report-junit-path "$report")
    if [ -n "$SEED" ]; then args+=(--seed "$SEED"); fi
    if [ -n "$MAX_TIME" ]; then args+=(--max-time "$MAX_TIME"); fi
    started=$(date +%s)
    if ! "$ST" "${args[@]}" 2>&1 | tee "$work/$spec.out" | grep -vE '^\s*$' | tail -n 60; then
        status=1
    fi
    read -r p f < <("$VENV/bin/python" - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.iter("testcase")
p = f = 0
for c in cases:
    if c.find("failure") is not None or c.find("error") is not None:
        f += 1
    else:
        p += 1
print(p, f)
PY
    )
    cases=$(sed -n 's/^ *\([0-9]*\) generated.*/\1/p' "$work/$spec.out" | tail -n1)
    echo "conformance: $spec: $p operations passed, $f failed, ${cases:-?} generated cases, $(( $(date +%s) - started )) s"
    total_cases=$((total_cases + ${cases:-0}))
    passed=$((passed + p))
    failed=$((failed + f))
    if grep -qE '^(FAILURES|ERRORS)|[0-9]+ (failed|errors?)' "$work/$spec.out"; then status=1; fi
done
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; fi
if [ "$status" != 0 ]; then
    mkdir -p .local/conformance
    cp "$work"/*.log "$work"/*.out .local/conformance/ 2>/dev/null || true
    echo "conformance: logs kept in .local/conformance/ (host.log: the app; <service>.out: schemathesis)"
    grep -E '"level":"(ERROR|WARN)"|ERROR|panicked' "$work/host.log" | tail -n 20 || true
fi
echo "conformance: $total_cases generated cases in all"
echo "$passed passed, $failed failed"
[ "$status" = 0 ] && [ "$failed" = 0 ]
