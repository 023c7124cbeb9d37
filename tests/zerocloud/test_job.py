"""Job parsing and expansion (zerolab.zerocloud.job): pure, no Swift needed."""

import json

import pytest

from zerolab.zerocloud import job
from zerolab.zerocloud.job import JobError

SYS = {"python"}
WC = "swift://AUTH_test/bin/wordcount.wasm"


def parse(nodes):
    return job.parse(json.dumps(nodes).encode(), SYS)


def mapreduce():
    return [
        {"name": "map", "exec": {"path": WC},
         "devices": [{"name": "stdin", "path": "swift://AUTH_test/data/part-*.txt"},
                     {"name": "stdout", "path": "swift://AUTH_test/out/count-*.txt"}]},
    ]


def test_a_simple_node():
    (n,) = parse([{"name": "cat", "exec": {"path": WC, "args": "-r 'two words'", "env": {"LANG": "C"}},
                   "devices": [{"name": "stdin", "path": "swift://AUTH_test/c/o"}, {"name": "stdout"}]}])
    assert n.args == ["-r", "two words"]
    assert n.env == {"LANG": "C"}
    assert str(n.program) == WC
    (stage,) = job.expand([n], lambda p: [])
    assert stage[0].name == "cat"
    assert stage[0].colocate.alias == "/dev/stdin"


def test_wildcards_fan_out_and_fill_outputs():
    nodes = parse(mapreduce())
    (stage,) = job.expand(nodes, lambda p: ["part-a.txt", "part-b.txt"])
    assert [i.name for i in stage] == ["map-1", "map-2"]
    assert [str(i.devices[1].path) for i in stage] == [
        "swift://AUTH_test/out/count-a.txt", "swift://AUTH_test/out/count-b.txt"]


def test_wildcard_matching_nothing_is_404():
    with pytest.raises(JobError) as e:
        job.expand(parse(mapreduce()), lambda p: [])
    assert e.value.status == 404


def test_connect_makes_stages_and_feeds_sources():
    nodes = parse([
        {"name": "map", "exec": {"path": WC}, "connect": ["red"],
         "devices": [{"name": "stdin", "path": "swift://AUTH_test/data/*"}]},
        {"name": "red", "exec": {"path": WC, "args": "-r"}, "devices": [{"name": "stdout"}]},
    ])
    first, second = job.expand(nodes, lambda p: ["x", "y", "z"])
    assert [i.name for i in first] == ["map-1", "map-2", "map-3"]
    assert second[0].sources == ["map-1", "map-2", "map-3"]
    assert [i.targets for i in first] == [["red"]] * 3


def test_connect_to_several_instances_and_several_reducers_as_zerocloud_had_it():
    nodes = parse([
        {"name": "map", "exec": {"path": WC}, "count": 2, "connect": ["red", "log"]},
        {"name": "red", "exec": {"path": WC}, "count": 3},
        {"name": "log", "exec": {"path": WC}},
    ])
    first, second = job.expand(nodes, lambda p: [])
    assert [(i.name, i.targets) for i in first] == [("map-1", ["red-1", "red-2", "red-3", "log"]),
                                                   ("map-2", ["red-1", "red-2", "red-3", "log"])]
    assert [(i.name, i.sources) for i in second] == [(n, ["map-1", "map-2"]) for n in ("red-1", "red-2", "red-3",
                                                                                        "log")]


def test_script_post():
    (n,) = job.parse_script(b"#!file://python:python -u\nprint(1)\n", SYS, job.SwiftPath("a", "c", "o"))
    assert n.exec_name == "python"
    assert n.args == ["-u", "/script"]
    assert n.device("script").data.startswith(b"#!")
    assert str(n.device("stdin").path) == "swift://a/c/o"


@pytest.mark.parametrize("body,status,reason", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[]", 400, "non-empty"),
    (b"[1]", 400, "must be a JSON object"),
    (json.dumps([{"exec": {"path": WC}}]).encode(), 400, "name must be"),
    (json.dumps([{"name": "a"}]).encode(), 400, "exec must be"),
    (json.dumps([{"name": "a", "exec": {"path": "http://x/y"}}]).encode(), 400, "must be swift://"),
    (json.dumps([{"name": "a", "exec": {"path": "file://ruby:ruby"}}]).encode(), 400, "unknown system image"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "devices": [{"name": "floppy"}]}]).encode(),
     400, "unknown device 'floppy'"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "devices": [{"name": "stdin"}]}]).encode(),
     400, "needs a swift:// path"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "devices": [{"name": "debug", "path": "tcp://h:1"}]}]).encode(),
     400, "not supported"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "connect": ["a"]}]).encode(), 400, "itself"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "connect": ["b"]}]).encode(), 400, "unknown node"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "connect": ["b"]},
                 {"name": "b", "exec": {"path": WC}, "connect": ["a"]}]).encode(), 400, "cycle"),
    (json.dumps([{"name": "a", "exec": {"path": WC}}, {"name": "a", "exec": {"path": WC}}]).encode(),
     400, "more than once"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "replicate": 4}]).encode(), 400,
     "node 'a': replicate must be 0 or 1 (one copy), 2 or 3 (copies compared) (got 4)"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "location": "rack1"}]).encode(), 400, "location is not supported"),
    (json.dumps([{"name": "a b", "exec": {"path": WC}}]).encode(), 400, "without space"),
    (json.dumps([{"name": "a,b", "exec": {"path": WC}}]).encode(), 400, "without space, ','"),
    (json.dumps([{"name": "a", "exec": {"path": WC, "args": "x"}, "args": "y"}]).encode(), 400, "args is given twice"),
    (json.dumps([{"name": "a", "exec": {"path": WC}, "devices": [
        {"name": "stdout", "path": "swift://AUTH_test/o/*"}]}]).encode(), 400, "needs a wildcard input"),
])
def test_bad_jobs_name_what_is_wrong(body, status, reason):
    with pytest.raises(JobError) as e:
        job.parse(body, SYS)
    assert e.value.status == status
    assert reason in e.value.reason


def test_too_many_nodes_is_413():
    nodes = [{"name": f"n{i}", "exec": {"path": WC}} for i in range(5)]
    with pytest.raises(JobError) as e:
        job.parse(json.dumps(nodes).encode(), SYS, max_nodes=4)
    assert e.value.status == 413


def test_bad_scripts():
    for body, reason in [(b"print(1)\n", "must start with a #!"),
                         (b"#!/usr/bin/python\nprint(1)\n", "must be swift://"),
                         (b"#!\n", "names no interpreter")]:
        with pytest.raises(JobError) as e:
            job.parse_script(body, SYS)
        assert reason in e.value.reason
