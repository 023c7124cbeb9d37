"""Stand-ins for the few names the zerocloud filters take from Swift and
eventlet, which are not installed where these tests run (the real pipeline is
exercised by the swift Molecule scenario).  The ``zc`` fixture imports the
filter modules against them, afresh for each test; sys.modules is restored
afterwards.  Every stand-in does what the filters rely on and nothing more."""

import importlib
import sys
import threading
import types
from urllib.parse import parse_qsl, unquote

import pytest

# The modules that import Swift or eventlet.
SWIFT_MODULES = ("proxy", "objectquery", "subrequests", "routing", "response", "connect_streams", "execution")


class FakeTimeout(Exception):
    def __init__(self, seconds=None, exception=None):
        super().__init__(seconds)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Headers(dict):
    """Case-insensitive lookups, as swob's HeaderKeyDict."""

    def __init__(self, items=()):
        super().__init__()
        for k, v in dict(items).items():
            self[k] = v

    def __setitem__(self, key, value):
        super().__setitem__(key.title(), str(value))

    def __getitem__(self, key):
        return super().__getitem__(key.title())

    def __contains__(self, key):
        return super().__contains__(key.title())

    def get(self, key, default=None):
        return super().get(key.title(), default)


# The statuses swob.Response takes as a number (Debian 12's Swift): any
# other needs its status line ("429 Too Many Requests"), or swob raises KeyError.
SWOB_REASONS = {100, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 400, 401, 402, 403, 404, 405, 406, 408,
                409, 410, 411, 412, 413, 414, 415, 416, 417, 422, 499, 500, 501, 502, 503, 504, 507}


class FakeResponse:
    def __init__(self, status=200, body=b"", content_type=None, app_iter=None, headers=None):
        if isinstance(status, int):
            if status not in SWOB_REASONS:
                raise KeyError(status)
            self.status_int, self.status = status, f"{status} Fake"
        else:
            self.status_int, self.status = int(status.split(" ", 1)[0]), status
        self.headers = Headers(headers or {})
        self.body = body
        self.app_iter = app_iter
        self.content_length = None if app_iter is not None else len(body)
        if content_type:
            self.headers["Content-Type"] = content_type

    def __call__(self, env, start_response):
        headers = Headers(self.headers)
        if self.content_length is not None:
            headers["Content-Length"] = self.content_length
        start_response(self.status, list(headers.items()))
        return self.app_iter if self.app_iter is not None else [self.body]


def split_path(path, minsegs=1, maxsegs=None, rest_with_last=False):
    """swift.common.utils.split_path, as Swift has it."""
    if not maxsegs:
        maxsegs = minsegs
    minsegs += 1
    maxsegs += 1
    if rest_with_last:
        segs = path.split("/", maxsegs - 1)
        count = len(segs)
        if segs[0] or count < minsegs or count > maxsegs or "" in segs[1:minsegs]:
            raise ValueError(f"Invalid path: {path}")
    else:
        segs = path.split("/", maxsegs)
        count = len(segs)
        if (segs[0] or count < minsegs or count > maxsegs + 1 or "" in segs[1:minsegs]
                or (count == maxsegs + 1 and segs[maxsegs])):
            raise ValueError(f"Invalid path: {path}")
    segs = segs[1:maxsegs]
    segs.extend([None] * (maxsegs - 1 - len(segs)))
    return segs


class FakeRequest:
    def __init__(self, env):
        self.environ = env
        self.headers = Headers({k[5:].replace("_", "-"): v for k, v in env.items() if k.startswith("HTTP_")})
        if "CONTENT_TYPE" in env:
            self.headers["Content-Type"] = env["CONTENT_TYPE"]

    @property
    def path(self):
        return env_path(self.environ)

    @property
    def method(self):
        return self.environ["REQUEST_METHOD"]

    @property
    def query_string(self):
        return self.environ.get("QUERY_STRING")

    @property
    def params(self):
        """swob's: the query string as a dict, blank values kept, the last of a name winning."""
        return dict(parse_qsl(self.environ.get("QUERY_STRING", ""), True))

    @property
    def content_length(self):
        value = self.environ.get("CONTENT_LENGTH")
        return None if value in (None, "") else int(value)

    def split_path(self, minsegs, maxsegs=None, rest_with_last=False):
        return split_path(unquote(self.path), minsegs, maxsegs, rest_with_last)


def env_path(env):
    return env.get("PATH_INFO", "/")


class FakeLogger:
    def __init__(self):
        self.logged = []

    def exception(self, msg, *args):
        self.logged.append(msg % args)

    def error(self, msg, *args):
        self.logged.append(msg % args)


class ImmediateThread:
    """eventlet.spawn, run at once: what it returns, or raises, is there at wait()."""

    def __init__(self, fn, *args):
        try:
            self.value, self.error = fn(*args), None
        except Exception as e:
            self.value, self.error = None, e

    def wait(self):
        if self.error is not None:
            raise self.error
        return self.value

    def kill(self):
        """Too late here: it has run; what it did stays done."""


class SerialPool:
    def __init__(self, size):
        self.size = size

    def imap(self, fn, items):
        return map(fn, items)


@pytest.fixture
def zc(monkeypatch):
    """The filter modules imported against the stand-ins.  Names a test needs to
    steer (make_subrequest, http_connect, POLICIES, get_container_info) are
    None here: the test sets them on the module that uses them."""
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)

    module("eventlet", GreenPool=SerialPool, Semaphore=threading.Semaphore, Timeout=FakeTimeout,
           spawn=ImmediateThread)
    for name in ("swift", "swift.common", "swift.proxy", "swift.proxy.controllers", "swift.obj"):
        module(name)
    module("swift.common.bufferedhttp", http_connect=None)
    module("swift.common.exceptions", ConnectionTimeout=FakeTimeout)
    module("swift.common.http", is_success=lambda status: 200 <= status < 300)
    module("swift.common.registry", register_swift_info=lambda *a, **k: None)
    module("swift.common.storage_policy", POLICIES=None)
    module("swift.common.swob", Request=FakeRequest, Response=FakeResponse)
    module("swift.common.utils", get_logger=lambda conf, log_route: FakeLogger(), split_path=split_path)
    module("swift.common.wsgi", make_subrequest=None)
    module("swift.proxy.controllers.base", get_container_info=None)
    module("swift.obj.diskfile", DiskFileError=type("DiskFileError", (Exception,), {}),
           DiskFileNotExist=type("DiskFileNotExist", (Exception,), {}))
    package = importlib.import_module("zerolab.zerocloud")
    for name in SWIFT_MODULES:
        monkeypatch.delitem(sys.modules, f"zerolab.zerocloud.{name}", raising=False)
        monkeypatch.delattr(package, name, raising=False)
    return types.SimpleNamespace(**{name: importlib.import_module(f"zerolab.zerocloud.{name}")
                                    for name in SWIFT_MODULES})


def call(app, env):
    """A WSGI call -> (status line, headers, body)."""
    got = {}

    def start_response(status, headers):
        got.update(status=status, headers=Headers(headers))
    body = b"".join(app(env, start_response))
    return got["status"], got["headers"], body
