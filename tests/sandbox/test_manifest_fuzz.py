"""The manifest and NVRAM parsers against arbitrary text (Hypothesis): a user's
file either loads or is refused with a ManifestError naming the line, never
another exception, and what loads validates and round-trips."""

from hypothesis import given, settings
from hypothesis import strategies as st

from zerolab.sandbox import NVRAM, Manifest, ManifestError

KEYS = ["Node", "Version", "Timeout", "Memory", "Program", "Channel", "Job", "Etag", "Broken", ""]
NUMBERS = st.one_of(st.integers(-2**70, 2**70).map(str), st.sampled_from(["0x10", "1e3", "-0", "", " ", "9" * 400]))
CHANNEL = st.lists(st.one_of(NUMBERS, st.text(max_size=20)), min_size=0, max_size=10).map(",".join)
LINE = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.one_of(NUMBERS, CHANNEL, st.text(max_size=40)))
    .map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=60),
)
VALID = """\
Node = 1
Version = 20130611
Timeout = 5
Memory = 33554432,0
Program = /bin/true.wasm
Channel = /dev/stdin,/dev/stdin,0,0,1,1,0,0
Channel = /dev/stdout,/dev/stdout,0,0,0,0,1,1
"""


@settings(max_examples=400, deadline=None)
@given(st.lists(LINE, max_size=15).map("\n".join))
def test_any_manifest_text_loads_or_is_refused_with_a_manifest_error(text):
    try:
        manifest = Manifest.parse(text)
    except ManifestError as e:
        assert str(e).strip() and "\n" not in str(e).strip()
        return
    manifest.validate()
    again = Manifest.parse(manifest.dumps())
    assert again.channels == manifest.channels


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID)), st.text(max_size=30))
def test_a_valid_manifest_with_anything_spliced_in(at, junk):
    try:
        Manifest.parse(VALID[:at] + junk + VALID[at:])
    except ManifestError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["[args]", "[env]", "[fstab]", "[mapping]", "[debug]", "["]),
                          st.text(max_size=60)), max_size=15).map("\n".join))
def test_any_nvram_text_loads_or_is_refused_with_a_manifest_error(text):
    try:
        NVRAM.parse(text)
    except ManifestError as e:
        assert str(e).strip()
