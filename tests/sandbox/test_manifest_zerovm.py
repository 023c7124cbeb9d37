"""The manifest parser's tolerance is ZeroVM's (src/main/manifest.c, src/main/setup.c,
src/channels/channel.c of zerovm/zerovm): each kind of line is skipped, taken or
refused as ZeroVM did, refusals name their line in one line, and every text,
however hostile, gives a Manifest or a ManifestError."""

import ctypes
import ctypes.util

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from zerolab.sandbox import Channel, Manifest, ManifestError
from zerolab.sandbox.manifest import (
    INT64_MAX,
    MANIFEST_LINES_LIMIT,
    MANIFEST_SIZE_LIMIT,
    MAX_CHANNELS,
    SINGLE_KEYS,
    WHITESPACE,
    c_integer,
)

BASE = [
    "Node = 1",
    "Version = 20130611",
    "Timeout = 50",
    "Memory = 4294967296,0",
    "Program = /bin/x.wasm",
    "Channel = /dev/stdin,/dev/stdin,0,0,4294967296,4294967296,0,0",
    "Channel = /dev/stdout,/dev/stdout,0,0,0,0,4294967296,4294967296",
    "Channel = /home/me/data,/dev/3.data,3,1,3,3,3,3",
]
TEXT = "\n".join(BASE) + "\n"
KNOWN_KEYS = ("Channel",) + SINGLE_KEYS


def fields(m):
    return (m.program, m.timeout, m.memory, m.etag, m.node, m.version, m.channels)


def with_line(new, at=3):
    lines = list(BASE)
    lines.insert(at, new)
    return "\n".join(lines) + "\n"


def refusal(text):
    with pytest.raises(ManifestError) as e:
        Manifest.parse(text, source="m.1")
    message = str(e.value)
    assert len(message.splitlines()) == 1 and message.isprintable(), message
    return message


# ------------------------------------------------------------ skipped lines
@pytest.mark.parametrize("line", [
    "",                                         # blank
    " \t\v\f\r",                                # C whitespace only
    "# a comment",                              # no '=': ZeroVM had no comment syntax, the line just lacks '='
    "Timeout 99",                               # a key without '='
    "#Timeout = 1",                             # a "comment" with '=' is an unknown key
    "Timeout = 1 = 2",                          # two '=': skipped whole, even for a known key
    "Channel = /a=b,/dev/ab,0,0,1,1,0,0",       # so is a channel whose name holds '='
    "Memory = 65536,0 # was = 4G",
    "timeout = 1",                              # keys are case sensitive
    "TIMEOUT = 1",
    "Colour = blue",                            # unknown key
    " = 5",                                     # empty key
    "\ufeffTimeout = 1",                        # a BOM makes the key unknown
    "Timeout = 1\rProgram = /y",                # a lone CR does not end a line: two '='
    "Program = /y\u2028Timeout = 1",            # nor does U+2028 (Python's splitlines would split it)
    "Channel\u00a0= /c,/dev/c,0,0,1,1,0,0",     # NBSP is not C whitespace: key 'Channel\xa0' is unknown
])
def test_a_line_zerovm_skipped_changes_nothing(line):
    m = Manifest.parse(with_line(line))
    assert fields(m) == fields(Manifest.parse(TEXT))
    assert m.ignored == ([4] if line.strip(WHITESPACE) else [])


def test_unknown_keys_are_kept_for_a_rewrite_and_listed_as_ignored():
    m = Manifest.parse(with_line("Colour = blue"))
    assert m.extra == {"Colour": "blue"} and "Colour = blue" in m.dumps()


def test_whitespace_crlf_and_spaced_fields_are_trimmed_as_g_strstrip_did():
    spaced = "\r\n".join(
        "\t " + line.replace(" = ", " \t=\v ").replace(",", " , ") + " \f" for line in BASE) + "\r\n"
    assert fields(Manifest.parse(spaced)) == fields(Manifest.parse(TEXT))
    # the doc/manifest.txt example: spaces after each comma, hex limits
    m = Manifest.parse(with_line("Channel = /home/user/sort.log, /dev/log, 0, 1, 0, 0, 0x100, 0x1000"))
    assert m.channel("/dev/log") == Channel("/home/user/sort.log", "/dev/log", 0, 1, 0, 0, 256, 4096)


