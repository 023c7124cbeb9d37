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
