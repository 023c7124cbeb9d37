"""Install the Ansible collections pinned in requirements.yml, without Galaxy.

Galaxy is not reachable from every lab (nor from CI), but PyPI is: the
`ansible` community package carries every collection it ships.  We download
that one wheel (through pip, so pip's own index configuration applies), take
out exactly the pinned collections into the virtualenv's site-packages, where
Ansible finds them with no extra configuration, and check that the versions
inside are the ones pinned.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import yaml

# The community package whose contents match the pins in requirements.yml.
ANSIBLE_PACKAGE = "ansible==12.3.0"


def pinned(requirements: Path) -> dict[str, str]:
    data = yaml.safe_load(requirements.read_text()) or {}
    pins = {}
    for entry in data.get("collections", []):
        if "name" not in entry or "version" not in entry:
            raise SystemExit(f"error: {requirements}: every collection needs 'name' and 'version': {entry}")
        pins[entry["name"]] = str(entry["version"])
    return pins


def installed_version(target: Path, name: str) -> str | None:
    manifest = target / "ansible_collections" / Path(*name.split(".")) / "MANIFEST.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text())["collection_info"]["version"]


def install(requirements: Path, target: Path, cache: Path) -> int:
    pins = pinned(requirements)
    missing = {n: v for n, v in pins.items() if installed_version(target, n) != v}
    if not missing:
        print(f"==> collections: all {len(pins)} pinned versions present", file=sys.stderr)
        return 0
    print(f"==> collections: installing {', '.join(f'{n}=={v}' for n, v in missing.items())}", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = next(cache.glob(ANSIBLE_PACKAGE.replace("==", "-") + "-*.whl"), None)
    if wheel is None:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", ANSIBLE_PACKAGE, "-d", str(cache)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"error: could not download {ANSIBLE_PACKAGE} from the configured Python index: {last}", file=sys.stderr)
            return 1
        wheel = next(cache.glob(ANSIBLE_PACKAGE.replace("==", "-") + "-*.whl"))
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as scratch:
        for name in missing:
            prefix = "ansible_collections/" + name.replace(".", "/") + "/"
            members = [m for m in archive.namelist() if m.startswith(prefix)]
            if not members:
                print(f"error: {wheel.name} does not contain {name}; change ANSIBLE_PACKAGE or the pin", file=sys.stderr)
                return 1
            archive.extractall(scratch, members)
            destination = target / prefix
            shutil.rmtree(destination, ignore_errors=True)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(scratch) / prefix), destination)
    wrong = {n: installed_version(target, n) for n, v in pins.items() if installed_version(target, n) != v}
    if wrong:
        print(f"error: {ANSIBLE_PACKAGE} ships other versions than requirements.yml pins: {wrong}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--target", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--cache", type=Path, default=Path(".cache/pip-downloads"))
    args = parser.parse_args(argv)
    return install(args.requirements, args.target, args.cache)


if __name__ == "__main__":
    sys.exit(main())
