"""zerolab's client: what a user runs on their own machine, never on the nodes.

  cli.py      ``zerolab-app``: bundle, deploy and execute apps (zpm's commands)
  bundle.py   a directory -> a reproducible gzipped tar with boot/system.map,
              and a local app read back and checked before it is sent
  swift.py    v1 auth, the app's PUT and the job's POST through python-swiftclient
  errors.py   every failure as one line and an exit status

It checks what it sends with the proxy's own pure-Python parsers
(zerolab.zerocloud.job and .apps), so a job the proxy would refuse is
refused here first, with the same reason.  docs/apps.md has the whole story.
"""
