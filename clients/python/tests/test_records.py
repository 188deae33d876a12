"""The live-output records: parsing, and one Run's output put together by offset."""

from __future__ import annotations

import json

from kruntimes._records import Chunk, End, OutputAssembler, parse_record

UID = "0b7c-uid"


def line(**fields: object) -> bytes:
    return json.dumps({"krt": 1, "run": UID, **fields}).encode()


def test_a_utf8_chunk_is_read_from_data() -> None:
    record = parse_record(line(stream="stdout", offset=0, data="héllo\n"))
    assert record == Chunk(UID, "stdout", 0, "héllo\n".encode())


def test_a_binary_chunk_is_read_from_base64() -> None:
    record = parse_record(line(stream="stderr", offset=12, base64="//79"))
    assert record == Chunk(UID, "stderr", 12, b"\xff\xfe\xfd")


def test_the_end_of_a_stream_carries_its_length() -> None:
    assert parse_record(line(stream="stdout", offset=6, eof=True)) == End(UID, "stdout", 6)


def test_lines_that_are_not_records_are_ignored() -> None:
    not_records = [
        b"",
        b"plain text from the agent",
        b"{not json",
        b"[1, 2]",
        json.dumps({"krt": 2, "run": UID, "stream": "stdout", "offset": 0, "data": "x"}).encode(),
        json.dumps({"krt": True, "run": UID, "stream": "stdout", "offset": 0, "data": "x"}).encode(),
        line(stream="stdin", offset=0, data="x"),
        line(stream="stdout", offset=-1, data="x"),
        line(stream="stdout", offset=1.5, data="x"),
        line(stream="stdout", offset=False, data="x"),
        line(stream="stdout", offset=0),
        line(stream="stdout", offset=0, data="x", base64="eA=="),
        line(stream="stdout", offset=0, base64="not base64!"),
        line(stream="stdout", offset=0, data=7),
        line(stream="stdout", offset=0, eof=True, data="x"),
        json.dumps({"krt": 1, "stream": "stdout", "offset": 0, "data": "x"}).encode(),
        b"\xff\xfe not utf-8",
    ]
    for raw in not_records:
        assert parse_record(raw) is None, raw


def test_a_line_with_its_newline_and_a_str_line_are_records() -> None:
    assert parse_record(line(stream="stdout", offset=0, data="a") + b"\r\n") is not None
    assert parse_record(line(stream="stdout", offset=0, data="a").decode()) is not None


def test_duplicates_are_dropped_by_offset_and_overlaps_cut() -> None:
    out = OutputAssembler(UID)
    assert out.feed_line(line(stream="stdout", offset=0, data="hello ")) == Chunk(
        UID, "stdout", 0, b"hello "
    )
    # The same chunk again (a reconnect that reads the log from before): nothing new.
    assert out.feed_line(line(stream="stdout", offset=0, data="hello ")) is None
    # A chunk overlapping what was seen gives only its new part.
    assert out.feed_line(line(stream="stdout", offset=3, data="lo world")) == Chunk(
        UID, "stdout", 6, b"world"
    )
    out.feed_line(line(stream="stdout", offset=11, eof=True))
    out.feed_line(line(stream="stderr", offset=0, eof=True))
    assert out.output("stdout") == b"hello world"
    assert out.ended and out.complete and out.missing() == []


def test_other_runs_records_are_ignored() -> None:
    out = OutputAssembler(UID)
    other = json.dumps({"krt": 1, "run": "other", "stream": "stdout", "offset": 0, "data": "x"})
    assert out.feed_line(other) is None
    assert out.feed_line(
        json.dumps({"krt": 1, "run": "other", "stream": "stdout", "offset": 1, "eof": True})
    ) is None
    assert out.output("stdout") == b""
    assert not out.ended


def test_a_gap_is_counted_and_the_output_is_not_complete() -> None:
    out = OutputAssembler(UID)
    out.feed_line(line(stream="stderr", offset=0, data="ab"))
    chunk = out.feed_line(line(stream="stderr", offset=5, data="fg"))
    assert chunk == Chunk(UID, "stderr", 5, b"fg")
    out.feed_line(line(stream="stderr", offset=7, eof=True))
    out.feed_line(line(stream="stdout", offset=0, eof=True))
    assert out.ended and not out.complete
    assert out.missing() == ["stderr"]


def test_an_end_beyond_what_arrived_is_a_gap() -> None:
    out = OutputAssembler(UID)
    out.feed_line(line(stream="stdout", offset=0, data="ab"))
    out.feed_line(line(stream="stdout", offset=4, eof=True))
    out.feed_line(line(stream="stderr", offset=0, eof=True))
    assert out.ended and not out.complete and out.missing() == ["stdout"]


def test_streams_are_kept_apart() -> None:
    out = OutputAssembler(UID)
    out.feed_line(line(stream="stdout", offset=0, data="out"))
    out.feed_line(line(stream="stderr", offset=0, base64="//79"))
    assert out.output("stdout") == b"out"
    assert out.output("stderr") == b"\xff\xfe\xfd"
    assert not out.ended
