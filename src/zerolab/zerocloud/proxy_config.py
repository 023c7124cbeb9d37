"""The proxy filter's options (the ``[filter:zerocloud]`` section), read once and checked.

Standard library only, like job.py: what a job may cost the proxy is stated
in terms of these (proxy.py's docstring), so a configuration that leaves one
unbounded is refused when the filter starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .job import MAX_NODES

# zerovm_connect's values, and X-Zerolab-Connect's (connect_streams.py).
CONNECT_MODES = ("streamed", "staged")

DEFAULTS = {
    "swift_dir": "/etc/swift",
    "zerovm_timeout": "10",
    "zerovm_maxinput": str(1 << 30),
    "zerovm_maxoutput": str(100 << 20),
    "zerovm_maxconfig": "65536",
    "zerovm_maxnexe": str(64 << 20),
    "zerovm_maxnexemem": str(256 << 20),
    "zerovm_maxnodes": "64",
    "zerovm_maxjobinput": str(256 << 20),
    "zerovm_maxjoboutput": str(256 << 20),
    "zerovm_max_listing": "100000",
    "zerovm_concurrency": "8",
    "zerovm_connect": "streamed",
    "zerovm_sysimage_devices": "",
    "zerovm_default_content_type": "application/octet-stream",
    "zerovm_spool_dir": "",
    "zerovm_template_cache": "60",
    "conn_timeout": "0.5",
}


@dataclass(frozen=True)
class ProxyConfig:
    swift_dir: str
    timeout: int                 # zerovm_timeout: seconds a node may run
    max_input: int               # zerovm_maxinput: bytes of one input object
    max_output: int              # zerovm_maxoutput: bytes of one output
    max_config: int              # zerovm_maxconfig: bytes of the job description
    max_nexe: int                # zerovm_maxnexe: bytes of one swift:// program
    max_memory: int              # zerovm_maxnexemem: bytes of guest memory
    max_nodes: int               # zerovm_maxnodes: instances of one job
    max_job_input: int           # zerovm_maxjobinput: bytes the proxy fetches for one job
    max_job_output: int          # zerovm_maxjoboutput: bytes of one job's outputs together
    max_listing: int             # zerovm_max_listing: names a wildcard may scan
    concurrency: int             # zerovm_concurrency: instances of one stage at once
    connect: str                 # zerovm_connect: streamed or staged (connect_streams.py)
    conn_timeout: float          # seconds to connect to an object server
    sysimages: frozenset[str]    # zerovm_sysimage_devices
    default_content_type: str    # zerovm_default_content_type, for outputs without one
    spool_dir: str | None        # zerovm_spool_dir: where outputs wait for the answer (None: the system's temp dir)
    template_cache: float        # zerovm_template_cache: seconds a GET template is kept (apps.TemplateCache)

    @classmethod
    def from_conf(cls, conf: Mapping[str, str]) -> ProxyConfig:
        conf = dict(DEFAULTS, **conf)
        config = cls(
            swift_dir=conf["swift_dir"],
            timeout=int(conf["zerovm_timeout"]),
            max_input=int(conf["zerovm_maxinput"]),
            max_output=int(conf["zerovm_maxoutput"]),
            max_config=int(conf["zerovm_maxconfig"]),
            max_nexe=int(conf["zerovm_maxnexe"]),
            max_memory=int(conf["zerovm_maxnexemem"]),
            max_nodes=int(conf["zerovm_maxnodes"]),
            max_job_input=int(conf["zerovm_maxjobinput"]),
            max_job_output=int(conf["zerovm_maxjoboutput"]),
            max_listing=int(conf["zerovm_max_listing"]),
            concurrency=int(conf["zerovm_concurrency"]),
            connect=conf["zerovm_connect"].strip(),
            conn_timeout=float(conf["conn_timeout"]),
            sysimages=frozenset(conf["zerovm_sysimage_devices"].split()),
            default_content_type=conf["zerovm_default_content_type"],
            spool_dir=conf["zerovm_spool_dir"].strip() or None,
            template_cache=seconds(conf, "zerovm_template_cache"),
        )
        if not 1 <= config.max_nodes <= MAX_NODES:
            raise ValueError(f"zerovm_maxnodes must be between 1 and {MAX_NODES} (got {config.max_nodes})")
        for option in ("zerovm_maxjobinput", "zerovm_maxjoboutput", "zerovm_max_listing"):
            if int(conf[option]) < 1:
                raise ValueError(f"{option} must be a positive number (got {conf[option]})")
        if not 0 <= config.template_cache <= 86400:
            raise ValueError(f"zerovm_template_cache must be 0 to 86400 seconds (got {conf['zerovm_template_cache']})")
        if config.connect not in CONNECT_MODES:
            raise ValueError(f"zerovm_connect must be streamed or staged (got {config.connect!r})")
        if config.spool_dir is not None and not os.path.isdir(config.spool_dir):
            raise ValueError(f"zerovm_spool_dir {config.spool_dir} is not a directory")
        return config


def seconds(conf: Mapping[str, str], option: str) -> float:
    try:
        return float(conf[option])
    except ValueError:
        raise ValueError(f"{option} must be a number of seconds (got {conf[option]!r})") from None
