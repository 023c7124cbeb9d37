"""Where the proxy filter sends an instance, and the EXECUTE that sends it.

An instance that reads an object where it is stored goes to the object
servers that hold its replicas (the object ring of its container's storage
policy), in ring order; ObjectServerClient sends it to one and the proxy
tries the next when one has no copy or no free slot.  An instance without
such an input goes to up to three object servers picked at random, as
ZeroCloud did.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventlet import Timeout
from swift.common.bufferedhttp import http_connect
from swift.common.exceptions import ConnectionTimeout
from swift.common.storage_policy import POLICIES
from swift.common.swob import Request
from swift.proxy.controllers.base import get_container_info

from . import job as jobs
from .job import JobError
from .objectquery import EXECUTE, LOCAL_ALIAS_HEADER
from .proxy_config import ProxyConfig
from .response import one_line

# An object server's reply is read in pieces of this size, each counted
# against the job's output budget before the next is read.
REPLY_PIECE = 1 << 20
# A device of the ring: "ip", "port", "device" and more, as Swift's rings give them.
RingNode = Mapping[str, Any]


@dataclass(frozen=True)
class Route:
    """The object servers that may run one instance, in the order to try them,
    and what the EXECUTE to each says."""

    partition: int
    nodes: list[RingNode]
    path: str                                   # /account[/container/object]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """An object server's answer to one EXECUTE: a 200 carries the reply
    (protocol.py) and the co-location code, anything else a one-line reason."""

    status: int
    reason: str = ""
    body: bytes = b""
    colocated: str = "0"


class ReplicaRouter:
    def __init__(self, app: object, config: ProxyConfig):
        self.app = app
        self.config = config

    def route(self, req: Request, local: jobs.Device | None, account: str) -> Route:
        if local is not None and local.path is not None:
            path = local.path
            # The container's storage policy picks the object ring.
            env = dict(req.environ, PATH_INFO=f"/v1/{path.account}/{path.container}")
            info = get_container_info(env, self.app, swift_source="ZC")
            policy_index = int(info.get("storage_policy") or 0)
            ring = POLICIES.get_object_ring(policy_index, self.config.swift_dir)
            partition, nodes = ring.get_nodes(path.account, path.container, path.obj)
            return Route(partition, list(nodes), "/" + "/".join((path.account, path.container, path.obj)),
                         self.headers(req, policy_index, {LOCAL_ALIAS_HEADER: local.alias}))
        # No input object: any object server will do (ZeroCloud picked one at random).
        policy_index = int(POLICIES.default.idx)
        ring = POLICIES.get_object_ring(policy_index, self.config.swift_dir)
        nodes = [d for d in ring.devs if d]
        random.shuffle(nodes)
        return Route(0, nodes[:3], "/" + account, self.headers(req, policy_index, {}))

    @staticmethod
    def headers(req: Request, policy_index: int, extra: dict[str, str]) -> dict[str, str]:
        return dict(extra, **{"X-Backend-Storage-Policy-Index": str(policy_index),
                              "X-Trans-Id": req.environ.get("swift.trans_id", "")})


def read_reply(resp: Any, budget: jobs.Budget) -> bytes:
    """An object server's reply, each piece counted against the job's output
    budget as it arrives (JobError 413 when it runs out)."""
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > budget.remaining:
        raise JobError(413, budget.reason)
    data = jobs.collect(iter(lambda: resp.read(REPLY_PIECE), b""), budget.limit, budget)
    if data is None:
        raise JobError(413, budget.reason)
    return data


class ObjectServerClient:
    def __init__(self, config: ProxyConfig):
        self.config = config

    def send(self, node: RingNode, partition: int, path: str, headers: Mapping[str, str],
             pieces: list[bytes], outputs: jobs.Budget) -> Answer:
        """One EXECUTE to one object server.

        The reply is taken from the job's output budget as it is read (413
        when it runs out); a reply that is not kept (an error) is given back."""
        try:
            with ConnectionTimeout(self.config.conn_timeout):
                conn = http_connect(node["ip"], node["port"], node["device"], partition, EXECUTE,
                                    path, headers=dict(headers))
            with Timeout(self.config.timeout + 30):
                for piece in pieces:
                    conn.send(piece)
                resp = conn.getresponse()
                data = read_reply(resp, outputs)
        except JobError as e:
            return Answer(e.status, e.reason)
        except (Exception, Timeout) as e:
            return Answer(503, f"object server {node['ip']}:{node['port']}/{node['device']} failed: {e}")
        if resp.status != 200:
            outputs.give_back(len(data))
            return Answer(resp.status, one_line(data[:1000].decode("utf-8", "replace")))
        return Answer(200, "", data, resp.getheader("X-Nexe-Colocated") or "0")
