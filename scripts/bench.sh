#!/usr/bin/env bash
# Placeholder: the benchmark is not written yet.
set -euo pipefail
echo "bench: no benchmark yet (scripts/bench.sh is a stub)"