@pytest.mark.parametrize("value", ["\u00a050", "50\u00a0", "50\x1c", "\u200050"])
def test_python_only_whitespace_is_part_of_the_value(value):
    assert "Timeout must be an integer" in refusal(with_line(f"Timeout = {value}", 0).replace("Timeout = 50\n", ""))


def test_only_the_first_8192_lines_exist_and_blank_lines_past_them_are_fine():
    filler = ["# filler"] * (MANIFEST_LINES_LIMIT - len(BASE) - 1)
    last = "Channel = /home/me/last,/dev/last,0,0,1,1,0,0"
    text = "\n".join(BASE + filler + [last]) + "\n \r\n\t\n"
    assert Manifest.parse(text).channel("/dev/last") is not None
    message = refusal("\n".join(BASE + filler + [last, "", "# one line too many"]) + "\n")
    assert message == f"m.1 line {MANIFEST_LINES_LIMIT + 2}: is past ZeroVM's limit of {MANIFEST_LINES_LIMIT} lines"


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("token, value", [
    ("50", 50), ("+50", 50), ("0x32", 50), ("0X32", 50), ("062", 50), ("00000062", 50), ("0x0000032", 50),
    ("", 0), ("0", 0), ("-0", 0), ("-0x10", -16), (str(INT64_MAX), INT64_MAX), ("0x7fffffffffffffff", INT64_MAX),
    ("-9223372036854775808", -(2**63)),
])
def test_numbers_are_strtoll_base_0(token, value):
    assert c_integer(token) == value


@pytest.mark.parametrize("token", ["5O", "0x", "-", "+", "08", "0b1", "1_000", "\u0665\u0660", "0x-5", "0x 5",
                                   "- 5", "5.0", "1e2", "50 # c", "++1", "0x1g"])
def test_not_a_c_number(token):
    with pytest.raises(ValueError):
        c_integer(token)


@pytest.mark.parametrize("token", ["9223372036854775808", "-9223372036854775809", "0x10000000000000000",
                                   "9" * 100000, "0x" + "f" * 100000, "0" + "7" * 100000])
def test_out_of_int64_is_an_overflow(token):
    with pytest.raises(OverflowError):
        c_integer(token)


def libc_strtoll():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    f = ctypes.CDLL(name, use_errno=True).strtoll
    f.restype, f.argtypes = ctypes.c_longlong, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
    return f


STRTOLL = libc_strtoll()


@pytest.mark.skipif(STRTOLL is None, reason="no C library to compare with")
@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text("0123456789abcdefxX+- \t", max_size=24),
                 st.integers(-2**65, 2**65).map(str), st.integers(-2**65, 2**65).map(lambda n: "%+d" % n),
                 st.integers(0, 2**65).map(hex), st.integers(0, 2**65).map(lambda n: "0%o" % n)))
def test_c_integer_agrees_with_the_c_library(token):
    # ZeroVM's ToInt: trim, g_ascii_strtoll(s, &end, 0), fail unless *end == 0 and errno == 0
    trimmed = token.strip(WHITESPACE)
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    buf = ctypes.create_string_buffer(trimmed.encode())
    value = STRTOLL(buf, ctypes.byref(end), 0)
    ok = end.value == b"" and ctypes.get_errno() == 0
    try:
        assert c_integer(token) == value and ok, token
    except (ValueError, OverflowError):
        assert not ok, token


