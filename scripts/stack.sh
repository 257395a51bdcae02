#!/usr/bin/env bash
# Development stack: a private MariaDB and localstripe on loopback, plus the .env that
# `spin up` and `spin-local up` read. Every subcommand is idempotent and never overwrites a value
# that is already set. Layout and formats: docs/dev-stack.md.
#
#   scripts/stack.sh deps          install what is missing (wasm target, MariaDB, localstripe venv)
#   scripts/stack.sh db-start      start MariaDB on 127.0.0.1:$DB_PORT (default 3316), create dbs/users
#   scripts/stack.sh db-stop
#   scripts/stack.sh stripe-start  start localstripe on 127.0.0.1:$STRIPE_PORT (default 8420)
#   scripts/stack.sh stripe-stop
#   scripts/stack.sh env           add missing SPIN_VARIABLE_* lines to .env
#   scripts/stack.sh stripe-webhook  point localstripe's webhooks at the app (port $PORT, default 3000)
#   scripts/stack.sh up            deps + db-start + stripe-start + env + stripe-webhook
#   scripts/stack.sh down          db-stop + stripe-stop
#   scripts/stack.sh status        what is running
#   scripts/stack.sh clean         down, then delete .local/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
LOG_DIR="$LOCAL/logs"
STACK_ENV="$LOCAL/stack.env"
DOTENV="$ROOT/.env"
MARIADB_DIR="$LOCAL/mariadb"
DATA_DIR="$MARIADB_DIR/data"
DB_PID_FILE="$MARIADB_DIR/mariadb.pid"
DB_LOG="$LOG_DIR/mariadb.log"
VENV="$LOCAL/venv"
LOCALSTRIPE_VERSION="1.15.10"
# API contract checks (scripts/conformance.sh), same venv.
SCHEMATHESIS_VERSION="4.32.5"
STRIPE_PID_FILE="$LOCAL/localstripe.pid"
# The digest of the stand-in's script the running localstripe was started from.
STRIPE_DIGEST_FILE="$LOCAL/localstripe.sha256"
STRIPE_LOG="$LOG_DIR/localstripe.log"
DB_START_TIMEOUT="${DB_START_TIMEOUT:-60}"
STRIPE_START_TIMEOUT="${STRIPE_START_TIMEOUT:-30}"
STOP_TIMEOUT=30

# A unix socket path must stay under ~107 bytes; fall back to /tmp for deep checkouts.
DB_SOCKET="$MARIADB_DIR/mariadb.sock"
if [ "${#DB_SOCKET}" -gt 100 ]; then
    DB_SOCKET="/tmp/stack-mariadb-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).sock"
fi

say() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
as_root() { if is_root; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------------------------------- deps

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt does not know the packages yet.
    local pkg
    for pkg in "$@"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1; then
            say "apt-get update"
            as_root apt-get update -qq >/dev/null
            break
        fi
    done
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

cmd_deps() {
    if command -v rustup >/dev/null 2>&1; then
        if ! rustup target list --installed | grep -qx wasm32-wasip2; then
            say "rustup target add wasm32-wasip2"
            rustup target add wasm32-wasip2 >/dev/null
        fi
    else
        say "warning: rustup not found; make sure the wasm32-wasip2 target is installed"
    fi

    local pkgs=()
    command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1 \
        || pkgs+=(mariadb-server)
    command -v mariadb >/dev/null 2>&1 && command -v mariadb-admin >/dev/null 2>&1 \
        || pkgs+=(mariadb-client)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3 python3-venv)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        apt_install "${pkgs[@]}"
    fi

    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('localstripe') != '$LOCALSTRIPE_VERSION')" >/dev/null 2>&1; then
        mkdir -p "$LOCAL"
        if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
            rm -rf "$VENV"
            if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
                # Debian's own python3 needs python3-venv for ensurepip.
                rm -rf "$VENV"
                apt_install python3-venv
                python3 -m venv "$VENV" >/dev/null
            fi
        fi
        say "pip install localstripe==$LOCALSTRIPE_VERSION (into .local/venv)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "localstripe==$LOCALSTRIPE_VERSION" >/dev/null
    fi
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" >/dev/null 2>&1; then
        say "pip install schemathesis==$SCHEMATHESIS_VERSION (into .local/venv)"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION" >/dev/null
    fi
}

# ----------------------------------------------------------------------------------- stack.env

gen_secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

