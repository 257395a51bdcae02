"""The p50 of an oha JSON report, in ms or s, for the ratios of scripts/bench*.sh.

Prints nan (and a warning on stderr) when any answer was not 2xx: a ratio of refused requests
(a throttled login answers 429 in 1 ms) would look like a great result.
Usage: python3 scripts/bench_p50.py <report.json> ms|s
"""
import json
import sys

path, unit = sys.argv[1], sys.argv[2]
report = json.load(open(path))
codes = report.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(report.get("errorDistribution", {}).values())
if bad:
    print(f"bench: {path}: {bad} answers were not 2xx; its ratio is not valid", file=sys.stderr)
    print("nan")
else:
    print(report["latencyPercentiles"]["p50"] * (1000 if unit == "ms" else 1))
