"""Reading the live-output records that the runtimed agent writes to its container log.

The agent writes one JSON object per line for every chunk of a Run's output:

    {"krt":1,"run":"<Run uid>","stream":"stdout","offset":0,"data":"hello\\n"}
    {"krt":1,"run":"<Run uid>","stream":"stderr","offset":12,"base64":"//79"}
    {"krt":1,"run":"<Run uid>","stream":"stdout","offset":6,"eof":true}

Every other line of the log (the agent's own messages, records of other Runs, a line
that a container runtime split) is ignored. Offsets let a reader that reconnects drop
what it already has and notice bytes it never saw.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

RECORD_VERSION = 1
"""The value of `krt` in every record this package reads."""

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class Chunk:
    """Bytes of one stream starting at `offset`."""

    run: str
    stream: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class End:
    """The end of one stream: `offset` is its total length as mirrored."""

    run: str
    stream: str
    offset: int


Record = Union[Chunk, End]


def _is_int(value: object) -> bool:
    # bool is an int in Python; a record's numbers never are booleans.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_record(line: Union[bytes, str]) -> Optional[Record]:
    """The record on one log line, or None when the line is not a valid record."""
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        text = line
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("krt") != RECORD_VERSION:
        return None
    if not _is_int(obj["krt"]):
        return None
    run, stream, offset = obj.get("run"), obj.get("stream"), obj.get("offset")
    if not isinstance(run, str) or stream not in STREAMS or not _is_int(offset):
        return None
    assert isinstance(stream, str) and isinstance(offset, int)
    if offset < 0:
        return None
    has_data, has_b64 = "data" in obj, "base64" in obj
    if obj.get("eof") is True:
        return None if has_data or has_b64 else End(run, stream, offset)
    if has_data == has_b64:
        return None
    if has_data:
        data = obj["data"]
        if not isinstance(data, str):
            return None
        return Chunk(run, stream, offset, data.encode("utf-8"))
    encoded = obj["base64"]
    if not isinstance(encoded, str):
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return Chunk(run, stream, offset, raw)


@dataclass
class _StreamState:
    received: bytearray = field(default_factory=bytearray)
    # The offset the next new byte has: everything below it was seen (or skipped).
    next_offset: int = 0
    missing: int = 0
    ended: bool = False


class OutputAssembler:
    """Puts one Run's records together: duplicates are dropped by offset, gaps counted.

    `add` returns the bytes that are new, so that a follower can hand them on as they
    arrive; `stdout`, `stderr` and `complete` describe everything received so far.
    """

    def __init__(self, run_uid: str) -> None:
        self.run_uid = run_uid
        self._streams: Dict[str, _StreamState] = {s: _StreamState() for s in STREAMS}

    def add(self, record: Record) -> Optional[Chunk]:
        """Takes one record; the new part of it, if it is a chunk with new bytes."""
        if record.run != self.run_uid:
            return None
        state = self._streams[record.stream]
        if isinstance(record, End):
            if record.offset > state.next_offset:
                state.missing += record.offset - state.next_offset
                state.next_offset = record.offset
            state.ended = True
            return None
        end = record.offset + len(record.data)
        if end <= state.next_offset:
            return None
        if record.offset > state.next_offset:
            # Bytes between what was seen and this chunk never arrived.
            state.missing += record.offset - state.next_offset
            new = record.data
        else:
            new = record.data[state.next_offset - record.offset :]
        new_offset = max(record.offset, state.next_offset)
        state.received += new
        state.next_offset = end
        return Chunk(record.run, record.stream, new_offset, bytes(new))

    def feed_line(self, line: Union[bytes, str]) -> Optional[Chunk]:
        """`add` for one raw log line (ignored unless it is a record of this Run)."""
        record = parse_record(line)
        return None if record is None else self.add(record)

    @property
    def ended(self) -> bool:
        """Whether the end of both streams has been seen."""
        return all(s.ended for s in self._streams.values())

    @property
    def complete(self) -> bool:
        """Whether both streams ended and no byte of either went missing."""
        return self.ended and all(s.missing == 0 for s in self._streams.values())

    def output(self, stream: str) -> bytes:
        """Every byte received of `stream`, in order."""
        return bytes(self._streams[stream].received)

    def missing(self) -> List[str]:
        """The streams with bytes that never arrived (a gap in the records)."""
        return [name for name, s in self._streams.items() if s.missing]
