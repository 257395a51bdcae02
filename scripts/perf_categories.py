#!/usr/bin/env python3
"""Where a login's CPU goes: reads `perf script` output (samples with call chains) of the local
host and prints the share of samples per category. Used by scripts/profile_login.sh.

A sample is classified by its innermost frame and the frames that called it; the component's
functions are named when the host ran with SPIN_LOCAL_PROFILER=perfmap.
"""
import collections
import sys

# (category, test on (innermost frame, whole chain)); the first that matches wins.
CATEGORIES = [
    ("argon2 compression (wasm)", lambda leaf, chain: "Argon2::compress" in leaf),
    ("argon2 block copies (wasm memory.copy, done by the host's memmove)",
     lambda leaf, chain: ("memmove" in leaf or "memory_copy" in leaf) and "Argon2::compress" in chain),
    ("zeroing argon2's 19 MiB (wasm memory.fill, done by the host's memset)",
     lambda leaf, chain: "memset" in leaf and ("hash_password" in chain or "memory_fill" in chain)),
    ("argon2, the rest (wasm: address blocks, XOR, BLAKE2b)", lambda leaf, chain: "hash_password" in chain),
    ("wasmtime: mprotect of the memory a login grows", lambda leaf, chain: "mprotect" in chain or "change_pte" in leaf),
    # Frame-pointer call chains lose the callers of the host's own memsets; profiled with DWARF
    # call chains, they are wasmtime resetting a finished instance's memory.
    ("wasmtime: zeroing a finished instance's memory (keep-resident)", lambda leaf, chain: "memset" in leaf),
    ("Ed25519 (token signing)", lambda leaf, chain: "ed25519" in chain or "curve25519" in chain),
    ("MySQL client (host)", lambda leaf, chain: "mysql" in chain),
    ("the component's other code (wasm)", lambda leaf, chain: leaf.startswith("wasm[") or "auth::" in chain),
    ("everything else (host, tokio, kernel)", lambda leaf, chain: True),
]


def samples(lines):
    """Yields each sample's frames, innermost first."""
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line[0] in " \t":
            parts = line.split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1].strip())
    if frames:
        yield frames


def main():
    counts = collections.Counter()
    for frames in samples(sys.stdin):
        chain = ";".join(frames)
        counts[next(name for name, test in CATEGORIES if test(frames[0], chain))] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("no samples: did perf record the host's pid?")
    print("| share of the host's CPU | category |")
    print("| ---: | --- |")
    for name, _ in CATEGORIES:
        if counts[name]:
            print(f"| {100 * counts[name] / total:.1f}% | {name} |")
    print(f"\n{total} samples")


if __name__ == "__main__":
    main()
