"""The issues' ratios over alternating rounds, for scripts/bench.sh and bench_customer.sh.

Each round measures a ratio's parts seconds apart, so the drift of a shared machine between
minutes moves numerator and denominator alike; the table gives each ratio's median over the
rounds and the range, where one run of each part can land on either side of a target.

  rounds_report.py measure <key> <warm-up> <requests> <url> [oha args...]
      runs oha (.local/tools/bin/oha, as make bench installs it) at concurrency 1, the warm-up
      requests first and unmeasured, keeps the report as .local/bench/round-<key>.json and
      prints the p50 in ms, or nan and a warning when any answer was not 2xx (oha_report.py
      decides)
  rounds_report.py add <file> <label> <target> <numerator ms> <denominator part ms>...
      appends one round: numerator ÷ the sum of the parts (a part of `nan`, from
      oha_report.py p50 when an answer was not 2xx, makes the round invalid)
  rounds_report.py table <file>
      | ratio | median | range | rounds | numerator p50 ms | denominator ms | target |
"""
import math
import statistics
import subprocess
import sys

import oha_report


OHA = ".local/tools/bin/oha"


def measure(key, warmup, requests, url, *oha_args):
    report = f".local/bench/round-{key}.json"
    base = [OHA, "--no-tui", "-c", "1", *oha_args]
    if int(warmup) > 0:
        subprocess.run([*base, "-n", warmup, url], check=True, stdout=subprocess.DEVNULL)
    with open(report, "w") as out:
        subprocess.run([*base, "--output-format", "json", "-n", requests, url], check=True, stdout=out)
    result, _, errors = oha_report.load(report)
    if errors:
        print(f"bench: {report}: {errors} answers were not 2xx; this round is not valid", file=sys.stderr)
        print("nan")
    else:
        print(result["latencyPercentiles"]["p50"] * 1000)


def add(path, label, target, numerator, *parts):
    values = [float(numerator)] + [float(p) for p in parts]
    denominator = sum(values[1:])
    ratio = values[0] / denominator if denominator > 0 else math.nan
    with open(path, "a") as out:
        out.write("\t".join([label, target, repr(ratio), repr(values[0]), repr(denominator)]) + "\n")


def table(path):
    rounds = {}
    for line in open(path):
        label, target, ratio, numerator, denominator = line.rstrip("\n").split("\t")
        rounds.setdefault((label, target), []).append((float(ratio), float(numerator), float(denominator)))
    print("| ratio (alternating rounds) | median | range | valid rounds | numerator p50 ms (median) | denominator ms (median) | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (label, target), rows in rounds.items():
        valid = [row for row in rows if not any(math.isnan(v) for v in row)]
        if not valid:
            print(f"| {label} | – | – | 0 of {len(rows)} | – | – | {target} |")
            continue
        ratios = [row[0] for row in valid]
        numerator = statistics.median(row[1] for row in valid)
        denominator = statistics.median(row[2] for row in valid)
        print(
            f"| {label} | {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} "
            f"| {len(valid)} of {len(rows)} | {numerator:.2f} | {denominator:.2f} | {target} |"
        )


def main(args):
    if args[:1] == ["measure"] and len(args) >= 5:
        measure(*args[1:])
    elif args[:1] == ["add"] and len(args) >= 6:
        add(*args[1:])
    elif args[:1] == ["table"] and len(args) == 2:
        table(args[1])
    else:
        sys.exit(__doc__)


main(sys.argv[1:])
