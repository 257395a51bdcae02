#!/usr/bin/env python3
"""Packs components/auth/src/domain/common-passwords.txt into common-passwords.txt.fc.zlib, the
form auth.wasm ships (components/auth/src/domain/password.rs unpacks it; a unit test checks that
the result is the text file again, byte for byte).

Front coding, then zlib level 9: each line becomes one byte, how many leading bytes it shares
with the line before (at most 255), then the rest of the line and a newline. On the sorted list
that is 23.5 KB against 30.1 KB for zlib alone: the room auth.wasm needs under its 1 MB budget.

Run it after editing the list: python3 scripts/pack_common_passwords.py
"""
import pathlib
import zlib

folder = pathlib.Path(__file__).resolve().parent.parent / "components/auth/src/domain"
text = (folder / "common-passwords.txt").read_bytes()
assert text.endswith(b"\n"), "the list ends with a newline"
packed = bytearray()
previous = b""
for line in text[:-1].split(b"\n"):
    shared = 0
    while shared < min(len(previous), len(line), 255) and previous[shared] == line[shared]:
        shared += 1
    packed.append(shared)
    packed += line[shared:] + b"\n"
    previous = line
(folder / "common-passwords.txt.fc.zlib").write_bytes(zlib.compress(bytes(packed), 9))
