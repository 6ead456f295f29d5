"""The runner reads a method's processes through perserbench.wire: plain data, never pickle."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from perserbench import wire


def test_a_message_round_trips_with_its_arrays():
    proba = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    thresholds = np.array([0.4, 0.5, 0.6])
    message = wire.decode(wire.encode("ok", "fine", [proba, thresholds, proba[:0], None]))
    assert (message.kind, message.text) == ("ok", "fine")
    assert np.array_equal(message.arrays[0], proba) and message.arrays[0].dtype == np.float32
    assert np.array_equal(message.arrays[1], thresholds) and message.arrays[1].dtype == np.float64
    assert message.arrays[2].shape == (0, 3) and message.arrays[3] is None
    assert wire.decode(wire.encode("ready")) == wire.Message("ready", "", [])


def _raw(header: object, payload: bytes = b"") -> bytes:
    text = __import__("json").dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + payload


class _Bomb:
    def __reduce__(self):
        return eval, ("1/0",)


@pytest.mark.parametrize("raw", [
    pickle.dumps(("ok", [(np.zeros((2, 3), np.float32), None)])),  # what the units sent before
    pickle.dumps(("ready", _Bomb())),
    b"",
    wire.encode("ok", arrays=[np.zeros(3, np.float32)])[:-1],  # truncated
    wire.encode("ok", arrays=[np.zeros(3, np.float32)]) + b"\0",  # trailing bytes
    _raw({"kind": "ok", "text": "", "arrays": [[[1], "|O"]]}, b"\0" * 8),  # an object array
    _raw({"kind": 1, "text": "", "arrays": []}),
    _raw({"kind": "ok", "text": "", "arrays": [[[-1], "<f4"]]}),
], ids=["pickled-answer", "pickled-code", "empty", "truncated", "trailing", "object-dtype", "bad-kind",
        "negative-shape"])
def test_anything_else_is_a_protocol_error_and_runs_nothing(raw):
    with pytest.raises(wire.ProtocolError):
        wire.decode(raw)


def test_only_float_arrays_are_sent():
    with pytest.raises(wire.ProtocolError, match="only float32 and float64"):
        wire.encode("ok", arrays=[np.array([object()])])
