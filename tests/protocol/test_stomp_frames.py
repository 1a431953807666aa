"""STOMP frames (broker/protocol/stomp_frames.py): the incremental parser and the encoder."""

from __future__ import annotations

import pytest

from broker.protocol.stomp_frames import (
    HEARTBEAT,
    StompFrame,
    StompFrameError,
    StompFrameTooLarge,
    StompParser,
    encode_frame,
    escape_header,
)

MB = 1 << 20


def parse(data: bytes, *, version: str = "1.2", **limits: int) -> list[StompFrame]:
    parser = StompParser(max_frame_bytes=limits.pop("max_frame_bytes", MB), **limits)
    parser.version = version
    return parser.feed(data)


def refused(data: bytes, *, version: str = "1.2", **limits: int) -> StompFrameError:
    with pytest.raises(StompFrameError) as caught:
        parse(data, version=version, **limits)
    return caught.value


# -- round trips and escaping ---------------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_a_frame_round_trips_in_each_version(version: str) -> None:
    headers = {"destination": "/queue/a", "receipt": "r-1", "x-url": "http://h:80/p"}
    wire = encode_frame("SEND", headers, b"hello", version=version)
    assert parse(wire, version=version) == [StompFrame("SEND", {**headers, "content-length": "5"}, b"hello")]


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_special_characters_round_trip_where_they_can_be_escaped(version: str) -> None:
    value = "a:b\nc\\d\\n" + ("\re" if version == "1.2" else "")
    wire = encode_frame("SEND", {"na:me\n": value}, version=version)
    assert parse(wire, version=version) == [StompFrame("SEND", {"na:me\n": value})]


def test_escape_header_per_version() -> None:
    assert escape_header("a:b\nc\\d\re") == "a\\cb\\nc\\\\d\\re"
    assert escape_header("a:b\nc\\d\re", "1.1") == "a\\cb\\nc\\\\d\re"  # 1.1 has no \r escape
    assert escape_header("a:b\nc", "1.0") == "a:b\nc"
    plain = "".join(["/queue/", "orders"])
    assert escape_header(plain) is plain  # nothing to escape: the same object back
    assert escape_header("\\c") == "\\\\c"  # backslashes first, so the escape is not doubled
    with pytest.raises(ValueError):
        escape_header("a", "2.0")


def test_parser_unescapes_names_and_values_and_keeps_colons_in_values() -> None:
    (frame,) = parse(b"SEND\nn\\cm:a\\cb\\nc\\\\d\\re\nurl:http://h:80/p\\\\\n\n\x00")
    assert frame.headers == {"n:m": "a:b\nc\\d\re", "url": "http://h:80/p\\"}


def test_values_keep_their_whitespace() -> None:
    (frame,) = parse(b"SEND\n a : b \n\n\x00")
    assert frame.headers == {" a ": " b "}


def test_version_1_1_has_no_cr_escape_and_1_0_no_escapes_at_all() -> None:
    assert parse(b"SEND\na:x\\ny\n\n\x00", version="1.1")[0].headers == {"a": "x\ny"}
    assert "undefined escape" in refused(b"SEND\na:x\\ry\n\n\x00", version="1.1").message
    assert parse(b"SEND\na:x\\ry\\t\\\n\n\x00", version="1.0")[0].headers == {"a": "x\\ry\\t\\"}


@pytest.mark.parametrize("value", [b"a\\tb", b"ab\\", b"\\"])
def test_an_undefined_escape_is_an_error(value: bytes) -> None:
    error = refused(b"SEND\na:" + value + b"\n\n\x00")
    assert "undefined escape" in error.message and error.code == "invalid"
    refused(b"SEND\n" + value + b":a\n\n\x00")  # in a name too


@pytest.mark.parametrize("command", ["CONNECT", "CONNECTED"])
def test_connect_and_connected_are_never_unescaped(command: str) -> None:
    wire = f"{command}\nlogin:a\\cb\npasscode:p\\t\\\n\n\x00".encode()
    assert parse(wire)[0].headers == {"login": "a\\cb", "passcode": "p\\t\\"}
    assert encode_frame(command, {"login": "a\\cb"}) == wire[: wire.index(b"\npasscode")] + b"\n\n\x00"


def test_encoder_refuses_what_cannot_go_unescaped() -> None:
    with pytest.raises(ValueError):
        encode_frame("CONNECTED", {"server": "a\nb"})
    with pytest.raises(ValueError):
        encode_frame("MESSAGE", {"a:b": "c"}, version="1.0")
    with pytest.raises(ValueError):
        encode_frame("MESSAGE", {}, version="1.3")


