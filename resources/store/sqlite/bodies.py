"""Stored form of resource bodies: compact JSON compressed with zstd and a shipped dictionary.

Small JSON documents compress poorly on their own (700 bytes become 400); with a dictionary trained on FHIR
resources they become about 170, for about 3 microseconds to compress and 1 to restore. A stored body that
starts with `{` is plain JSON (bodies written before compression, or by hand); otherwise its first byte
names the dictionary its zstd frame was written with. https://facebook.github.io/zstd/#small-data
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import zstandard

from resources.store.sqlite.memo import BoundedMemo

DICTIONARY = 1  # the dictionary new bodies are written with; tools/body_dictionary.py trains the next one
_LEVEL = 3
_HERE = Path(__file__).resolve().parent


def _dictionary(number: int) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict((_HERE / f"body-dictionary-{number}.zstd").read_bytes())


_TRAINED = _dictionary(DICTIONARY)
_TRAINED.precompute_compress(level=_LEVEL)
_PREFIX = bytes([DICTIONARY])
# zstandard's (de)compressors must not be shared between threads, and making one loads the dictionary
# (about 10 microseconds), so every thread keeps its own pair.
_local = threading.local()
MEMO_MIB = 8  # default budget of the restored-body memo (CARELOOP_SQLITE_BODY_MEMO_MIB)
# one memo a process: stored forms restore the same whichever store read them
_memo = BoundedMemo(MEMO_MIB * 1024 * 1024)


def set_memo_mib(mib: float) -> None:
    """Budget of the memo of restored bodies, in MiB (0 turns it off and empties it)."""
    _memo.resize(int(mib * 1024 * 1024))


def memo_held_bytes() -> int:
    """Bytes the memo of restored bodies holds now."""
    return _memo.held_bytes


def _pair() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(_local, "pair", None)
    if pair is None:
        pair = (zstandard.ZstdCompressor(level=_LEVEL, dict_data=_TRAINED, write_checksum=False,
                                         write_content_size=True, write_dict_id=False),
                zstandard.ZstdDecompressor(dict_data=_TRAINED))
        _local.pair = pair
    return pair


def encode(body: bytes) -> bytes:
    """The stored form of a JSON body."""
    return _PREFIX + _pair()[0].compress(body)


def decode(stored: bytes | None) -> bytes | None:
    """The JSON body of a stored form (None stays None: a deleted version has no body)."""
    if stored is None or stored[:1] == b"{":
        return stored
    if stored[0] != DICTIONARY:
        raise ValueError(f"stored body written with unknown dictionary {stored[0]}")
    body = _memo.get(stored)
    if body is None:
        body = _pair()[1].decompress(stored[1:])
        _memo.put(stored, body)
    return body


def decode_many(stored: Sequence[bytes | None]) -> list[bytes | None]:
    """The JSON bodies of many stored forms, in order (a search page's rows)."""
    # Hot bodies come from the memo in one pass: a 100-resource $everything restored its bodies in 100 us by
    # zstd and in 26 us from the memo. A miss goes through decode, whose second memo lookup (0.1 us) is
    # small beside the restore it then does (0.8 us).
    get = _memo.get
    found = [get(one) for one in stored]  # type: ignore[arg-type]  # a None key is simply never found
    if None not in found:
        return found
    return [body if body is not None else decode(one) for one, body in zip(stored, found, strict=True)]
