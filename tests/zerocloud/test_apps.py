"""Apps (a tar with boot/system.map) and open/1.0 GET templates: apps.py,
and what job.py makes of them.  Pure Python: no Swift, no executor."""

import gzip
import io
import json
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerolab.zerocloud import apps, job
from zerolab.zerocloud.job import JobError

SYSTEM_MAP = [{"name": "hello", "exec": {"path": "file://image:bin/hello.wasm"},
               "devices": [{"name": "stdout"}]}]


def tar_of(files, prefix=""):
    """A tar of {name: bytes} (a None value: a directory)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def app_of(system_map=SYSTEM_MAP, **files):
    return tar_of({"bin/hello.wasm": b"\0asm\1\0\0\0", "boot/system.map": json.dumps(system_map).encode(),
                   **files})


# ------------------------------------------------------------------ read_app
@pytest.mark.parametrize("pack", [lambda t: t, gzip.compress], ids=["tar", "tar.gz"])
def test_an_app_gives_its_system_map_and_the_tar_its_nodes_mount(pack):
    tar = app_of()
    got = apps.read_app(pack(tar), 1 << 20, 65536)
    assert json.loads(got.system_map) == SYSTEM_MAP
    assert got.image == tar   # uncompressed: the executor reads tars


def test_a_map_under_dot_slash_is_found_as_tar_c_dot_writes_it():
    tar = tar_of({"boot/system.map": b"[]"}, prefix="./")
    assert apps.read_app(tar, 1 << 20, 65536).system_map == b"[]"


@pytest.mark.parametrize("tar, status, reason", [
    (tar_of({"bin/x": b"1"}), 400, "the app has no boot/system.map: put its JSON job description there"),
    (tar_of({"boot/system.map": None}), 400, "the app's boot/system.map is not a regular file"),
    (tar_of({"boot/system.map": b"x" * 100}), 413, "the app's boot/system.map is 100 bytes, more than "
                                                   "zerovm_maxconfig (64)"),
    (b"not a tar at all" * 64, 400, "the app is not a readable tar (ReadError)"),
    (gzip.compress(b"x" * 20000), 413, "the app unpacks to more than zerovm_maxnexe (16384 bytes)"),
    (gzip.compress(app_of())[:-20], 400, "the app's gzip stream is cut short"),
    (b"\x1f\x8b" + b"\0" * 30, 400, None),
])
def test_a_broken_app_is_a_4xx_with_one_line(tar, status, reason):
    with pytest.raises(JobError) as e:
        apps.read_app(tar, 16384, 64)
    assert e.value.status == status and "\n" not in e.value.reason
    assert reason is None or e.value.reason == reason


def test_a_gzip_bomb_stops_at_the_limit_without_unpacking_the_rest():
    bomb = gzip.compress(b"\0" * (64 << 20))   # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 1 << 17
    with pytest.raises(JobError) as e:
        apps.read_app(bomb, 1 << 20, 65536)
    assert e.value.status == 413


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_any_bytes_are_an_app_or_a_4xx(data):
    try:
        apps.read_app(data, 1 << 20, 65536)
    except JobError as e:
        assert e.status in (400, 413) and "\n" not in e.reason


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=3071), st.integers(min_value=0, max_value=255),
       st.booleans())
def test_a_damaged_app_is_an_app_or_a_4xx(where, byte, zipped):
    # A real app with one byte changed: tarfile's header parsing, checksums
    # and pax records meet data they did not write.
    data = bytearray(gzip.compress(app_of()) if zipped else app_of())
    data[where % len(data)] = byte
    try:
        apps.read_app(bytes(data), 1 << 20, 65536)
    except JobError as e:
        assert e.status in (400, 413) and "\n" not in e.reason


# ---------------------------------------------------------------- kind_of
@pytest.mark.parametrize("data, ctype, kind", [
    (b"[]", "application/json; charset=utf-8", "job"),
    (app_of(), "application/octet-stream", "app"),
    (gzip.compress(app_of()), "", "app"),
    (b"\0" * 10, "application/x-tar", "app"),
    (b"#!file://python:python\n", "text/x-python", "script"),
])
def test_what_a_source_is_comes_from_its_type_else_its_bytes(data, ctype, kind):
    assert apps.kind_of(data, ctype) == kind


# ------------------------------------------------------- job.parse with an app
def test_every_node_of_an_app_mounts_it_unless_it_has_an_image_of_its_own():
    tar = app_of()
    own = {"name": "own", "exec": {"path": "file://image:bin/x"},
           "devices": [{"name": "image", "path": "swift://a/c/other.tar"}]}
    nodes = job.parse(json.dumps([SYSTEM_MAP[0], own]).encode(), frozenset({"python"}), app=tar)
    assert nodes[0].device("image").data == tar and nodes[0].program.in_user_image
    assert nodes[1].device("image").data is None and str(nodes[1].device("image").path) == "swift://a/c/other.tar"


@pytest.mark.parametrize("path, image, member", [
    ("file://image:bin/hello.wasm", "image", "bin/hello.wasm"),
    ("file://bin/hello.wasm", "image", "bin/hello.wasm"),        # ZeroCloud's file://PATH
    ("file:///hello.wasm", "image", "hello.wasm"),
    ("file://python:python", "python", "python"),
])
def test_file_urls_name_a_system_image_or_the_nodes_own(path, image, member):
    program = job.parse_program(path, frozenset({"python"}), "node")
    assert (program.image, program.path) == (image, member)


def test_a_program_in_the_nodes_image_needs_an_image():
    with pytest.raises(JobError) as e:
        job.parse(json.dumps(SYSTEM_MAP).encode(), frozenset({"python"}))
    assert e.value.status == 400 and "give the node an image device" in e.value.reason


@pytest.mark.parametrize("path", ["file://image:", "file://", "file://image:/", "file://nope:x"])
def test_a_file_url_without_a_file_or_with_an_unknown_image_is_400(path):
    with pytest.raises(JobError) as e:
        job.parse_program(path, frozenset({"python"}), "node")
    assert e.value.status == 400


def test_a_pathless_stdin_reads_the_posted_body_only_when_there_is_one():
    body = json.dumps([{"name": "cat", "exec": {"path": "file://python:python"},
                        "devices": [{"name": "stdin"}, {"name": "stdout"}]}]).encode()
    nodes = job.parse(body, frozenset({"python"}), posted=b"data")
    assert nodes[0].device("stdin").data == b"data"
    with pytest.raises(JobError) as e:
        job.parse(body, frozenset({"python"}))
    assert "needs a swift:// path (or, with X-Zerovm-Source, none" in e.value.reason


def test_a_script_from_a_source_reads_the_posted_body_as_stdin():
    nodes = job.parse_script(b"#!file://python:python\nprint(1)\n", frozenset({"python"}), posted=b"in")
    assert nodes[0].device("stdin").data == b"in"


# ------------------------------------------------------------ GET templates
TEMPLATE = (b'[{"name": "show", "exec": {"path": "file://python:python", "args": "show.py {.format=xml}"},'
            b' "devices": [{"name": "stdin", "path": "{.object_path}"}, {"name": "stdout"}]}]')


def test_a_template_is_filled_from_the_query_and_its_defaults():
    filled = json.loads(apps.fill_template(TEMPLATE, {"format": "pdf", "other": "x"}, "swift://a/c/doc.pdf", 65536))
    assert filled[0]["exec"]["args"] == "show.py pdf"
    assert filled[0]["devices"][0]["path"] == "swift://a/c/doc.pdf"
    default = json.loads(apps.fill_template(TEMPLATE, {}, "swift://a/c/d", 65536))
    assert default[0]["exec"]["args"] == "show.py xml"


def test_a_variable_without_default_or_value_is_empty():
    assert apps.fill_template(b'{"a": "{.missing}"}', {}, "u", 100) == b'{"a": ""}'


def test_a_query_value_cannot_leave_its_string():
    evil = '", "exec": {"path": "swift://victim/c/prog"}, "x": "'
    filled = json.loads(apps.fill_template(TEMPLATE, {"format": evil}, "swift://a/c/d", 65536))
    assert filled[0]["exec"]["path"] == "file://python:python"
    assert filled[0]["exec"]["args"] == "show.py " + evil


def test_a_filled_template_is_bounded():
    template = b'["' + b"{.x}" * 1000 + b'"]'
    with pytest.raises(JobError) as e:
        apps.fill_template(template, {"x": "y" * 8000}, "u", 65536)
    assert e.value.status == 413 and "shorten the query string" in e.value.reason


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefgh_-", min_size=1, max_size=8), st.text(max_size=200), max_size=8),
       st.text(max_size=100))
def test_any_query_keeps_the_templates_shape(params, url):
    filled = json.loads(apps.fill_template(TEMPLATE, params, url, 1 << 20))
    assert [sorted(n) for n in filled] == [["devices", "exec", "name"]]
    assert filled[0]["devices"][0]["path"] == url
    assert filled[0]["exec"]["args"] == "show.py " + params.get("format", "xml")


@pytest.mark.parametrize("ctype, name", [
    ("application/pdf", "application/pdf/config"),
    ("Text/Plain; charset=utf-8", "text/plain/config"),
    ("text", None), ("../../x/y", None), ("a/b/c", None), ("", None),
])
def test_a_content_type_names_its_template_or_none(ctype, name):
    assert apps.template_path(ctype) == name


def test_a_template_that_is_not_utf8_is_400():
    with pytest.raises(JobError) as e:
        apps.fill_template(b"\xff", {}, "u", 100)
    assert e.value.status == 400


def test_a_default_stops_at_the_next_brace_of_either_kind():
    # "{.a={.b=x}" is an unclosed {.a= and a {.b=x}: the default never spans a brace.
    assert apps.fill_template(b'"{.a={.b=x}"', {}, "u", 100) == b'"{.a=x"'


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_kept_template_is_given_until_its_seconds_are_over():
    clock = Clock()
    cache = apps.TemplateCache(60, clock=clock)
    assert cache.get("/v1/a/.zvm/text/plain/config") is None
    cache.put("/v1/a/.zvm/text/plain/config", TEMPLATE)
    clock.now += 59.9
    assert cache.get("/v1/a/.zvm/text/plain/config") == TEMPLATE
    clock.now += 0.1
    assert cache.get("/v1/a/.zvm/text/plain/config") is None
    assert cache.kept == {}


def test_no_seconds_keeps_no_template():
    cache = apps.TemplateCache(0)
    cache.put("/v1/a/.zvm/text/plain/config", TEMPLATE)
    assert cache.get("/v1/a/.zvm/text/plain/config") is None and cache.kept == {}


def test_the_template_cache_drops_the_least_recently_used_first():
    cache = apps.TemplateCache(60, entries=2)
    cache.put("x", b"1")
    cache.put("y", b"2")
    assert cache.get("x") == b"1"   # y is now the least recently used
    cache.put("z", b"3")
    assert (cache.get("x"), cache.get("y"), cache.get("z")) == (b"1", None, b"3")
    assert len(cache.kept) == 2


def test_an_app_must_show_its_map_among_its_first_members():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for i in range(apps.MAX_MEMBERS + 1):
            archive.addfile(tarfile.TarInfo(f"f{i}"))
    with pytest.raises(JobError) as e:
        apps.read_app(out.getvalue(), 1 << 30, 65536)
    assert e.value.status == 400 and "first 4096 members" in e.value.reason
