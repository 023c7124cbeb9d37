"""connect, streamed (connect_streams.py): the same jobs run with
zerovm_connect = streamed and = staged against the fake object servers of
test_proxy_filter.py, whose streamed runs take their stream inputs' frames
as payloads (and fail when a stream did not end), so that one fake guest
answers both ways.  The lab's swift tests run the real thing."""

import collections
import json

import pytest

from zerolab.zerocloud import protocol

from .test_proxy_filter import OK_REPORT, make_cluster, one_line_reason, post, ran, timed_out

TEXTS = {"/v1/a/texts/one.txt": b"apple pear apple\n", "/v1/a/texts/two.txt": b"pear fig\nkiwi apple\n",
         "/v1/a/texts/three.txt": b"fig fig plum\n"}


def mapreduce(reducers=2, **extra):
    return [{"name": "map", "exec": {"path": "file://python:python", "args": "map"},
             "devices": [{"name": "stdin", "path": "swift://a/texts/*.txt"}], "connect": ["red"], **extra},
            {"name": "red", "exec": {"path": "file://python:python", "args": "reduce"}, "count": reducers,
             "devices": [{"name": "stdout"}]}]


def wordcount(servers):
    """A fake guest of either kind: a mapper splits its object's words over
    its /dev/out/<reducer> by their length; a reducer counts what its
    /dev/in/<mapper> (and /dev/in-<mapper>) bring."""
    return lambda ip, request, payloads: count_words(request, payloads, TEXTS.get("/v1" + servers.current["path"]))


def count_words(request, payloads, text):
    outputs = [o.alias for o in request.outputs]
    inputs = {i.alias: payloads[i.payload] for i in request.inputs if i.payload is not None}
    if request.args[1] == "map":
        targets = sorted(a for a in outputs if a.startswith("/dev/out/"))
        words = text.split()
        data = {t: b" ".join(w for w in words if len(w) % len(targets) == n) for n, t in enumerate(targets)}
        data["/dev/stdout"] = b"%d words\n" % len(words)
    else:
        counts = collections.Counter(w.decode() for alias, text in inputs.items()
                                     if alias.startswith("/dev/in/") for w in text.split())
        stdouts = [text.decode() for alias, text in sorted(inputs.items()) if alias.startswith("/dev/in-")]
        data = {"/dev/stdout": json.dumps({"counts": dict(sorted(counts.items())), "stdouts": stdouts}).encode()
                + b"\n"}
    return 200, protocol.pack(protocol.RunReply(OK_REPORT, tuple(outputs)).to_wire(),
                              [data.get(a, b"") for a in outputs]), {"X-Nexe-Colocated": "c0c0"}


def run(zc, monkeypatch, job, answer=None, headers=None, **conf):
    cluster = make_cluster(zc, monkeypatch)
    cluster.swift.objects.update(TEXTS)
    cluster.servers.answer = answer(cluster.servers) if answer is not None else wordcount(cluster.servers)
    status, got, data = post(cluster.filter(**dict({"zerovm_connect": "streamed"}, **conf)), job, headers=headers)
    return cluster, status, got, data


COMPARED = ("X-Nexe-System", "X-Nexe-Status", "X-Nexe-Retcode", "X-Nexe-Validation", "X-Nexe-Etag", "X-Nexe-Error",
            "Etag")


