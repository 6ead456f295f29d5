"""What a method's processes send the runner: a JSON header and raw float arrays, never pickle.

Unpickling runs code: a pickle may name any importable callable (``eval``, ``exec``) with
arguments, and ``pickle.loads`` calls it. A fold worker and its units run the method's code,
which can replace anything in them (the unit's body is a module global; ``Connection.send``
is a class attribute), so what they send is untrusted bytes. Read with pickle, one message
could patch the runner that holds the ground truth, and every later episode would be scored
from the truth (``tests/test_sealed.py`` holds both payloads). So every message from a
method's process is decoded here, from plain data only: a kind, a line of text and float32 /
float64 arrays whose shapes the header states. Anything else is refused as a protocol break.

The runner's own messages to a worker (the method, the meta-train set, a unit's episodes)
still travel as pickles: the worker is the side that may run a method's code anyway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DTYPES = ("<f4", "<f8")  # the only arrays a method's process may send: probabilities, thresholds
_HEADER_BYTES = 8


class ProtocolError(ValueError):
    """Bytes that are not a well-formed message."""


@dataclass(frozen=True)
class Message:
    kind: str
    text: str
    arrays: list[np.ndarray | None]


def encode(kind: str, text: str = "", arrays: Sequence[np.ndarray | None] = ()) -> bytes:
    """A message of ``kind`` with a line of ``text`` and ``arrays`` (each float32 or float64,
    or None)."""
    specs, blobs = [], []
    for array in arrays:
        if array is None:
            specs.append(None)
            continue
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.str not in DTYPES:
            raise ProtocolError(f"only float32 and float64 arrays travel to the runner, not {array.dtype}")
        array = array.astype(dtype.str, copy=False)
        specs.append([list(array.shape), dtype.str])
        blobs.append(array.tobytes())
    header = json.dumps({"kind": kind, "text": text, "arrays": specs}).encode()
    return len(header).to_bytes(_HEADER_BYTES, "little") + header + b"".join(blobs)


def decode(raw: bytes) -> Message:
    """The message in ``raw``; :class:`ProtocolError` for anything that is not exactly one."""
    if len(raw) < _HEADER_BYTES:
        raise ProtocolError("shorter than a header")
    size = int.from_bytes(raw[:_HEADER_BYTES], "little")
    if size > len(raw) - _HEADER_BYTES:
        raise ProtocolError("header longer than the message")
    try:
        header = json.loads(raw[_HEADER_BYTES:_HEADER_BYTES + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON ({exc})") from None
    if (not isinstance(header, dict) or set(header) != {"kind", "text", "arrays"} or not isinstance(header["kind"], str)
            or not isinstance(header["text"], str) or not isinstance(header["arrays"], list)):
        raise ProtocolError("header is not {kind, text, arrays}")
    offset, arrays = _HEADER_BYTES + size, []
    for spec in header["arrays"]:
        if spec is None:
            arrays.append(None)
            continue
        shape, dtype = _spec(spec)
        count = int(np.prod(shape, dtype=np.int64))
        end = offset + count * np.dtype(dtype).itemsize
        if end > len(raw):
            raise ProtocolError("arrays longer than the message")
        arrays.append(np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset = end
    if offset != len(raw):
        raise ProtocolError("bytes after the last array")
    return Message(header["kind"], header["text"], arrays)


def _spec(spec: object) -> tuple[tuple[int, ...], str]:
    if (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], list) and spec[1] in DTYPES
            and all(type(n) is int and 0 <= n < 2**31 for n in spec[0])):
        return tuple(spec[0]), spec[1]
    raise ProtocolError(f"not an array description: {spec!r:.80}")
