"""Job parsing and wildcard matching against arbitrary input (Hypothesis):
parse() and expand() either succeed or raise a JobError with a 4xx status,
never another exception; glob_match() agrees with a regular expression on
inputs short enough for the expression's backtracking to be harmless."""

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from zerolab.zerocloud import job
from zerolab.zerocloud.job import Device, JobError, SwiftPath

SYS = {"python"}
MAX_NODES = 8

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                        st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)), max_leaves=40)

# Nodes whose keys hold plausible values (so that the search reaches every
# check of parse_node, expand and fill), and nodes with anything anywhere.
PATHS = st.one_of(
    st.sampled_from(["swift://a/c/o", "swift://a/c/*", "swift://a/c/p-*.txt", "swift://a/o/*-out",
                     "swift://a/c/*/*", "swift://a/o/*", "swift://a/*/o", "swift://a"]),
    st.text(max_size=30).map(lambda t: "swift://a/c/" + t),
)
# sampled_from with repeats: mostly what works, sometimes what does not
PROGRAMS = st.sampled_from(["swift://a/bin/p.wasm"] * 3 + ["file://python:python"] * 3
                           + ["file://nosuch:x", "swift://a/c/*"])
NAMES = st.sampled_from(["a", "b", "c", "d"])
DEVICE = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(job.READABLE), "path": PATHS}),
    st.fixed_dictionaries({"name": st.sampled_from(job.WRITABLE)}, optional={
        "path": PATHS, "content_type": st.sampled_from(["text/plain", "a\nb", "x" * 300])}),
    st.fixed_dictionaries({"name": st.sampled_from(list(job.DEVICE_ALIASES))}),
)
PLAUSIBLE_NODE = st.fixed_dictionaries(
    {"name": NAMES,
     "exec": st.fixed_dictionaries({"path": PROGRAMS}, optional={
         "args": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=5), max_size=4)),
         "env": st.dictionaries(st.sampled_from(["A", "B_1", "C"] * 2 + ["1x", "a-b"]), st.text(max_size=5),
                                max_size=3)})},
    optional={"devices": st.one_of(st.lists(DEVICE, max_size=3, unique_by=lambda d: d["name"]),
                                   st.lists(DEVICE, max_size=4)),
              "count": st.one_of(st.just(1), st.integers(1, 12), st.integers(-2, 10**12)),
              "connect": st.one_of(st.just([]), st.lists(NAMES, max_size=3))})
ANY_NODE = st.fixed_dictionaries(
    {"name": st.one_of(NAMES, JSON_LEAVES)},
    optional={"exec": st.one_of(st.fixed_dictionaries({"path": st.one_of(PROGRAMS, JSON_LEAVES)},
                                                      optional={"args": JSON_VALUES, "env": JSON_VALUES,
                                                                "name": JSON_LEAVES}), JSON_VALUES),
              "devices": st.one_of(st.lists(st.one_of(DEVICE, JSON_VALUES), max_size=4), JSON_LEAVES),
              "count": JSON_LEAVES, "connect": st.one_of(st.lists(JSON_LEAVES, max_size=3), JSON_LEAVES),
              "replicate": JSON_LEAVES})
LITERALS = st.text(alphabet="ab-.", max_size=3)


@st.composite
def mapreduce(draw) -> list:
    """A mapper fanned out over a wildcard (output names filled from it), maybe
    counted, maybe feeding a reducer: the jobs that reach expand() and fill()."""
    stars = draw(st.integers(1, 4))
    pattern = draw(LITERALS) + "".join("*" + draw(LITERALS) for _ in range(stars))
    out_stars = draw(st.sampled_from([stars] * 4 + [stars + 1]))
    out = draw(LITERALS) + "".join("*" + draw(LITERALS) for _ in range(out_stars))
    devices = [{"name": draw(st.sampled_from(job.COLOCATING)), "path": "swift://a/in/" + pattern}]
    reduce = draw(st.booleans())
    if not reduce:
        devices.append({"name": draw(st.sampled_from(job.WRITABLE)), "path": "swift://a/out/" + out})
    mapper = {"name": "map", "exec": {"path": "file://python:python", "args": draw(st.text(max_size=8))},
              "devices": devices, "count": draw(st.sampled_from([1, 1, 2, 9]))}
    if not reduce:
        return [mapper]
    mapper["connect"] = ["red"]
    reducer = {"name": "red", "exec": {"path": "swift://a/bin/r.wasm"}, "devices": [{"name": "stdout"}],
               "count": draw(st.sampled_from([1, 1, 2]))}
    return [mapper, reducer]


JOBS = st.one_of(
    mapreduce(),
    st.lists(PLAUSIBLE_NODE, min_size=1, max_size=4, unique_by=lambda n: n["name"]),
    st.lists(st.one_of(PLAUSIBLE_NODE, ANY_NODE, JSON_VALUES), max_size=5),
    PLAUSIBLE_NODE, ANY_NODE, JSON_VALUES)
