#!/usr/bin/env python3
"""Packs components/auth/src/domain/common-passwords.txt into common-passwords.txt.fc.zlib, the
form auth.wasm ships (components/auth/src/domain/password.rs unpacks it; a unit test checks that
the result is the text file again, byte for byte).

Front coding, then zlib level 9: each line becomes one byte, how many leading bytes it shares
with the line before (at most 31), then the rest of the line. No byte of the list is below 32 (a
space), so that byte also ends the line before and no newline is stored. On the sorted list that
is 21.8 KB against 30.1 KB for zlib alone (23.5 KB with a newline after each line): the room
auth.wasm needs under its 1 MB budget.

Run it after editing the list: python3 scripts/pack_common_passwords.py
"""
import pathlib
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
(folder / "common-passwords.txt.fc.zlib").write_bytes(zlib.compress(bytes(packed), 9))