def test_encoder_content_length_and_header_order() -> None:
    assert encode_frame("SEND", {"destination": "q"}) == b"SEND\ndestination:q\n\n\x00"
    assert encode_frame("SEND", [("a", "1"), ("a", "2")], b"xy") == b"SEND\na:1\na:2\ncontent-length:2\n\nxy\x00"
    assert encode_frame("SEND", {"content-length": "2"}, b"xy") == b"SEND\ncontent-length:2\n\nxy\x00"
    assert HEARTBEAT == b"\n"


# -- frame structure -------------------------------------------------------------


def test_a_repeated_header_keeps_its_first_value() -> None:
    (frame,) = parse(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00")
    assert frame.headers == {"foo": "World"}


def test_crlf_lines() -> None:
    (frame,) = parse(b"SEND\r\na:1\r\nb:\r\n\r\nbody\r\n\x00")
    assert frame == StompFrame("SEND", {"a": "1", "b": ""}, b"body\r\n")
    assert parse(b"SEND\r\n\r\n\x00") == [StompFrame("SEND", {})]
    assert parse(b"SEND\na:1\r\n\nx\x00") == [StompFrame("SEND", {"a": "1"}, b"x")]  # LF and CRLF mixed
    assert parse(b"SEND\na:1\r\r\n\n\x00")[0].headers == {"a": "1\r"}  # only the CR before the LF goes


def test_content_length_body_may_hold_nul_bytes() -> None:
    body = bytes(range(256)) * 3
    (frame,) = parse(b"SEND\ncontent-length:%d\n\n" % len(body) + body + b"\x00")
    assert frame.body == body and frame.headers == {"content-length": str(len(body))}
    assert parse(b"SEND\ncontent-length:0\n\n\x00") == [StompFrame("SEND", {"content-length": "0"})]
    assert parse(encode_frame("SEND", {}, b"\x00\x00")) == [StompFrame("SEND", {"content-length": "2"}, b"\x00\x00")]


def test_without_content_length_the_body_ends_at_the_first_nul() -> None:
    assert parse(b"SEND\n\nab\x00cd\x00") == [StompFrame("SEND", {}, b"ab")]  # "cd\0" has no blank line yet


def test_a_content_length_body_must_be_followed_by_nul() -> None:
    assert "not followed by a NUL" in refused(b"SEND\ncontent-length:2\n\nabc\x00").message


@pytest.mark.parametrize("declared", [b"-1", b"abc", b"", b" 5", b"5 ", b"+5", b"1e3", "\u0663".encode()])
def test_a_bad_content_length_is_an_error(declared: bytes) -> None:
    assert "content-length" in refused(b"SEND\ncontent-length:" + declared + b"\n\n\x00").message


def test_the_first_content_length_counts() -> None:
    assert parse(b"SEND\ncontent-length:1\ncontent-length:x\n\na\x00")[0].body == b"a"


@pytest.mark.parametrize("command", [b"send", b"Send", b"SEND1", b"SE ND", b"SEND:", "S\u00c9ND".encode(), b"\r\r"])
def test_a_command_of_other_than_uppercase_letters_is_an_error(command: bytes) -> None:
    assert "command" in refused(command + b"\n\n\x00").message


def test_a_header_line_needs_a_colon_and_a_name() -> None:
    assert "no colon" in refused(b"SEND\ndestination\n\n\x00").message
    assert "empty name" in refused(b"SEND\n:value\n\n\x00").message


def test_headers_must_be_utf8() -> None:
    assert "UTF-8" in refused(b"SEND\na:\xff\n\n\x00").message


# -- the stream --------------------------------------------------------------------


def test_heartbeats_are_skipped_at_the_start_and_between_frames() -> None:
    assert parse(b"\n\r\n\n") == []
    frames = parse(b"\n\r\nSEND\n\na\x00\n\n\r\nSEND\n\nb\x00\r\n")
    assert [f.body for f in frames] == [b"a", b"b"]
    parser = StompParser(max_frame_bytes=MB)
    assert parser.feed(b"\r") == []  # half a CRLF heart-beat
    assert parser.feed(b"\nSEND\n\n\x00") == [StompFrame("SEND", {})]


def test_nuls_between_frames_are_skipped_as_rabbitmq_does() -> None:
    frames = parse(b"\n\x00SUBSCRIBE\nid:1\n\n\x00\n\x00SEND\n\nhello\n\x00\n")
    assert [(f.command, f.body) for f in frames] == [("SUBSCRIBE", b""), ("SEND", b"hello\n")]
    assert parse(b"\x00\x00") == []


def test_several_frames_in_one_feed() -> None:
    wire = b"".join(encode_frame("SEND", {"n": str(i)}, b"x" * i) for i in range(20))
    frames = parse(wire)
    assert [(f.headers["n"], f.body) for f in frames] == [(str(i), b"x" * i) for i in range(20)]


STREAM = b"".join(
    [
        b"\r\n",
        encode_frame("SEND", {"destination": "/q/a:b", "receipt": "r\n1"}, b"bin\x00ary"),
        b"\n",
        b"SEND\r\na:1\r\na:2\r\n\r\nno length\x00",
        encode_frame("CONNECTED", {"version": "1.2"}),
    ]
)
EXPECTED = [
    StompFrame("SEND", {"destination": "/q/a:b", "receipt": "r\n1", "content-length": "7"}, b"bin\x00ary"),
    StompFrame("SEND", {"a": "1"}, b"no length"),
    StompFrame("CONNECTED", {"version": "1.2"}),
]


def test_the_stream_fed_byte_by_byte_yields_the_same_frames() -> None:
    parser = StompParser(max_frame_bytes=MB)
    frames: list[StompFrame] = []
    for i in range(len(STREAM)):
        frames += parser.feed(STREAM[i : i + 1])
    assert frames == EXPECTED


def test_the_stream_cut_in_two_anywhere_yields_the_same_frames() -> None:
    assert parse(STREAM) == EXPECTED
    for cut in range(len(STREAM) + 1):
        parser = StompParser(max_frame_bytes=MB)
        assert parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) == EXPECTED, cut