def test_an_empty_number_is_zero_as_in_zerovm():
    m = Manifest.parse(with_line("Channel = /home/me/nothing,/dev/nothing,,,,,,"))
    assert m.channel("/dev/nothing") == Channel("/home/me/nothing", "/dev/nothing", 0, 0, 0, 0, 0, 0)
    assert Manifest.parse(TEXT.replace("4294967296,0", "4294967296,")).etag == 0
    assert Manifest.parse(TEXT.replace("Node = 1", "Node =")).node == 0
    assert refusal(TEXT.replace("Timeout = 50", "Timeout =")) == "m.1 line 3: Timeout =  is out of range 1..2147483647"


def test_node_is_any_c_int_without_a_name_server():
    # ZeroVM checked Node >= 1 only when a NameServer resolved network channels
    assert Manifest.parse(TEXT.replace("Node = 1", "Node = -5")).node == -5
    assert Manifest.parse(TEXT.replace("Node = 1", "Node = 0x7fffffff")).node == 2**31 - 1
    # where C wrapped a wider value (2**32+1 became 1), zerolab refuses
    assert "Node = 4294967297 is out of range" in refusal(TEXT.replace("Node = 1", "Node = 4294967297"))


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("old, new, expected", [
    ("Version = 20130611", "Version = 20140101", "line 2: unsupported Version '20140101'"),
    ("Version = 20130611", "Version = 20130611 x", "line 2: unsupported Version"),
    ("Timeout = 50", "Timeout = 0", "line 3: Timeout = 0 is out of range 1..2147483647"),
    ("Timeout = 50", "Timeout = -1", "line 3: Timeout = -1 is out of range"),
    ("Timeout = 50", "Timeout = 2147483648", "line 3: Timeout = 2147483648 is out of range"),
    ("Timeout = 50", "Timeout = 4294967346", "line 3: Timeout = 4294967346 is out of range"),
    ("Timeout = 50", "Timeout = 99999999999999999999", "line 3: Timeout = 99999999999999999999 is out of range"),
    ("Timeout = 50", "Timeout = 5O", "line 3: Timeout must be an integer, got '5O'"),
    ("Memory = 4294967296,0", "Memory = 4294967296", "line 4: Memory must be '<bytes>,<etag 0|1>'"),
    ("Memory = 4294967296,0", "Memory = 4294967296,0,0", "line 4: invalid memory etag token '0,0'"),
    ("Memory = 4294967296,0", "Memory = 4294967296,2", "line 4: invalid memory etag token '2'"),
    ("Memory = 4294967296,0", "Memory = 4294967296,4294967296", "line 4: invalid memory etag token"),
    ("Memory = 4294967296,0", "Memory = 4294967297,0", "line 4: memory size 4294967297 is out of range"),
    ("Memory = 4294967296,0", "Memory = 0,0", "line 4: memory size 0 is out of range"),
    ("Memory = 4294967296,0", "Memory = -1,1", "line 4: memory size -1 is out of range"),
    ("Memory = 4294967296,0", "Memory = 4G,0", "line 4: invalid memory size token '4G'"),
    ("Program = /bin/x.wasm", "Program =", "line 5: Program is empty"),
    ("Node = 1", "Node = one", "line 1: Node must be an integer, got 'one'"),
])
def test_a_key_zerovm_refused_is_refused_at_its_line(old, new, expected):
    assert old in TEXT
    assert refusal(TEXT.replace(old, new)).startswith(f"m.1 {expected}")


CH = "Channel = /home/me/data,/dev/3.data,3,1,3,3,3,3"


