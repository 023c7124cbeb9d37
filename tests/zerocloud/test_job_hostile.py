"""Hostile job descriptions (zerolab.zerocloud.job): each gets a 4xx JobError
with a one-line reason naming the limit, without building, scanning or
recursing in proportion to what the job asks for.  Pure, no Swift needed."""

import json

import pytest

from zerolab.zerocloud import job
from zerolab.zerocloud.job import Budget, Device, JobError, Node, Program, SwiftPath

SYS = {"python"}
WC = "swift://AUTH_test/bin/wordcount.wasm"


def node(**extra):
    raw = {"name": "n", "exec": {"path": WC}}
    raw.update(extra)
    return raw


def refused(body, status=400, max_nodes=64) -> str:
    """The reason a job is refused with ``status``: one line, never empty."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    with pytest.raises(JobError) as e:
        job.parse(body, SYS, max_nodes)
    assert e.value.status == status, e.value.reason
    assert e.value.reason.strip() and "\n" not in e.value.reason
    return e.value.reason


def never_listed(path):
    raise AssertionError(f"listed {path}: the job should have been refused before any listing")


# ------------------------------------------------------------------- count
def test_a_billion_instances_is_413_from_parse_before_any_is_built():
    reason = refused([node(count=1_000_000_000, devices=[{"name": "stdout"}])], 413)
    assert "zerovm_maxnodes (64)" in reason


def test_counts_that_add_up_over_the_limit_are_413():
    nodes = [node(name=f"n{i}", count=30) for i in range(3)]
    assert "90 instances" in refused(nodes, 413)


def test_expand_checks_counts_before_building_or_listing():
    # Nodes built by hand (not through parse): expand must not trust them.
    huge = Node("many", Program(image="python", path="python"), [], {}, [Device("stdout")], count=10**9)
    with pytest.raises(JobError) as e:
        job.expand([huge], never_listed, max_nodes=64)
    assert e.value.status == 413
    assert "zerovm_maxnodes" in e.value.reason


def test_fixed_instances_leave_less_room_for_a_wildcard():
    nodes = job.parse(json.dumps([
        node(name="fixed", count=60),
        node(name="wild", devices=[{"name": "stdin", "path": "swift://AUTH_test/d/*"}]),
    ]).encode(), SYS)
    with pytest.raises(JobError) as e:
        job.expand(nodes, lambda p: [f"o{i}" for i in range(5)], max_nodes=64)
    assert e.value.status == 413
    # four fit: 60 + 4 = 64
    stages = job.expand(nodes, lambda p: [f"o{i}" for i in range(4)], max_nodes=64)
    assert sum(len(s) for s in stages) == 64


def test_a_lister_returning_millions_stops_at_the_limit():
    def endless(path):
        i = 0
        while True:
            yield f"part-{i}"
            i += 1
    nodes = job.parse(json.dumps([node(devices=[{"name": "stdin", "path": "swift://AUTH_test/d/part-*"}])]).encode(),
                      SYS)
    with pytest.raises(JobError) as e:
        job.expand(nodes, endless, max_nodes=64)
    assert e.value.status == 413


# --------------------------------------------------------------- wildcards
BACKTRACKS = "*a" * 12 + "*c"          # with ".*" between the a's: ~1000^12 ways to fail
LONG = "a" * 1000 + "b"


def test_the_backtracking_pattern_is_refused_at_once():
    assert job.glob_match(BACKTRACKS, LONG) is None
    assert SwiftPath("A", "c", BACKTRACKS).match(LONG) is None


def test_a_backtracking_pattern_in_a_job_skips_the_listed_name():
    nodes = job.parse(json.dumps([node(devices=[
        {"name": "stdin", "path": "swift://AUTH_test/long/" + BACKTRACKS}])]).encode(), SYS)
    with pytest.raises(JobError) as e:
        job.expand(nodes, lambda p: [LONG, LONG + "x"])
    assert e.value.status == 404


def test_many_stars_over_a_long_name_that_matches():
    name = "a" * 1000 + "c"
    matched = job.glob_match(BACKTRACKS, name)
    assert matched is not None and len(matched) == 13
    assert matched[:12] == [""] * 12          # leftmost: each * takes as little as it can
    assert matched[12] == "a" * 988
    pattern_filled = "".join(m + piece for m, piece in zip([""] + matched, BACKTRACKS.split("*")))
    assert pattern_filled == name


def test_more_than_sixteen_stars_is_400():
    path = "swift://AUTH_test/d/" + "*x" * 17
    reason = refused([node(devices=[{"name": "stdin", "path": path}])])
    assert "17 wildcards" in reason and "16" in reason


def test_object_names_longer_than_swift_allows_are_400():
    # 513 two-byte characters: 1026 bytes, though only 513 characters
    reason = refused([node(devices=[{"name": "stdin", "path": "swift://AUTH_test/d/" + "é" * 513}])])
    assert "1026 bytes" in reason and "1024" in reason
    assert "container name" in refused([node(devices=[
        {"name": "stdin", "path": "swift://AUTH_test/" + "c" * 257 + "/o"}])])


def test_a_filled_output_name_longer_than_swift_allows_is_400():
    nodes = job.parse(json.dumps([node(devices=[
        {"name": "stdin", "path": "swift://AUTH_test/d/*"},
        {"name": "stdout", "path": "swift://AUTH_test/o/" + "y" * 100 + "*"}])]).encode(), SYS)
    with pytest.raises(JobError) as e:
        job.expand(nodes, lambda p: ["x" * 1000])
    assert e.value.status == 400
    assert "1024" in e.value.reason


def test_names_the_lister_returns_that_do_not_match_are_skipped_not_a_500():
    nodes = job.parse(json.dumps([node(devices=[
        {"name": "stdin", "path": "swift://AUTH_test/d/part-*.txt"},
        {"name": "stdout", "path": "swift://AUTH_test/o/count-*.txt"}])]).encode(), SYS)
    (stage,) = job.expand(nodes, lambda p: ["other", "part-1.txt", 7, None, "part-2.txtx", "part-\ud800.txt",
                                            "part-" + "x" * 1020 + ".txt", "part-2.txt"])
    assert [str(i.devices[1].path) for i in stage] == [
        "swift://AUTH_test/o/count-1.txt", "swift://AUTH_test/o/count-2.txt"]


# ---------------------------------------------------------- JSON structure
def test_nesting_ten_thousand_deep_is_400_with_the_limit():
    assert refused(b"[" * 10000 + b"]" * 10000) == "job description is nested deeper than 32 levels"
    assert "nested deeper" in refused(b'{"a":' * 10000 + b"1" + b"}" * 10000)
    assert "nested deeper" in refused(b"[" * 10000)          # unclosed too


def test_brackets_inside_strings_do_not_count_as_nesting():
    args = "[" * 1000 + '\\"{' * 100
    (n,) = job.parse(json.dumps([node(exec={"path": WC, "args": [args]})]).encode(), SYS)
    assert n.args == [args]


def test_nesting_depth_scan():
    assert job.nesting_depth('[[{"a": "[[[["}]]') == 3
    assert job.nesting_depth('["\\"[[[", []]') == 2
    assert job.nesting_depth('"unterminated [[[[') == 0
    assert job.nesting_depth('"\\"' * 5000) == 0
    assert job.nesting_depth("]]]]") == 0


def test_json_that_python_cannot_hold_is_400():
    assert "too many digits" in refused(b'[{"name": "n", "count": ' + b"9" * 5000 + b"}]")
    assert "Unicode" in refused(b'[{"name": "n", "exec": {"path": "swift://a/c/\\ud800"}}]')


@pytest.mark.parametrize("raw,reason", [
    (node(exec={"path": WC, "args": ["x"] * 257}), "257 arguments, more than 256"),
    (node(exec={"path": WC, "args": "x " * 257}), "257 arguments, more than 256"),
    (node(exec={"path": WC, "args": "x" * 5000}), "5000 characters, more than 4096"),
    (node(exec={"path": WC, "env": {f"V{i}": "" for i in range(129)}}), "129 variables, more than 128"),
    (node(devices=[{"name": "stdout"}] * 9), "9 devices, more than the 8"),   # seven, and python
    (node(devices=[{"name": "stdout"}] * 2), "declared twice"),
    (node(connect=["m", "m"]), "more than once"),
    (node(connect=[f"m{i}" for i in range(65)]), "65 entries, more than zerovm_maxnodes (64)"),
    (node(devices=[{"name": ["stdout"]}]), "unknown device"),
    (node(devices=[{"name": {"a": 1}}]), "unknown device"),
    (node(devices=[{"name": "stdout", "content_type": "text/plain" + "x" * 300}]), "at most 256"),
    (node(devices=[{"name": "stdout", "content_type": "text/plain\x00"}]), "one-line"),
    (node(devices=[{"name": "stdin", "path": "swift://AUTH_test/d/o\nbj"}]), "control character"),
    (node(name="n\n"), "name must be"),
    (node(exec={"path": WC, "env": {"A\n": "1"}}), "identifier"),
    (node(exec={"path": "file://" + "x" * 60000 + ":p"}), "unknown system image"),
])
def test_oversized_or_malformed_nodes_are_400(raw, reason):
    assert reason in refused([raw])


def test_long_reasons_are_cut():
    assert len(refused([node(exec={"path": "swift://" + "x" * 60000})])) < 400


def test_a_chain_of_a_thousand_connected_nodes_needs_no_recursion():
    count = job.MAX_NODES
    raw = [node(name=f"n{i}", connect=[f"n{i + 1}"] if i + 1 < count else []) for i in range(count)]
    nodes = job.parse(json.dumps(raw).encode(), SYS, max_nodes=count)
    stages = job.expand(nodes, never_listed, max_nodes=count)
    assert len(stages) == count
    assert stages[-1][0].sources == [f"n{count - 2}"]


def test_a_cycle_is_named_without_recursion():
    raw = [node(name="a", connect=["b"]), node(name="b", connect=["c"]), node(name="c", connect=["a"]),
           node(name="d")]
    reason = refused(raw)
    assert "cycle" in reason and "a, b, c" in reason and "d" not in reason.split(":")[-1]


# ------------------------------------------------------------------ budget
def test_budget_refuses_the_piece_that_goes_over_and_names_the_option():
    b = Budget(10, "outputs of this job exceed zerovm_maxjoboutput (10 bytes)")
    b.take(6)
    with pytest.raises(JobError) as e:
        b.take(5)
    assert e.value.status == 413 and "zerovm_maxjoboutput (10 bytes)" in e.value.reason
    assert b.used == 6 and b.remaining == 4
    b.give_back(6)
    assert b.used == 0


def test_collect_counts_pieces_and_gives_back_what_it_drops():
    b = Budget(100, "over")
    assert job.collect([b"ab", b"cd"], 10, b) == b"abcd"
    assert b.used == 4
    assert job.collect([b"x" * 6, b"y" * 6], 10, b) is None      # over its own limit
    assert b.used == 4
    with pytest.raises(JobError):
        job.collect([b"z" * 90, b"z" * 90], 1000, b)              # over the job's budget
    assert b.used == 4

    def broken():
        yield b"12345"
        raise OSError("connection reset")
    with pytest.raises(OSError):
        job.collect(broken(), 1000, b)
    assert b.used == 4


def test_collect_stops_reading_once_over():
    read = []

    def chunks():
        for i in range(1000):
            read.append(i)
            yield b"x" * 100
    assert job.collect(chunks(), 250) is None
    assert len(read) == 3


# ----------------------------------------------------------------- listing
@pytest.mark.parametrize("body,names", [
    (b'[{"name": "a"}, {"name": "b", "bytes": 1}]', ["a", "b"]),
    (b"", []),
    (b'[{"subdir": "x/"}, {"name": 7}, 3, {"name": "c"}, {"name": "\\ud800"}, {"name": ""}]', ["c"]),
    (b"<html>proxy error</html>", None),
    (b'{"name": "a"}', None),
    (b"[" * 100000, None),
    (b"\xff\xfe", None),
])
def test_listing_pages_that_are_not_listings_are_none(body, names):
    assert job.listing_names(body) == names
