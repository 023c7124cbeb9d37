"""Job descriptions as ZeroCloud's users wrote them (its Requests and Servlets
docs, zpm, its vagrant smoketest): accepted as ZeroCloud accepted them, and
every field zerolab cannot honour refused with a 400 that names it."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zerolab.zerocloud import job
from zerolab.zerocloud.job import JobError

SYS = {"python"}
WC = "swift://AUTH_test/bin/wordcount.wasm"


def parse(nodes, own_account="AUTH_test"):
    return job.parse(json.dumps(nodes).encode(), SYS, own_account=own_account)


def refused(nodes, own_account="AUTH_test"):
    with pytest.raises(JobError) as raised:
        parse(nodes, own_account)
    assert raised.value.status == 400
    assert "\n" not in raised.value.reason
    return raised.value.reason


def test_a_system_image_device_brings_the_image_in():
    # How every ZeroCloud and zpm example brings in Python.
    (n,) = parse([{"name": "hello", "exec": {"path": "file://python:python", "args": "-c 'print(1)'"},
                   "devices": [{"name": "python"}, {"name": "stdout"}]}])
    (image,) = [d for d in n.devices if d.sysimage]
    assert image.name == "python" and image.path is None
    assert image.alias == "/dev/python"
    assert n.device("stdout") is not None


def test_a_system_image_device_has_no_path_and_must_be_configured():
    assert "has no path" in refused([{"name": "a", "exec": {"path": WC},
                                      "devices": [{"name": "python", "path": "swift://a/c/o"}]}])
    reason = refused([{"name": "a", "exec": {"path": WC}, "devices": [{"name": "ruby"}]}])
    assert "unknown device 'ruby'" in reason and "python" in reason   # the known ones are listed


@pytest.mark.parametrize("name", ["my-job", "map.v2", "job_1", "A", "x" * 64, "sort~1", "a+b@c"])
def test_zerocloud_node_names(name):
    (n,) = parse([{"name": name, "exec": {"path": WC}}])
    assert n.name == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "a,b", "a/b", "tab\there", "new\nline", "ünï"])
def test_names_that_would_break_a_channel_path_or_a_header_are_refused(name):
    assert "1-64 printable ASCII characters" in refused([{"name": name, "exec": {"path": WC}}])


def test_a_node_named_like_another_nodes_instance_is_refused():
    # In ZeroCloud the second silently took the first's place.
    reason = refused([{"name": "sort", "exec": {"path": WC}, "count": 3},
                      {"name": "sort-2", "exec": {"path": WC}}])
    assert "'sort-2' is the name of an instance of node 'sort'" in reason
    # A single node may be called that: it has no numbered instances.
    assert [n.name for n in parse([{"name": "sort", "exec": {"path": WC}},
                                   {"name": "sort-2", "exec": {"path": WC}}])] == ["sort", "sort-2"]


def test_args_beside_exec_as_the_servlets_doc_shows_them():
    (n,) = parse([{"name": "a", "exec": {"path": WC}, "args": "-l 'two words'"}])
    assert n.args == ["-l", "two words"]


@pytest.mark.parametrize("replicate, copies", [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_replicate_0_and_1_mean_one_copy_2_and_3_that_many(replicate, copies):
    (n,) = parse([{"name": "a", "exec": {"path": WC}, "replicate": replicate}])
    assert (n.count, n.replicate) == (1, copies)


def test_replicated_copies_count_against_zerovm_maxnodes():
    with pytest.raises(JobError) as e:
        parse([{"name": "a", "exec": {"path": WC}, "count": 30, "replicate": 3}])
    assert e.value.status == 413 and "replicated copies included" in e.value.reason


@pytest.mark.parametrize("replicate", [4, -1, True, "1", None, 2.0])
def test_other_replicate_values_are_refused(replicate):
    assert "replicate" in refused([{"name": "a", "exec": {"path": WC}, "replicate": replicate}])


@pytest.mark.parametrize("own", [".", "~"])
def test_own_account_paths(own):
    (n,) = parse([{"name": "a", "exec": {"path": f"swift://{own}/bin/wc.wasm"},
                   "devices": [{"name": "stdin", "path": f"swift://{own}/data/in.txt"},
                               {"name": "output", "path": f"swift://{own}/out/result.txt"}]}],
                 own_account="AUTH_alice")
    assert str(n.program) == "swift://AUTH_alice/bin/wc.wasm"
    assert str(n.device("stdin").path) == "swift://AUTH_alice/data/in.txt"
    assert str(n.device("output").path) == "swift://AUTH_alice/out/result.txt"


def test_own_account_paths_need_an_account_to_stand_for():
    assert "name the account" in refused([{"name": "a", "exec": {"path": "swift://./bin/wc.wasm"}}],
                                         own_account=None)


def test_a_script_may_name_its_interpreter_in_its_own_account():
    (n,) = job.parse_script(b"#!swift://~/bin/interp.wasm\n", SYS, own_account="AUTH_bob")
    assert str(n.program) == "swift://AUTH_bob/bin/interp.wasm"


def test_unknown_keys_are_ignored_as_zerocloud_did_and_named():
    nodes = parse([{"name": "a", "exec": {"path": WC, "colour": "red"}, "priority": 5,
                    "devices": [{"name": "stdout", "path": "swift://AUTH_test/o/x", "acl": "r"}]}])
    assert nodes[0].ignored == ["a: priority", "a: exec.colour", "a: device stdout.acl"]
    assert job.ignored_keys(nodes) == "a: priority, a: exec.colour, a: device stdout.acl"


def test_the_ignored_keys_header_is_short_ascii_whatever_the_keys():
    nodes = parse([{"name": "a", "exec": {"path": WC}, **{f"k\u00e9\n{i}" + "x" * 200: 1 for i in range(50)}}])
    header = job.ignored_keys(nodes)
    assert header.isascii() and header.isprintable()
    assert header.endswith("and 40 more") and len(header) < 1000


def test_meta_and_min_size_of_an_output():
    (n,) = parse([{"name": "a", "exec": {"path": WC},
                   "devices": [{"name": "stdout", "path": "swift://AUTH_test/o/x",
                                "meta": {"Source": "zerolab", "run-id": "7"}, "min_size": 10}]}])
    out = n.device("stdout")
    assert out.meta == {"Source": "zerolab", "run-id": "7"} and out.min_size == 10


@pytest.mark.parametrize("device,reason", [
    ({"name": "stdout", "path": "swift://a/c/o", "meta": "x"}, "meta must be an object"),
    ({"name": "stdout", "path": "swift://a/c/o", "meta": {"a b": "x"}}, "meta name 'a b'"),
    ({"name": "stdout", "path": "swift://a/c/o", "meta": {"a": "x\ny"}}, "one-line string"),
    ({"name": "stdout", "path": "swift://a/c/o", "meta": {"a": "\u65e5"}}, "Latin-1"),
    ({"name": "stdout", "path": "swift://a/c/o", "meta": {f"k{i}": "v" for i in range(33)}}, "more than 32"),
    ({"name": "stdout", "meta": {"a": "b"}}, "stored at a swift:// path"),
    ({"name": "stdin", "path": "swift://a/c/o", "meta": {"a": "b"}}, "for output devices"),
    ({"name": "stdin", "path": "swift://a/c/o", "min_size": 1}, "min_size is for output devices"),
    ({"name": "stdout", "min_size": -1}, "whole number"),
    ({"name": "stdout", "min_size": 1.5}, "whole number"),
    ({"name": "stdout", "mode": "fifo"}, "mode 'fifo' is not a mode: use file, char or pipe"),
    ({"name": "image", "path": "swift://a/c/o.tar", "mode": "char"}, "it has no mode but file"),
])
def test_bad_device_fields_name_what_is_wrong(device, reason):
    assert reason in refused([{"name": "n", "exec": {"path": WC}, "devices": [device]}])


@pytest.mark.parametrize("mode, stream", [("file", False), ("char", True), ("pipe", True)])
def test_zerocloud_modes_say_whether_the_guest_sees_a_file_or_a_character_device(mode, stream):
    (n,) = parse([{"name": "a", "exec": {"path": WC}, "devices": [{"name": "stdout", "mode": mode}]}])
    assert n.device("stdout").stream is stream


def test_attach_chooses_the_object_a_node_runs_next_to():
    (n,) = parse([{"name": "a", "exec": {"path": WC}, "attach": "input",
                   "devices": [{"name": "stdin", "path": "swift://AUTH_test/c/small"},
                               {"name": "input", "path": "swift://AUTH_test/c/big"}]}])
    ((inst,),) = job.expand([n], lambda path: [])
    assert str(inst.colocate.path) == "swift://AUTH_test/c/big"
    # "default" is ZeroCloud's first readable device: stdin here.
    (n,) = parse([{"name": "a", "exec": {"path": WC}, "attach": "default",
                   "devices": [{"name": "stdin", "path": "swift://AUTH_test/c/small"},
                               {"name": "input", "path": "swift://AUTH_test/c/big"}]}])
    ((inst,),) = job.expand([n], lambda path: [])
    assert str(inst.colocate.path) == "swift://AUTH_test/c/small"


@pytest.mark.parametrize("attach,reason", [
    ("output", "not the name of one"),
    ("stdout", "reads no swift:// object"),
    (3, "attach must be"),
])
def test_attach_must_name_a_device_that_reads_an_object(attach, reason):
    devices = [{"name": "stdin", "path": "swift://AUTH_test/c/o"}, {"name": "stdout"}]
    got = refused([{"name": "a", "exec": {"path": WC}, "attach": attach, "devices": devices}])
    assert ("attach must be" in got) if reason == "not the name of one" else (reason in got)


@given(st.text(max_size=80))
def test_any_node_name_is_taken_or_refused_with_a_reason(name):
    try:
        (n,) = parse([{"name": name, "exec": {"path": WC}}])
    except JobError as e:
        assert e.status == 400 and "name must be" in e.reason
    else:
        assert n.name == name and job.NAME.fullmatch(name)
        assert name.isascii() and name.isprintable() and not {" ", ",", "/"} & set(name)


@given(st.dictionaries(st.text(max_size=20), st.integers() | st.text(max_size=5), max_size=8))
def test_any_extra_keys_are_ignored_and_said_in_ascii(extra):
    extra = {k: v for k, v in extra.items() if k not in job.NODE_KEYS}
    nodes = parse([{**extra, "name": "a", "exec": {"path": WC}}])
    assert len(nodes[0].ignored) == len(extra)
    header = job.ignored_keys(nodes)
    assert header.isascii() and header.isprintable()


def test_with_a_count_an_outputs_star_is_the_instance_number():
    nodes = parse([{"name": "gen", "exec": {"path": WC}, "count": 3,
                    "devices": [{"name": "stdout", "path": "swift://./out/part-*.txt", "meta": {"Kind": "gen"},
                                 "min_size": 1}]}])
    (stage,) = job.expand(nodes, lambda p: [])
    outs = [i.devices[0] for i in stage]
    assert [str(d.path) for d in outs] == [f"swift://AUTH_test/out/part-{n}.txt" for n in (1, 2, 3)]
    assert all(d.meta == {"Kind": "gen"} and d.min_size == 1 for d in outs)


@pytest.mark.parametrize("count, path", [(1, "swift://a/out/part-*.txt"), (3, "swift://a/out/*-*.txt")])
def test_an_output_star_without_an_input_star_needs_a_count_and_one_star(count, path):
    assert "wildcard in an output path" in refused([{"name": "gen", "exec": {"path": WC}, "count": count,
                                                     "devices": [{"name": "stdout", "path": path}]}])


def test_a_fanned_out_output_keeps_its_meta_and_min_size():
    nodes = parse([{"name": "map", "exec": {"path": WC},
                    "devices": [{"name": "stdin", "path": "swift://a/in/*.txt"},
                                {"name": "stdout", "path": "swift://a/out/*.count", "meta": {"From": "map"},
                                 "min_size": 2}]}])
    (stage,) = job.expand(nodes, lambda p: ["x.txt", "y.txt"])
    outs = [i.devices[1] for i in stage]
    assert [str(d.path) for d in outs] == ["swift://a/out/x.count", "swift://a/out/y.count"]
    assert all(d.meta == {"From": "map"} and d.min_size == 2 for d in outs)