# Reads .local/stack.env, adding (never changing) missing settings. DB_PORT / STRIPE_PORT from
# the environment are used only when the file does not have them yet.
load_stack_env() {
    mkdir -p "$LOCAL" "$LOG_DIR"
    local want_db_port="${DB_PORT:-3316}" want_stripe_port="${STRIPE_PORT:-8420}"
    if [ ! -f "$STACK_ENV" ]; then
        (umask 077; printf '# Generated by scripts/stack.sh; values here are kept (edit by hand to change).\n' >"$STACK_ENV")
    fi
    chmod 600 "$STACK_ENV"
    # Only the file counts from here on (so `add` below sees what the file lacks).
    unset DB_PORT STRIPE_PORT AUTH_DB_PASSWORD CUSTOMER_DB_PASSWORD DB_ADMIN_PASSWORD DB_ADMIN_URL
    # shellcheck disable=SC1090
    . "$STACK_ENV"
    local added=0
    add() { # name value
        if [ -z "${!1:-}" ]; then
            printf '%s=%s\n' "$1" "$2" >>"$STACK_ENV"
            printf -v "$1" '%s' "$2"
            added=1
        fi
    }
    add DB_PORT "$want_db_port"
    add STRIPE_PORT "$want_stripe_port"
    add AUTH_DB_PASSWORD "$(gen_secret)"
    add CUSTOMER_DB_PASSWORD "$(gen_secret)"
    add DB_ADMIN_PASSWORD "$(gen_secret)"
    add DB_ADMIN_URL "mysql://stack_admin:${DB_ADMIN_PASSWORD}@127.0.0.1:${DB_PORT}"
    [ "$added" = 0 ] || say "wrote .local/stack.env"
    export DB_PORT STRIPE_PORT DB_ADMIN_URL
}

# ---------------------------------------------------------------------------------- processes

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is running and its command line contains PATTERN.
pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pid PIDFILE PATTERN NAME
stop_pid() {
    if ! pid_alive "$1" "$2"; then
        rm -f "$1"
        say "$3 is not running"
        return 0
    fi
    local pid i
    pid="$(tr -dc '0-9' <"$1")"
    kill -TERM "$pid"
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$3 did not stop within ${STOP_TIMEOUT}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
    say "$3 stopped"
}

log_tail() { if [ -f "$1" ]; then tail -n "${2:-25}" "$1" | sed "s/^/    /" >&2; fi; }

# ------------------------------------------------------------------------------------- MariaDB

db_cli() { mariadb --no-defaults --socket="$DB_SOCKET" -u "$(id -un)" "$@"; }

db_running() { pid_alive "$DB_PID_FILE" "$DATA_DIR"; }