@pytest.mark.parametrize("new, expected", [
    ("/home/me/data,/dev/3.data,3,1,3,3,3", "Channel needs 8 comma-separated fields"),
    ("/home/me/data,/dev/3.data,3,1,3,3,3,3,3", "Channel needs 8 comma-separated fields"),
    ("/home/me/data,/dev/3.data,3,1,3,3,3,3,", "Channel needs 8 comma-separated fields"),
    ("", "Channel needs 8 comma-separated fields"),
    ("/home/me/data,/dev/3.data,4,1,3,3,3,3", "invalid channel access type 4 (expected 0..3)"),
    ("/home/me/data,/dev/3.data,-1,1,3,3,3,3", "invalid channel access type -1"),
    ("/home/me/data,/dev/3.data,4294967296,1,3,3,3,3", "invalid channel access type 4294967296"),
    ("/home/me/data,/dev/3.data,x,1,3,3,3,3", "invalid channel access type token 'x'"),
    ("/home/me/data,/dev/3.data,3,2,3,3,3,3", "invalid channel etag 2"),
    ("/home/me/data,/dev/3.data,3,1,-3,3,3,3", "negative channel limit gets = -3"),
    ("/home/me/data,/dev/3.data,3,1,3,3,3,9223372036854775808", "invalid channel put_size token"),
    ("data,/dev/3.data,3,1,3,3,3,3", "invalid channel name 'data': only absolute paths are allowed"),
    (",/dev/3.data,3,1,3,3,3,3", "invalid channel name '': only absolute paths are allowed"),
    ("/home/me/a:b,/dev/3.data,3,1,3,3,3,3", "':' is allowed only in protocol:host:port"),
    ("tcp:10.0.0.1:34423,/dev/3.data,0,1,0,0,1,1", "network channels are not supported"),
    ("TCP:10.0.0.1:34423,/dev/3.data,0,1,0,0,1,1", "network channels are not supported"),
    ("Fifo:1:2,/dev/3.data,0,1,0,0,1,1", "network channels are not supported"),
    ("tcp:10.0.0.1,/dev/3.data,0,1,0,0,1,1", "a network address is protocol:host:port"),
    ("/home/me/a;/home/me/b,/dev/3.data,3,1,3,3,3,3", "multi-uri channels are not supported"),
    ("/home/me/data,3.data,3,1,3,3,3,3", "channel alias '3.data' must be an absolute path"),
    ("/home/me/data,/dev/stdin,3,1,3,3,3,3", "duplicate channel alias /dev/stdin (first on line 6)"),
    ("/home/me/data, /dev/stdout \r,3,1,3,3,3,3", "duplicate channel alias /dev/stdout (first on line 7)"),
])
def test_a_channel_zerovm_refused_is_refused_at_its_line(new, expected):
    message = refusal(TEXT.replace(CH, "Channel = " + new))
    assert message.startswith("m.1 line 8: ") and expected in message, message


@pytest.mark.parametrize("key, value", [
    ("Version", "20130611"), ("Program", "/y"), ("Timeout", "5"), ("Memory", "65536,0"), ("Node", "2"),
    ("Job", "/tmp/job"), ("NameServer", "udp:127.0.0.1:54321"), ("Etag", "x"),
])
def test_a_singleton_given_twice_is_refused(key, value):
    given = [n for n, line in enumerate(BASE, start=1) if line.startswith(key + " ")]
    text = TEXT + f"{key} = {value}\n" * (1 if given else 2)
    first, again = (given[0], len(BASE) + 1) if given else (len(BASE) + 1, len(BASE) + 2)
    assert refusal(text) == f"m.1 line {again}: duplicate {key} (first given on line {first})"


@pytest.mark.parametrize("key", ["Version", "Program", "Timeout", "Memory"])
def test_a_mandatory_key_missing_or_skipped_is_refused(key):
    line = next(line for line in BASE if line.startswith(key))
    assert refusal(TEXT.replace(line, line + " = too")) == f"m.1: mandatory key {key} is missing"


def test_job_is_a_unix_socket_path_of_at_most_108_bytes_before_trimming():
    assert Manifest.parse(with_line("Job = " + "/" + "j" * 106)).extra["Job"] == "/" + "j" * 106
    assert "Job is longer than 108 bytes" in refusal(with_line("Job = " + "/" + "j" * 107))
    assert "Job is longer than 108 bytes" in refusal(with_line("Job = /j" + " " * 110))


@pytest.mark.parametrize("value", ["udp:127.0.0.1:54321", "udp:16777343:54321", "UDP:10.0.0.254:", "udp::",
                                   "tcp:1.2.3.4:5", "/run/ns.sock"])
def test_name_server_forms_zerovm_took(value):
    assert Manifest.parse(with_line(f"NameServer = {value}")).extra["NameServer"] == value


