# Sourced by the bench and profiling scripts: starts `spin-local` hosts on free ports and stops
# them (and removes any perf map a host wrote) when the script exits.
#
#   . scripts/host.sh
#   app=$(VAR=value start_host <log> --from spin.toml [more spin-local up args])
#   pid=$(last_host_pid)

# Settings every bench and profiling host shares (callers add their own on top):
# - as `make up` (Makefile): argon2's 19 MiB stay resident between login instances (Spin's own
#   knob, docs/operations.md section 11), unless the caller's environment already says otherwise;
# - failed logins count against the client address, 127.0.0.1 for every such host, in the shared
#   database: scripts/load.sh's enumeration rows leave 80 a run, and a run within 15 minutes of
#   another would see every login throttled (429 in 1 ms). Only failures count, so a higher
#   per-address limit changes no successful login.
export SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT=${SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT:-33554432}
export SPIN_VARIABLE_AUTH_LOGIN_MAX_FAILURES_PER_ADDRESS=100000

# start_host runs in a command substitution (a subshell), so it records its pids in a file.
host_pids=$(mktemp)
stop_hosts() {
    while read -r pid; do
        kill "$pid" 2>/dev/null || true
        rm -f "/tmp/perf-$pid.map" # written under SPIN_LOCAL_PROFILER=perfmap
    done <"$host_pids"
    rm -f "$host_pids"
}
trap stop_hosts EXIT

# Starts the host in the background; prints the base URL once it serves.
start_host() {
    local log=$1; shift
    local out; out=$(mktemp)
    target/native/spin-local up --listen 127.0.0.1:0 "$@" >"$out" 2>"$log" &
    echo $! >>"$host_pids"
    for _ in $(seq 1 200); do
        if grep -q '^Serving ' "$out"; then sed -n 's/^Serving //p' "$out" | head -n1; rm -f "$out"; return 0; fi
        sleep 0.05
    done
    echo "the host did not start; see $log" >&2; return 1
}

# The pid of the host started last.
last_host_pid() { tail -n1 "$host_pids"; }