cmd_db_start() {
    load_stack_env
    command -v mariadbd >/dev/null 2>&1 || die "mariadbd not found: run scripts/stack.sh deps"
    local user_opt=()
    is_root && user_opt=(--user=root)

    if db_running; then
        say "MariaDB already running (pid $(cat "$DB_PID_FILE"), port $DB_PORT)"
    else
        if [ -f "$DB_PID_FILE" ]; then
            say "removing stale pid file"
            rm -f "$DB_PID_FILE"
        fi
        port_in_use "$DB_PORT" && die "port $DB_PORT is taken by another program; set DB_PORT in .local/stack.env (and fix .env)"
        rm -f "$DB_SOCKET"
        if [ ! -d "$DATA_DIR/mysql" ]; then
            say "initialising .local/mariadb/data"
            mkdir -p "$DATA_DIR"
            mariadb-install-db --no-defaults "${user_opt[@]}" --datadir="$DATA_DIR" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOG_DIR/mariadb-install.log" 2>&1 \
                || { log_tail "$LOG_DIR/mariadb-install.log"; rm -rf "$DATA_DIR"; die "mariadb-install-db failed (log: .local/logs/mariadb-install.log)"; }
        fi
        # Server defaults chosen to behave like MySQL 8.0 (utf8mb4, its sql_mode) so that SQL
        # that works here also works there. setsid: Ctrl-C in `make up` must not reach it.
        setsid mariadbd --no-defaults "${user_opt[@]}" \
            --datadir="$DATA_DIR" --socket="$DB_SOCKET" --pid-file="$DB_PID_FILE" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-networking=0 --skip-name-resolve \
            --log-error="$DB_LOG" \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
            --sql-mode=ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION \
            --explicit-defaults-for-timestamp=1 --max-connections=500 \
            --innodb-buffer-pool-size=128M \
            </dev/null >>"$DB_LOG" 2>&1 &
        local pid=$! i ready=0
        for ((i = 0; i < DB_START_TIMEOUT * 5; i++)); do
            if ! kill -0 "$pid" 2>/dev/null; then
                log_tail "$DB_LOG"
                die "MariaDB exited during start-up (log: .local/logs/mariadb.log)"
            fi
            if mariadb-admin --no-defaults --socket="$DB_SOCKET" -u "$(id -un)" ping >/dev/null 2>&1 \
                && port_in_use "$DB_PORT"; then
                ready=1
                break
            fi
            sleep 0.2
        done
        if [ "$ready" != 1 ]; then
            log_tail "$DB_LOG"
            kill -TERM "$pid" 2>/dev/null || true
            die "MariaDB not ready within ${DB_START_TIMEOUT}s (log: .local/logs/mariadb.log)"
        fi
        say "MariaDB started on 127.0.0.1:$DB_PORT (pid $pid, log .local/logs/mariadb.log)"
    fi

    # Passwords are hex, so they need no quoting. ALTER USER keeps the server in step with
    # .local/stack.env should that file have been recreated.
    db_cli --batch <<SQL || die "creating databases and users failed"
CREATE DATABASE IF NOT EXISTS \`auth\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS \`customer\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'auth'@'127.0.0.1' IDENTIFIED BY '$AUTH_DB_PASSWORD';
CREATE USER IF NOT EXISTS 'auth'@'localhost' IDENTIFIED BY '$AUTH_DB_PASSWORD';
ALTER USER 'auth'@'127.0.0.1' IDENTIFIED BY '$AUTH_DB_PASSWORD';
ALTER USER 'auth'@'localhost' IDENTIFIED BY '$AUTH_DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`auth\`.* TO 'auth'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`auth\`.* TO 'auth'@'localhost';
CREATE USER IF NOT EXISTS 'customer'@'127.0.0.1' IDENTIFIED BY '$CUSTOMER_DB_PASSWORD';
CREATE USER IF NOT EXISTS 'customer'@'localhost' IDENTIFIED BY '$CUSTOMER_DB_PASSWORD';
ALTER USER 'customer'@'127.0.0.1' IDENTIFIED BY '$CUSTOMER_DB_PASSWORD';
ALTER USER 'customer'@'localhost' IDENTIFIED BY '$CUSTOMER_DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`customer\`.* TO 'customer'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`customer\`.* TO 'customer'@'localhost';
CREATE USER IF NOT EXISTS 'stack_admin'@'127.0.0.1' IDENTIFIED BY '$DB_ADMIN_PASSWORD';
CREATE USER IF NOT EXISTS 'stack_admin'@'localhost' IDENTIFIED BY '$DB_ADMIN_PASSWORD';
ALTER USER 'stack_admin'@'127.0.0.1' IDENTIFIED BY '$DB_ADMIN_PASSWORD';
ALTER USER 'stack_admin'@'localhost' IDENTIFIED BY '$DB_ADMIN_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'stack_admin'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'stack_admin'@'localhost' WITH GRANT OPTION;
DROP USER IF EXISTS ''@'localhost';
FLUSH PRIVILEGES;
SQL
}

cmd_db_stop() { stop_pid "$DB_PID_FILE" "$DATA_DIR" "MariaDB"; }

# --------------------------------------------------------------------------------- localstripe

stripe_running() { pid_alive "$STRIPE_PID_FILE" "localstripe_serve.py"; }

stripe_ready() {
    "$VENV/bin/python" - "$STRIPE_PORT" <<'PY' >/dev/null 2>&1
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/customers?limit=1",
                             headers={"Authorization": "Bearer sk_test_ready"})
urllib.request.urlopen(req, timeout=1).read()
PY
}

stand_in_digest() { sha256sum "$ROOT/scripts/localstripe_serve.py" | cut -d' ' -f1; }

cmd_stripe_start() {
    load_stack_env
    [ -x "$VENV/bin/python" ] || die "no .local/venv: run scripts/stack.sh deps"
    if stripe_running; then
        # A stand-in started before a pull would keep answering as the old script did.
        if [ "$(cat "$STRIPE_DIGEST_FILE" 2>/dev/null)" = "$(stand_in_digest)" ]; then
            say "localstripe already running (pid $(cat "$STRIPE_PID_FILE"), port $STRIPE_PORT)"
            return 0
        fi
        say "scripts/localstripe_serve.py changed since localstripe started: restarting it"
        cmd_stripe_stop
    fi
    rm -f "$STRIPE_PID_FILE"
    port_in_use "$STRIPE_PORT" && die "port $STRIPE_PORT is taken by another program; set STRIPE_PORT in .local/stack.env (and fix .env)"
    local state_opt=()
    [ "${STRIPE_PERSIST:-0}" = 1 ] && state_opt=(--state-file "$LOCAL/localstripe.pickle")
    setsid "$VENV/bin/python" "$ROOT/scripts/localstripe_serve.py" \
        --host 127.0.0.1 --port "$STRIPE_PORT" "${state_opt[@]}" \
        </dev/null >>"$STRIPE_LOG" 2>&1 &
    local pid=$! i
    echo "$pid" >"$STRIPE_PID_FILE"
    stand_in_digest >"$STRIPE_DIGEST_FILE"
    for ((i = 0; i < STRIPE_START_TIMEOUT * 5; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$STRIPE_PID_FILE"
            log_tail "$STRIPE_LOG"
            die "localstripe exited during start-up (log: .local/logs/localstripe.log)"
        fi
        if stripe_ready; then
            say "localstripe started on http://127.0.0.1:$STRIPE_PORT (pid $pid, log .local/logs/localstripe.log)"
            return 0
        fi
        sleep 0.2
    done
    log_tail "$STRIPE_LOG"
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$STRIPE_PID_FILE"
    die "localstripe not ready within ${STRIPE_START_TIMEOUT}s (log: .local/logs/localstripe.log)"
}

cmd_stripe_stop() { stop_pid "$STRIPE_PID_FILE" "localstripe_serve.py" "localstripe"; }

# Registers the app's webhook endpoint with localstripe, signed with the first secret of
# SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET in .env, so local subscriptions flow back signed. The app's
# port is $PORT (as `make up PORT=...` passes it), default 3000. Idempotent (same id "app").
cmd_stripe_webhook() {
    load_stack_env
    stripe_running || die "localstripe is not running: scripts/stack.sh stripe-start"
    [ -f "$DOTENV" ] && dotenv_has SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET || die "no STRIPE_WEBHOOK_SECRET in .env: scripts/stack.sh env"
    local url="http://127.0.0.1:${PORT:-3000}/api/v3/billing/stripe/webhook"
    dotenv_get SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET | "$VENV/bin/python" -c '
import sys, urllib.parse, urllib.request
port, url = sys.argv[1], sys.argv[2]
secret = sys.stdin.read().strip().split(",")[0].strip()
data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
urllib.request.urlopen(urllib.request.Request(
    f"http://127.0.0.1:{port}/_config/webhooks/app", data=data), timeout=5).read()
' "$STRIPE_PORT" "$url" || die "registering the webhook with localstripe failed"
    say "localstripe sends webhooks to $url"
}

# ------------------------------------------------------------------------------------------ .env

dotenv_has() { grep -qE "^[[:space:]]*(export[[:space:]]+)?$1=" "$DOTENV"; }

dotenv_get() { # value of $1 in .env, surrounding quotes removed
    grep -E "^[[:space:]]*(export[[:space:]]+)?$1=" "$DOTENV" | tail -n 1 \
        | sed -E "s/^[[:space:]]*(export[[:space:]]+)?$1=//; s/^\"(.*)\"\$/\\1/; s/^'(.*)'\$/\\1/"
}

ENV_ADDED=()
dotenv_add() { # NAME VALUE: appends SPIN_VARIABLE_NAME=VALUE unless NAME is already there
    local key="SPIN_VARIABLE_$1"
    if ! dotenv_has "$key"; then
        printf '%s=%s\n' "$key" "$2" >>"$DOTENV"
        ENV_ADDED+=("$1")
    fi
}

admin_bin() {
    if [ -n "${ADMIN_BIN:-}" ]; then # a prebuilt admin, e.g. from another checkout
        printf '%s' "$ADMIN_BIN"
        return 0
    fi
    local bin="$ROOT/target/native/admin"
    # cargo decides whether anything changed; a no-op build takes well under a second.
    (cd "$ROOT" && cargo build --quiet --profile native -p admin) >&2 || die "building admin failed"
    printf '%s' "$bin"
}

cmd_env() {
    load_stack_env
    if [ ! -f "$DOTENV" ]; then
        (umask 077; cat >"$DOTENV" <<'EOF'
# Development settings, read by `spin up` and `target/native/spin-local up` (SPIN_VARIABLE_<NAME>).
# Written by scripts/stack.sh env, which only adds missing names: edit freely. Not committed.
EOF
)
    fi
    chmod 600 "$DOTENV"

    dotenv_add AUTH_DB_URL "mysql://auth:${AUTH_DB_PASSWORD}@127.0.0.1:${DB_PORT}/auth"
    dotenv_add CUSTOMER_DB_URL "mysql://customer:${CUSTOMER_DB_PASSWORD}@127.0.0.1:${DB_PORT}/customer"
    dotenv_add AUTH_DB_ADDRESS "127.0.0.1:${DB_PORT}"
    dotenv_add CUSTOMER_DB_ADDRESS "127.0.0.1:${DB_PORT}"
    dotenv_add STRIPE_API_BASE "http://127.0.0.1:${STRIPE_PORT}"

    local names=(ENCRYPTION_KEY TOKEN_SIGNING_KEYS SERVICE_TOKEN_KEY TRUSTED_SERVICE_KEYS STRIPE_WEBHOOK_SECRET STRIPE_SECRET_KEY)
    local missing=0 n
    for n in "${names[@]}"; do dotenv_has "SPIN_VARIABLE_$n" || missing=1; done
    if [ "$missing" = 1 ]; then
        local bin generated line
        bin="$(admin_bin)"
        # An existing service key keeps its matching public key; never pair it with a new one.
        if dotenv_has SPIN_VARIABLE_SERVICE_TOKEN_KEY && ! dotenv_has SPIN_VARIABLE_TRUSTED_SERVICE_KEYS; then
            dotenv_add TRUSTED_SERVICE_KEYS "$(dotenv_get SPIN_VARIABLE_SERVICE_TOKEN_KEY | "$bin" keys public --service customer)"
        fi
        if dotenv_has SPIN_VARIABLE_TRUSTED_SERVICE_KEYS && ! dotenv_has SPIN_VARIABLE_SERVICE_TOKEN_KEY; then
            say "warning: .env has TRUSTED_SERVICE_KEYS but no SERVICE_TOKEN_KEY; adding a new key, so add its public key to TRUSTED_SERVICE_KEYS (admin keys public)"
        fi
        generated="$("$bin" keys generate --format env)"
        while IFS= read -r line; do
            n="${line%%=*}"
            n="${n#SPIN_VARIABLE_}"
            dotenv_add "$n" "${line#*=}"
        done <<<"$generated"
    fi
    if [ "${#ENV_ADDED[@]}" -gt 0 ]; then
        say "added to .env: ${ENV_ADDED[*]}"
    else
        say ".env already complete"
    fi
}

# ------------------------------------------------------------------------------------------ misc

cmd_status() {
    load_stack_env
    if db_running; then
        say "MariaDB: running, pid $(cat "$DB_PID_FILE"), 127.0.0.1:$DB_PORT, log .local/logs/mariadb.log"
    else
        say "MariaDB: stopped"
    fi
    if stripe_running; then
        say "localstripe: running, pid $(cat "$STRIPE_PID_FILE"), http://127.0.0.1:$STRIPE_PORT, log .local/logs/localstripe.log"
    else
        say "localstripe: stopped"
    fi
}

cmd_clean() {
    cmd_db_stop
    cmd_stripe_stop
    rm -rf "$LOCAL"
    case "$DB_SOCKET" in /tmp/*) rm -f "$DB_SOCKET" ;; esac
    say "removed .local/"
}

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
    local cmd="${1:-}"
    [ "$#" -gt 0 ] && shift
    case "$cmd" in
        deps) cmd_deps ;;
        db-start) cmd_db_start ;;
        db-stop) cmd_db_stop ;;
        stripe-start) cmd_stripe_start ;;
        stripe-stop) cmd_stripe_stop ;;
        env) cmd_env ;;
        stripe-webhook) cmd_stripe_webhook ;;
        up) cmd_deps; cmd_db_start; cmd_stripe_start; cmd_env; cmd_stripe_webhook ;;
        down) cmd_db_stop; cmd_stripe_stop ;;
        status) cmd_status ;;
        clean) cmd_clean ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
