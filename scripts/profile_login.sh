#!/usr/bin/env bash
# Where a login's time goes: samples the local host with Linux perf while oha sends logins, and
# prints the login p50, the CPU per login of the host and of MariaDB, and the share of the
# host's CPU per category (scripts/perf_categories.py), next to a native argon2id hash.
# A diagnostic, not a test; docs/benchmarks.md quotes its output. Needs `perf` (Debian:
# linux-perf) allowed to sample this user's processes (kernel.perf_event_paranoid <= 2).
#
# Env: PROFILE_LOGINS (default 200).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOGINS=${PROFILE_LOGINS:-200}
OHA=.local/tools/bin/oha
command -v perf >/dev/null || { echo "perf not found: apt-get install linux-perf" >&2; exit 1; }
[ -x "$OHA" ] || { echo "oha not found: run make bench once (it installs oha into .local/tools)" >&2; exit 1; }

bash scripts/stack.sh up >/dev/null
make --no-print-directory build >/dev/null
cargo build --quiet --profile native -p integration-tests --bin native-baselines
target/native/admin migrate up >/dev/null
set -a; . .local/stack.env; set +a
mkdir -p .local/logs
. scripts/host.sh # start_host and make bench's host settings; the host (and its perf map) goes on exit
work=$(mktemp -d)
trap 'stop_hosts; rm -rf "$work"' EXIT

# With perfmap, wasmtime writes the component's function names to /tmp/perf-<pid>.map, where
# perf looks for them.
app=$(SPIN_LOCAL_PROFILER=perfmap start_host .local/logs/profile-login.log --from spin.toml)
host_pid=$(last_host_pid)

python3 - "$app" "$work/credentials.json" <<'PY'
import json, secrets, sys, urllib.request
app, path = sys.argv[1], sys.argv[2]
credentials = {"email": f"profile-{secrets.token_hex(6)}@example.com", "password": f"profile passphrase {secrets.token_hex(4)}"}
request = urllib.request.Request(app + "/api/v3/auth/register", data=json.dumps({"name": "Profile", **credentials}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
urllib.request.urlopen(request, timeout=30).close()
json.dump(credentials, open(path, "w"))
PY
login() { "$OHA" --no-tui "$@" -c 1 -m POST -H 'content-type: application/json' -D "$work/credentials.json" "$app/api/v3/auth/login"; }
login -n 10 >/dev/null

db_pid=$(cat .local/mariadb/mariadb.pid)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
host_before=$(cpu_ticks "$host_pid"); db_before=$(cpu_ticks "$db_pid")
perf record --quiet -F 1000 -g -p "$host_pid" -o "$work/perf.data" >/dev/null 2>&1 &
perf_pid=$!
sleep 0.5
login --output-format json -n "$LOGINS" >"$work/logins.json"
kill -INT "$perf_pid"; wait "$perf_pid" || true
host_after=$(cpu_ticks "$host_pid"); db_after=$(cpu_ticks "$db_pid")

p50=$(python3 scripts/oha_report.py p50 "$work/logins.json" ms) # nan (and a warning) unless all 2xx
python3 - "$p50" "$LOGINS" "$(getconf CLK_TCK)" "$host_before" "$host_after" "$db_before" "$db_after" <<'PY'
import sys
p50, logins, tick = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
host, db = (float(sys.argv[5]) - float(sys.argv[4])), (float(sys.argv[7]) - float(sys.argv[6]))
print(f"login p50 {p50:.1f} ms over {logins} logins; "
      f"CPU per login: host {1000 * host / tick / logins:.1f} ms, MariaDB {1000 * db / tick / logins:.2f} ms")
PY
echo
perf script -i "$work/perf.data" 2>/dev/null | python3 scripts/perf_categories.py
echo
target/native/native-baselines "$DB_ADMIN_URL" 40 10 |
    python3 -c "import json, sys; print('native argon2id hash, same parameters: p50 %.1f ms' % json.load(sys.stdin)['argon2id_hash_p50_ms'])"