def test_a_big_body_in_many_chunks() -> None:
    body = bytes(range(1, 256)) * 800
    for wire in (b"SEND\n\n" + body + b"\x00", encode_frame("SEND", {}, body)):
        parser = StompParser(max_frame_bytes=MB)
        frames: list[StompFrame] = []
        for i in range(0, len(wire), 1000):
            frames += parser.feed(wire[i : i + 1000])
        assert [f.body for f in frames] == [body]


def test_the_parser_is_unusable_after_an_error() -> None:
    parser = StompParser(max_frame_bytes=MB)
    with pytest.raises(StompFrameError):
        parser.feed(b"send\n\n\x00")
    with pytest.raises(StompFrameError):
        parser.feed(b"SEND\n\n\x00")


def test_version_is_checked() -> None:
    parser = StompParser(max_frame_bytes=MB)
    assert parser.version == "1.2"
    with pytest.raises(ValueError):
        parser.version = "1.3"


# -- limits -------------------------------------------------------------------------


def headers_of(count: int) -> bytes:
    return b"".join(b"h%d:v\n" % i for i in range(count))


def test_max_headers() -> None:
    assert len(parse(b"SEND\n" + headers_of(3) + b"\n\x00", max_headers=3)[0].headers) == 3
    error = refused(b"SEND\n" + headers_of(4) + b"\n\x00", max_headers=3)
    assert isinstance(error, StompFrameTooLarge) and "more than 3 headers" in error.message


def test_max_header_bytes_counts_the_command_the_headers_and_the_blank_line() -> None:
    frame = b"SEND\na:" + b"x" * 10 + b"\n\n"  # 19 bytes before the body
    assert parse(frame + b"\x00", max_header_bytes=19) == [StompFrame("SEND", {"a": "x" * 10})]
    assert isinstance(refused(frame + b"\x00", max_header_bytes=18), StompFrameTooLarge)
    crlf = b"SEND\r\na:" + b"x" * 10 + b"\r\n\r\n"  # 22 bytes
    assert parse(crlf + b"\x00", max_header_bytes=22)[0].headers == {"a": "x" * 10}
    assert isinstance(refused(crlf + b"\x00", max_header_bytes=21), StompFrameTooLarge)


def test_max_header_bytes_refuses_before_the_blank_line_arrives() -> None:
    parser = StompParser(max_frame_bytes=MB, max_header_bytes=100)
    assert parser.feed(b"SEND\na:" + b"x" * 90) == []
    with pytest.raises(StompFrameTooLarge):
        parser.feed(b"x" * 10)


def test_max_frame_bytes_with_content_length_refuses_before_the_body_arrives() -> None:
    head = b"SEND\ncontent-length:%d\n\n"  # 24 bytes
    assert parse(head % 76 + b"x" * 76 + b"\x00", max_frame_bytes=100)[0].body == b"x" * 76
    parser = StompParser(max_frame_bytes=100)
    with pytest.raises(StompFrameTooLarge):
        parser.feed(head % 77)


def test_max_frame_bytes_without_content_length_refuses_once_buffered_data_passes_it() -> None:
    head = b"SEND\n\n"  # 6 bytes
    assert parse(head + b"x" * 94 + b"\x00", max_frame_bytes=100)[0].body == b"x" * 94
    assert isinstance(refused(head + b"x" * 95 + b"\x00", max_frame_bytes=100), StompFrameTooLarge)
    parser = StompParser(max_frame_bytes=100)
    assert parser.feed(head + b"x" * 94) == []
    with pytest.raises(StompFrameTooLarge):
        parser.feed(b"x")
