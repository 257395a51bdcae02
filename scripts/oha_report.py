"""Reads an oha JSON report for the tables and ratios of scripts/bench.sh, bench_customer.sh,
load.sh and profile_login.sh: one place that decides what counts as an error.

  oha_report.py row <report.json> <cell>...            | cells | req/s | p50 ms | p99 ms | errors |
  oha_report.py row --count <report.json> <cell>...    the same, with the number of answers first
  oha_report.py p50 <report.json> ms|s                 the p50, or nan and a warning on stderr when
                                                       any answer was not 2xx (a ratio of refused
                                                       requests, e.g. a throttled login answering
                                                       429 in 1 ms, would look like a great result)
"""
import json
import sys


def load(path):
    report = json.load(open(path))
    codes = report.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(report.get("errorDistribution", {}).values())
    return report, ok, errors


def main(args):
    command, args = args[0], args[1:]
    count = command == "row" and args[0] == "--count"
    if count:
        args = args[1:]
    report, ok, errors = load(args[0])
    p = report["latencyPercentiles"]
    if command == "row":
        cells = args[1:] + ([str(ok + errors)] if count else [])
        rps = report["summary"]["requestsPerSec"]
        print(f"| {' | '.join(cells)} | {rps:.0f} | {p['p50'] * 1000:.2f} | {p['p99'] * 1000:.2f} | {errors} |")
    elif command == "p50":
        if errors:
            print(f"bench: {args[0]}: {errors} answers were not 2xx; its ratio is not valid", file=sys.stderr)
            print("nan")
        else:
            print(p["p50"] * (1000 if args[1] == "ms" else 1))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
