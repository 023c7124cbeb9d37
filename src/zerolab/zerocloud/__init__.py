"""zerocloud: run jobs where Swift keeps the data (ZeroCloud's API, zerolab's sandbox).

Where things are:
  job.py          parses and validates a job (JSON description or #! script)
                  and expands it into the nodes that will run (wildcards, connect)
  proxy.py        the proxy-server filter: access checks through the rest of the
                  pipeline, routing to a replica's object server, fan-out,
                  MapReduce stages, the response and its X-Nexe-* headers
  objectquery.py  the object-server filter: runs one node on the object's
                  data file by asking the node's executor daemon
  protocol.py     the small JSON-over-unix-socket protocol to that daemon
  executord.py    the executor daemon (a warm zerolab.sandbox.Executor)
  worker.py       one of its worker processes, which runs jobs in the sandbox

Only executord.py and worker.py import the sandbox's runtime (wasmtime); the
filters run in Swift's own Debian python and import nothing but Swift, the
standard library and zerolab.sandbox.status (the exit-code table, stdlib only).
"""
