"""Every command a user runs answers --help with its usage, and does nothing else."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "scripts").iterdir() if p.name != "lib.sh")
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("command", [[str(p)] for p in SCRIPTS] + [[sys.executable, str(p)] for p in BENCHMARKS],
                         ids=[p.name for p in SCRIPTS + BENCHMARKS])
def test_help_prints_usage_and_exits(command, tmp_path):
    # From an empty folder: a script that ignored --help and went to work
    # would either fail here or leave something behind.
    result = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    usage = result.stdout.strip()
    # argparse's usage, or the script's header comment (scripts/lib.sh's usage_if_asked)
    header = Path(command[-1]).read_text().splitlines()[1].removeprefix("# ")
    assert usage.startswith("usage:") or usage.splitlines()[0] == header, usage
    assert len(usage.splitlines()) >= 2, usage
    assert list(tmp_path.iterdir()) == []


def test_the_swift_benchmark_says_in_one_line_that_the_lab_is_down(tmp_path):
    # 203.0.113.0/24 is TEST-NET-3: on no network of this machine, so the
    # benchmark must refuse before any packet would leave for it.
    import yaml

    data = yaml.safe_load((ROOT / "inventories" / "lab" / "hosts.yml").read_text())
    data["all"]["children"]["swift"]["children"]["swift_proxy"]["hosts"]["swift-proxy1"]["ansible_host"] = "203.0.113.7"
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "swift.py"), "--inventory",
                             str(tmp_path / "hosts.yml"), "--guests", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == ("the lab is down: swift-proxy1's address 203.0.113.7 is on no network of this "
                                     "machine; bring it up with scripts/lab up, or pass --url")


def test_only_addresses_on_this_machine_count_as_reachable():
    from zerolab.lab.hostconfig import on_a_local_network

    assert on_a_local_network("127.0.0.1") and on_a_local_network("::1")
    assert not on_a_local_network("203.0.113.7")