@pytest.mark.parametrize("reducers", [1, 2, 3])
def test_a_streamed_mapreduce_answers_what_the_staged_one_does(zc, monkeypatch, reducers):
    _, status, staged, body = run(zc, monkeypatch, mapreduce(reducers), zerovm_connect="staged")
    cluster, got, streamed, data = run(zc, monkeypatch, mapreduce(reducers))
    assert (status, got) == (200, 200), data
    assert data == body
    counts: collections.Counter[str] = collections.Counter()
    for line in data.splitlines():
        counts.update(json.loads(line)["counts"])
    if reducers == 1:   # and each mapper's whole stdout
        assert json.loads(data)["stdouts"] == ["3 words\n", "3 words\n", "4 words\n"]
    assert counts == collections.Counter(b" ".join(TEXTS.values()).decode().split())   # nothing lost
    assert {h: streamed.get(h) for h in COMPARED} == {h: staged.get(h) for h in COMPARED}
    assert staged["X-Zerolab-Connect"] == "staged: zerovm_connect = staged"
    assert streamed["X-Zerolab-Connect"] == "streamed"
    for execute in cluster.servers.executes:
        sent = execute["streamed"]
        assert all(o.stream for o in sent.outputs if o.alias.startswith("/dev/out/"))
        if sent.args[1] == "reduce":
            assert execute["headers"]["Transfer-Encoding"] == "chunked"
            maps = [f"map-{n}" for n in (1, 2, 3)]
            # One reducer takes each mapper's whole stdout too, as staged.
            wanted = [f"/dev/in/{m}" for m in maps] + ([f"/dev/in-{m}" for m in maps] if reducers == 1 else [])
            assert sorted(sent.stream_inputs) == sorted(wanted)
        else:
            assert "Transfer-Encoding" not in execute["headers"] and not sent.stream_inputs
            assert (("/dev/stdout" in sent.stream_outputs) == (reducers == 1))


def test_the_streamed_run_starts_every_instance_before_any_reply_is_read(zc, monkeypatch):
    cluster, status, headers, data = run(zc, monkeypatch, mapreduce(2))
    assert status == 200, data
    # Targets first, so they take their requests before their sources' first frames.
    assert [e["streamed"].args[0] for e in cluster.servers.executes] == ["red-2", "red-1", "map-3", "map-2", "map-1"]


def test_a_stopped_mapper_drops_what_its_reducers_returned(zc, monkeypatch):
    def second_times_out(servers):
        return lambda ip, request, payloads: (timed_out if request.args[0] == "map-2" else wordcount(servers))(
            ip, request, payloads)
    _, status, staged, body = run(zc, monkeypatch, mapreduce(2), second_times_out, zerovm_connect="staged")
    _, got, streamed, data = run(zc, monkeypatch, mapreduce(2), second_times_out)
    assert (status, got) == (200, 200)
    assert data == body == b""   # the reducers' outputs read a stopped mapper's partial one
    assert streamed["X-Nexe-Status"] == ("ok,timeout: ran longer than 10 s,ok,"
                                         "dropped: node 'map-2' was stopped,dropped: node 'map-2' was stopped")
    assert staged["X-Nexe-Status"] == ("ok,timeout: ran longer than 10 s,ok,"
                                       "not run: node 'map-2' was stopped,not run: node 'map-2' was stopped")
    assert streamed["X-Nexe-Error"] == staged["X-Nexe-Error"] == "node 'map-2': timeout: ran longer than 10 s"


def streamed_runs_refused(zc, monkeypatch, refusal, who="map-1"):
    """The MapReduce, where every server refuses ``who``'s streamed run with ``refusal``."""
    cluster = make_cluster(zc, monkeypatch)
    cluster.swift.objects.update(TEXTS)
    cluster.servers.answer = wordcount(cluster.servers)
    cluster.servers.refuse = lambda ip, request: refusal if request.args[0] == who else None
    return (cluster, *post(cluster.filter(zerovm_connect="streamed"), mapreduce(2)))


def test_a_node_no_executor_starts_at_once_sends_the_job_staged(zc, monkeypatch):
    cluster, status, headers, data = streamed_runs_refused(
        zc, monkeypatch, (429, b"too many jobs: 4 jobs running on this node; a job with streams waits 0.25 s at most\n", {}))
    assert status == 200, data
    assert headers["X-Zerolab-Connect"] == ("staged: not every node could start at once (node 'map-1': too many "
                                            "jobs: 4 jobs running on this node; a job with streams waits 0.25 s at most)")
    _, _, staged, body = run(zc, monkeypatch, mapreduce(2), zerovm_connect="staged")
    assert data == body
    tried, staged_run = cluster.servers.executes[:6], cluster.servers.executes[6:]
    # Four started and map-1 refused by both replicas: each hung up on, none read on.
    assert sorted(e["request"].args[0] for e in tried) == ["map-1", "map-1", "map-2", "map-3", "red-1", "red-2"]
    assert all(e["request"].streaming and "streamed" not in e and e["conn"].closed for e in tried)
    assert [e["request"].args[0] for e in staged_run] == ["map-1", "map-2", "map-3", "red-1", "red-2"]
    assert not any(e["request"].streaming for e in staged_run)