@pytest.mark.parametrize("value, expected", [
    ("udp:127.0.0.1", "a network address is protocol:host:port"),
    ("udp:127.0.0.01:5", "malformed ip"), ("udp:0.0.0.0:5", "malformed ip"), ("udp:1.2.3:5", "malformed ip"),
    ("udp:1.2.3.4:x", "invalid number 'x'"), ("udp:host:5", "invalid number 'host'"),
    ("udp:1.2.3.4:5:6", "invalid number '5:6'"), ("ns.example", "only absolute paths"),
    ("/a:b", "':' is allowed only in protocol:host:port"), ("", "only absolute paths"),
])
def test_name_server_forms_zerovm_refused(value, expected):
    message = refusal(with_line(f"NameServer = {value}"))
    assert message.startswith("m.1 line 4: invalid NameServer") and expected in message, message


def test_what_zerolab_refuses_beyond_zerovm():
    # A NUL: ZeroVM silently read the text before it only (here "Timeout = 5").
    assert refusal(TEXT.replace("Timeout = 50", "Timeout = 5\x000")) == (
        "m.1 line 3: holds a NUL character (ZeroVM ignored the text after it)")
    # ZeroVM's buffer held MANIFEST_SIZE_LIMIT - 1 bytes and a terminator.
    padded = TEXT + "#" * (MANIFEST_SIZE_LIMIT - 1 - len(TEXT))
    assert Manifest.parse(padded).ignored == [len(BASE) + 1]
    assert refusal(padded + "#") == f"m.1: is {MANIFEST_SIZE_LIMIT} bytes, ZeroVM's limit is {MANIFEST_SIZE_LIMIT - 1}"
    assert refusal(TEXT + "# \u00e9" * (MANIFEST_SIZE_LIMIT // 4)).startswith("m.1: is ")


def test_a_manifest_without_standard_channels_still_loads():
    # ZeroVM's ChannelsCtor refused fewer than 3 channels and a missing /dev/stdin,
    # /dev/stdout or /dev/stderr; zerolab closes the missing standard fds instead
    # (docs/sandbox.md, "The model"), so the parser takes such a manifest.
    text = "\n".join(line for line in BASE if not line.startswith("Channel")) + "\n"
    assert Manifest.parse(text).channels == []


def test_channel_count_limit():
    # 8192 lines hold at most 8188 channels besides the four mandatory keys: ZeroVM's
    # limit of 10914 channels is reached only by a manifest built in code.
    lines = BASE[1:5] + [f"Channel = /d/{i},/dev/{i},0,0,1,1,0,0" for i in range(MANIFEST_LINES_LIMIT - 4)]
    assert len(Manifest.parse("\n".join(lines) + "\n").channels) == MANIFEST_LINES_LIMIT - 4
    many = [Channel(f"/d/{i}", f"/dev/{i}") for i in range(MAX_CHANNELS + 1)]
    Manifest(program="/x.wasm", channels=many[:-1]).validate()
    with pytest.raises(ManifestError, match="10915 channels, more than ZeroVM's 10914"):
        Manifest(program="/x.wasm", channels=many).validate()


def test_load_keeps_line_ends_for_the_parser(tmp_path):
    # Python's universal newlines would split at a lone CR; ZeroVM did not.
    path = tmp_path / "cr.1"
    path.write_bytes(with_line("Timeout = 1\rProgram = /y").replace("\n", "\r\n").encode())
    m = Manifest.load(str(path))
    assert fields(m) == fields(Manifest.parse(TEXT)) and m.ignored == [4]


def test_load_refuses_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.1"
    path.write_bytes(TEXT.replace("/home/me/data", "/home/me/d\xe9j\xe0").encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1.1: is not a text file \(not UTF-8\)$"):
        Manifest.load(str(path))


# ------------------------------------------------------------ hostile input
ANY_LINE = st.one_of(
    st.text(max_size=60),
    st.tuples(st.sampled_from(KNOWN_KEYS + ("", "channel", "Colour")),
              st.sampled_from([" = ", "=", "\t=\r", " == "]),
              st.one_of(st.text(max_size=50), st.lists(st.text("0123456789xX-+ ,;:/.ab", max_size=12),
                                                       max_size=10).map(",".join)))
    .map("".join),
)


def spliced(insertions, eol="\n"):
    lines = list(BASE)
    for at, line in insertions:
        lines.insert(at, line)
    return eol.join(lines)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.lists(ANY_LINE, max_size=20).map("\n".join),
                 st.builds(spliced, st.lists(st.tuples(st.integers(0, len(BASE)), ANY_LINE), max_size=6),
                           st.sampled_from(["\n", "\r\n", "\r", "\u2028"]))))
def test_any_text_is_a_manifest_or_one_manifest_error_line(text):
    try:
        m = Manifest.parse(text, source="fuzz")
    except ManifestError as e:
        message = str(e)
        assert message.startswith("fuzz") and len(message.splitlines()) == 1 and message.isprintable()
        return
    m.validate()
    again = Manifest.parse(m.dumps())
    assert fields(again) == fields(m) and again.extra == m.extra


def zerovm_skips(line):
    if "\n" in line or "\0" in line:
        return False
    if line.count("=") != 1:
        return True
    return line.split("=")[0].strip(WHITESPACE) not in KNOWN_KEYS


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(BASE)), st.text(max_size=40)), max_size=8))
def test_lines_zerovm_skipped_never_change_the_manifest(insertions):
    assume(all(zerovm_skips(line) for _, line in insertions))
    assert fields(Manifest.parse(spliced(insertions))) == fields(Manifest.parse(TEXT))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(WHITESPACE.replace("\n", ""), max_size=3), min_size=128, max_size=128))
