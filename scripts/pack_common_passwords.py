#!/usr/bin/env python3
"""Packs components/auth/src/domain/common-passwords.txt into common-passwords.txt.fc.zlib, the
form auth.wasm ships (components/auth/src/domain/password.rs unpacks it; a unit test checks that
the result is the text file again, byte for byte).

Front coding, then a zlib stream: each line becomes one byte, how many leading bytes it shares
with the line before (at most 31), then the rest of the line. No byte of the list is below 32 (a
space), so that byte also ends the line before and no newline is stored. On the sorted list that
is 21.8 KB with zlib level 9 against 30.1 KB for zlib alone (23.5 KB with a newline after each
line). The stream is written by Zopfli (PyPI `zopfli`), an encoder that searches harder for the
same deflate format: 20.8 KB, 1 KB less, read by any inflater (auth's among them). Without the
`zopfli` module the script falls back to zlib level 9 and says so. The room auth.wasm needs
under its 1 MB budget.

Run it after editing the list: python3 scripts/pack_common_passwords.py
(with Zopfli: python3 -m venv /tmp/zv && /tmp/zv/bin/pip install zopfli, then /tmp/zv/bin/python)
"""
import pathlib
import sys
import zlib

folder = pathlib.Path(__file__).resolve().parent.parent / "components/auth/src/domain"
text = (folder / "common-passwords.txt").read_bytes()
assert text.endswith(b"\n"), "the list ends with a newline"
assert min(text[:-1].replace(b"\n", b" ")) >= 32, "no byte below 32 but the newlines"
packed = bytearray()
previous = b""
for line in text[:-1].split(b"\n"):
    shared = 0
    while shared < min(len(previous), len(line), 31) and previous[shared] == line[shared]:
        shared += 1
    packed.append(shared)
    packed += line[shared:]
    previous = line
try:
    import zopfli.zlib

    stream = zopfli.zlib.compress(bytes(packed), numiterations=500)
except ImportError:
    print("zopfli not installed: zlib level 9, about 1 KB larger", file=sys.stderr)
    stream = zlib.compress(bytes(packed), 9)
assert zlib.decompress(stream) == bytes(packed)
(folder / "common-passwords.txt.fc.zlib").write_bytes(stream)