LISTED = st.lists(st.one_of(st.text(alphabet="ab-.", max_size=10), st.text(max_size=10),
                            st.sampled_from(["\ud800", "a" * 1100, ""])), max_size=12)


def parse_or_4xx(body: bytes):
    try:
        return job.parse(body, SYS, MAX_NODES)
    except JobError as e:
        assert 400 <= e.status < 500, (e.status, e.reason)
        assert e.reason.strip() and "\n" not in e.reason
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_get_a_4xx(body):
    parse_or_4xx(body)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]{}",:\\ u0123456789abdfnrt-.eE', max_size=200))
def test_json_like_text_parses_or_gets_a_4xx(text):
    parse_or_4xx(text.encode())


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_any_json_value_parses_or_gets_a_4xx(value):
    parse_or_4xx(json.dumps(value).encode())


def lister(data):
    """Names a listing might return for a path: some made to match its pattern
    (its stars filled with drawn texts), some anything at all."""
    def list_objects(path: SwiftPath) -> list[str]:
        pieces = path.obj.split("*")
        fillers = st.lists(st.text(alphabet="ab-./", max_size=4), min_size=len(pieces) - 1,
                           max_size=len(pieces) - 1)
        matching = [pieces[0] + "".join(t + p for t, p in zip(texts, pieces[1:]))
                    for texts in data.draw(st.lists(fillers, max_size=10))]
        return matching + data.draw(LISTED)
    return list_objects


@settings(max_examples=600, deadline=None)
@given(JOBS, st.data())
def test_node_shaped_jobs_parse_and_expand_or_get_a_4xx(value, data):
    nodes = parse_or_4xx(json.dumps(value).encode())
    if nodes is None:
        return
    try:
        stages = job.expand(nodes, lister(data), MAX_NODES)
    except JobError as e:
        assert e.status in (400, 404, 413), (e.status, e.reason)
        assert "\n" not in e.reason
        return
    instances = [i for stage in stages for i in stage]
    assert 1 <= len(instances) <= MAX_NODES
    assert len({i.name for i in instances}) == len(instances)
    for i in instances:   # every wildcard resolved, the input to a name that matches it
        wild = i.node.wildcard_device
        for d in i.devices:
            assert d.path is None or not d.path.wildcard
            if wild is not None and d.name == wild.name:
                assert wild.path.match(d.path.obj) is not None


# ----------------------------------------------------------------- globbing
def reference(pattern: str, text: str):
    """The same match by a regular expression: ``*`` as a lazy group, which
    takes the leftmost split as glob_match does.  Only for short inputs."""
    regex = "(.*?)".join(re.escape(p) for p in pattern.split("*"))
    m = re.fullmatch(regex, text, re.DOTALL)
    return list(m.groups()) if m else None


SHORT_PATTERNS = st.text(alphabet="ab*/", max_size=10)
SHORT_TEXTS = st.text(alphabet="ab/\n", max_size=12)


@settings(max_examples=2000, deadline=None)
@given(SHORT_PATTERNS, SHORT_TEXTS)
def test_glob_match_agrees_with_a_regular_expression(pattern, text):
    assert job.glob_match(pattern, text) == reference(pattern, text)


@settings(max_examples=500, deadline=None)
@given(SHORT_PATTERNS, st.lists(st.text(alphabet="ab/", max_size=4), min_size=10, max_size=10))
def test_a_pattern_filled_with_any_texts_matches_and_gives_texts_back(pattern, texts):
    pieces = pattern.split("*")
    name = pieces[0] + "".join(t + p for t, p in zip(texts, pieces[1:]))
    matched = job.glob_match(pattern, name)
    assert matched is not None and len(matched) == len(pieces) - 1
    # not necessarily the same texts (a* over "aa" could split either way), but the same name
    assert pieces[0] + "".join(t + p for t, p in zip(matched, pieces[1:])) == name


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 4), st.lists(st.text(alphabet="ab.-", max_size=4), min_size=4, max_size=4),
       st.lists(st.text(alphabet="xy_", max_size=3), min_size=5, max_size=5))
def test_fill_puts_the_matched_texts_in_the_output_name(stars, texts, literals):
    wild_obj = "in/" + "-".join(["*"] * stars) + ".txt"
    out_obj = literals[0] + "".join("*" + lit for lit in literals[1:stars + 1])
    wild = Device("stdin", SwiftPath("a", "c", wild_obj))
    out = Device("stdout", SwiftPath("a", "o", out_obj))
    obj = "in/" + "-".join(texts[:stars]) + ".txt"
    matched = wild.path.match(obj)
    assert matched is not None
    filled = job.fill(out, wild, obj)
    assert filled.path.obj == literals[0] + "".join(m + lit for m, lit in zip(matched, literals[1:stars + 1]))
    assert job.fill(wild, wild, obj).path.obj == obj