def test_c_whitespace_around_keys_values_and_fields_never_changes_the_manifest(pads):
    pad = iter(pads)
    lines = []
    for line in BASE:
        key, value = line.split(" = ")
        value = ",".join(next(pad) + f + next(pad) for f in value.split(","))
        lines.append(next(pad) + key + next(pad) + "=" + value)
    assert fields(Manifest.parse("\n".join(lines))) == fields(Manifest.parse(TEXT))


HOSTILE = {
    "one line of '='": "=" * (MANIFEST_SIZE_LIMIT - 1),
    "8192 lines then more": "a\n" * (MANIFEST_SIZE_LIMIT // 2 - 1),
    "commas": "Channel = " + "," * (MANIFEST_SIZE_LIMIT - 20),
    "colons": "Channel = /" + ":" * (MANIFEST_SIZE_LIMIT - 40) + ",/dev/x,0,0,0,0,0,0",
    "semicolons": "NameServer = " + "/;" * (MANIFEST_SIZE_LIMIT // 2 - 20),
    "leading zeros": TEXT.replace("Timeout = 50", "Timeout = 0x" + "0" * (MANIFEST_SIZE_LIMIT - 500) + "32"),
    "digits": TEXT.replace("Timeout = 50", "Timeout = " + "9" * (MANIFEST_SIZE_LIMIT - 500)),
    "a long value": TEXT.replace("Program = /bin/x.wasm", "Program = /" + "\u2028" * (MANIFEST_SIZE_LIMIT // 4)),
    "many channels": "\n".join(BASE[1:5] + [f"Channel = /d/{i},/dev/{i},0x{i % 4:x},0,0{i:o},{i},0,0"
                                            for i in range(MANIFEST_LINES_LIMIT - 4)]),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_the_largest_hostile_manifests_parse_or_are_refused_in_one_line(name):
    # No clock here (speed is the benchmarks' business): a quadratic step over
    # half a megabyte would take minutes, which the suite's own time shows.
    text = HOSTILE[name]
    assert len(text.encode()) < 4 * MANIFEST_SIZE_LIMIT
    try:
        Manifest.parse(text)
    except ManifestError as e:
        assert len(str(e)) < 300 and "\n" not in str(e)
