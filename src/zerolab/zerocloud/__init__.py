"""zerocloud: run jobs where Swift keeps the data (ZeroCloud's API, zerolab's sandbox).

Where things are:
  job.py          parses and validates a job (JSON description or #! script)
                  and expands it into the nodes that will run (wildcards, connect)
  proxy.py        the proxy-server filter: takes a job POST and parses it; its parts:
    proxy_config.py   its options, checked at start
    subrequests.py    reads, listings and writes through the rest of the
                      pipeline as the caller (access checks), the program cache
    routing.py        which object servers may run an instance (the ring) and
                      the EXECUTE sent to one
    execution.py      the plan of each instance and the stages (fan-out, MapReduce)
    response.py       the job's answer and its X-Nexe-* headers
  objectquery.py  the object-server filter: runs one node on the object's
                  data file by asking the node's executor daemon
  protocol.py     the small JSON-over-unix-socket protocol to that daemon
  executord.py    the executor daemon (a warm zerolab.sandbox.Executor)
  worker.py       one of its worker processes, which runs jobs in the sandbox

Only executord.py and worker.py import the sandbox's runtime (wasmtime); the
filters run in Swift's own Debian python and import nothing but Swift, the
standard library and zerolab.sandbox.status (the exit-code table, stdlib only).
"""