def test_a_node_whose_object_is_missing_is_the_jobs_answer_streamed_or_not(zc, monkeypatch):
    cluster, status, headers, data = streamed_runs_refused(zc, monkeypatch, (404, b"not found\n", {}))
    assert status == 404
    assert one_line_reason(data) == "node 'map-1': swift://a/texts/one.txt not found on any replica"
    assert headers["X-Zerolab-Connect"] == "streamed"
    # Both replicas asked for map-1; each reducer ran to its end on what the others sent.
    assert [e["request"].args[0] for e in cluster.servers.executes].count("map-1") == 2
    reducers = [e for e in cluster.servers.executes if e["request"].args[1] == "reduce"]
    assert [sorted(i.alias for i in e["request"].inputs if i.payload is not None) for e in reducers] == \
        [["/dev/in/map-1", "/dev/in/map-2", "/dev/in/map-3"]] * 2
    assert all(e["payloads"][0] == b"" for e in reducers)   # map-1's, ended without a frame


@pytest.mark.parametrize("job, conf, headers, reason", [
    (mapreduce(2), {"zerovm_concurrency": 4}, None, "its 5 instances are more than zerovm_concurrency (4)"),
    (mapreduce(2, replicate=2), {}, None, "node 'map' is replicated"),
    ([dict(mapreduce(2)[0], devices=[{"name": "stdin", "path": "swift://a/texts/*.txt"}, {"name": "stdout"}]),
      mapreduce(2)[1]], {}, None, "node 'map' keeps the stdout it connects"),
    (mapreduce(2), {}, {"X-Zerolab-Connect": "staged"}, "asked for"),
    (mapreduce(2), {"zerovm_connect": "staged"}, None, "zerovm_connect = staged"),
])
def test_a_job_that_cannot_stream_runs_staged_and_says_why(zc, monkeypatch, job, conf, headers, reason):
    cluster, status, got, data = run(zc, monkeypatch, job, lambda servers: ran(), headers=headers, **conf)
    assert status == 200, data
    assert got["X-Zerolab-Connect"] == f"staged: {reason}"
    assert not any(e["request"].streaming for e in cluster.servers.executes)


def test_a_job_without_connect_says_nothing_of_it(zc, monkeypatch):
    _, status, got, data = run(zc, monkeypatch, [mapreduce(1)[1]], lambda servers: ran())
    assert status == 200 and "X-Zerolab-Connect" not in got


def test_a_job_cannot_ask_for_streamed_where_the_operator_stages(zc, monkeypatch):
    # Each streamed job holds an executor slot per node for its whole length.
    cluster, status, got, data = run(zc, monkeypatch, mapreduce(2), headers={"X-Zerolab-Connect": "streamed"},
                                     zerovm_connect="staged")
    assert (status, got["X-Zerolab-Connect"]) == (200, "staged: zerovm_connect = staged"), data
    assert not any(e["request"].streaming for e in cluster.servers.executes)


def test_a_feed_cut_in_the_middle_of_a_chunk_sends_nothing_more(zc):
    class Cut(Exception):
        pass

    sent = []

    class Sock:
        def sendall(self, data):
            if not sent:
                sent.append(data[:3])
                raise Cut()   # as a deadline would, mid-write
            sent.append(data)
    feed = zc.connect_streams.TargetFeed(["/dev/in/map-1", "/dev/in/map-2"])
    feed.sock = Sock()
    with pytest.raises(Cut):
        feed.send("/dev/in/map-1", b"words")
    feed.send("/dev/in/map-2", b"more")
    feed.end(["/dev/in/map-1", "/dev/in/map-2"])
    assert len(sent) == 1   # the target reads a body cut short: its streams fail, not garble


