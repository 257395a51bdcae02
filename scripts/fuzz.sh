#!/usr/bin/env bash
# cargo fuzz (libFuzzer) over the request decoders and validators of both components, the token
# verifier, the Stripe-Signature check and the email ciphertext decoder (fuzz/, its own
# workspace; what each target checks is in fuzz/src/lib.rs). Every saved regression input
# (fuzz/regressions/<target>/) is replayed first, then each target runs for FUZZ_SECONDS.
#
#   scripts/fuzz.sh                 FUZZ_SECONDS=300 per target (make fuzz)
#   FUZZ_SECONDS=10 scripts/fuzz.sh (make test)
#   FUZZ_TARGETS="token_verify" scripts/fuzz.sh
#
# cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP=1 lets the one stable toolchain build them.
# Builds with -O (optimised) and -a (debug assertions and overflow checks: an overflow is a crash).
# A crash leaves its input in fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/
# with the fix. Ends with "N passed, N failed" (targets); exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_EACH=${FUZZ_SECONDS:-300}
TARGETS=${FUZZ_TARGETS:-"auth_request customer_request token_verify stripe_signature sealed_email"}
CARGO_FUZZ_VERSION=0.13.2
CF=.local/tools/bin/cargo-fuzz
if ! "$CF" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into .local/tools (once)..."
    cargo install --quiet --locked --root .local/tools cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
CF=$PWD/$CF
if ! command -v c++ >/dev/null 2>&1; then
    # libfuzzer-sys compiles libFuzzer (C++).
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
started=$(date +%s)
"$CF" build -O -a >/dev/null
echo "fuzz: built the targets in $(( $(date +%s) - started )) s; ${SECONDS_EACH} s each"

passed=0
failed=0
for target in $TARGETS; do
    log=$(mktemp)
    ok=1
    if compgen -G "regressions/$target/*" >/dev/null; then
        if ! "$CF" run -O -a "$target" regressions/"$target"/* -- -rss_limit_mb=2048 >"$log" 2>&1; then
            ok=0
            echo "fuzz: $target: a saved regression input crashes again:"; tail -n 30 "$log"
        fi
    fi
    if [ "$ok" = 1 ]; then
        mkdir -p "corpus/$target"
        if "$CF" run -O -a "$target" "corpus/$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
            -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
            runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
            echo "fuzz: $target: ${runs:-?} inputs, no crash, corpus $(ls "corpus/$target" | wc -l) entries"
        else
            ok=0
            echo "fuzz: $target crashed:"; grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 10
        fi
    fi
    if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    rm -f "$log"
done
echo "fuzz: $(( $(date +%s) - started )) s in all"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