@pytest.mark.parametrize("value", ["", "Streamed", "stream", "staged; x", "a" * 300])
def test_an_unknown_connect_mode_is_400(zc, monkeypatch, value):
    cluster, status, got, data = run(zc, monkeypatch, mapreduce(2), headers={"X-Zerolab-Connect": value})
    assert status == 400
    assert one_line_reason(data).startswith("X-Zerolab-Connect must be streamed or staged")
    assert cluster.servers.executes == []


def test_an_unknown_zerovm_connect_stops_the_filter(zc, monkeypatch):
    with pytest.raises(ValueError, match="zerovm_connect must be streamed or staged"):
        make_cluster(zc, monkeypatch).filter(zerovm_connect="fast")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "86401", "soon"])
def test_a_template_cache_out_of_range_stops_the_filter(zc, monkeypatch, value):
    with pytest.raises(ValueError, match="zerovm_template_cache"):
        make_cluster(zc, monkeypatch).filter(zerovm_template_cache=value)


def test_a_targets_body_ends_with_its_last_stream_not_with_its_sources_replies(zc):
    # Its object server waits for the body's end before its answer ends; the
    # sources' replies may come long after their streams ended.
    sent = []
    feed = zc.connect_streams.TargetFeed(["/dev/in/map-1", "/dev/in/map-2"])
    feed.sock = type("Sock", (), {"sendall": lambda self, data: sent.append(data)})()
    feed.send("/dev/in/map-2", b"x")
    feed.send("/dev/in/map-2", b"")
    assert not any(piece.endswith(b"0\r\n\r\n") for piece in sent)
    feed.send("/dev/in/map-1", b"")
    assert sent[-1] == zc.routing.chunk(protocol.frame(0)) + b"0\r\n\r\n"
    feed.end(["/dev/in/map-1", "/dev/in/map-2"])   # the sources' replies: nothing more to send
    feed.send("/dev/in/map-1", b"late")
    assert len(sent) == 3


def test_a_node_that_connects_nowhere_runs_once_beside_a_streamed_job(zc, monkeypatch):
    job = [*mapreduce(2), {"name": "solo", "exec": {"path": "file://python:python", "args": "solo"},
                           "devices": [{"name": "stdout"}]}]

    def answer(servers):
        count = wordcount(servers)
        return lambda ip, request, payloads: (ran(b"alone\n")(ip, request, payloads) if request.args[1] == "solo"
                                              else count(ip, request, payloads))
    _, status, staged, body = run(zc, monkeypatch, job, answer, zerovm_connect="staged")
    cluster, got, streamed, data = run(zc, monkeypatch, job, answer)
    assert (status, got) == (200, 200), data
    assert streamed["X-Zerolab-Connect"] == "streamed"
    assert data == body and data.startswith(b"alone\n")   # in its stage, the first
    solo = [e for e in cluster.servers.executes if e["request"].args[1] == "solo"]
    assert len(solo) == 1 and not solo[0]["request"].streaming


def padded(servers):
    """wordcount, each mapper's partitions padded with 5000 spaces (the same words)."""
    count = wordcount(servers)

    def answer(ip, request, payloads):
        status, body, headers = count(ip, request, payloads)
        header, data = protocol.decode(body)
        if request.args[1] == "map":
            aliases = header["outputs"]
            data = [d + b" " * 5000 if a.startswith("/dev/out/") else d for a, d in zip(aliases, data)]
        return status, protocol.pack({k: v for k, v in header.items() if k != "payloads"}, data), headers
    return answer


@pytest.mark.parametrize("most, status", [(10_000, 413), (100_000, 200)])
def test_streamed_data_counts_against_the_jobs_outputs_as_staged_outputs_do(zc, monkeypatch, most, status):
    # 30000 bytes go from the mappers to the reducers, whichever way.
    _, staged, _, body = run(zc, monkeypatch, mapreduce(2), padded, zerovm_connect="staged", zerovm_maxjoboutput=most)
    _, streamed, _, data = run(zc, monkeypatch, mapreduce(2), padded, zerovm_maxjoboutput=most)
    assert streamed == staged == status, (data, body)
    assert data == body
