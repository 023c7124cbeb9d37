"""What the roles' tests share."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROLES = Path(__file__).resolve().parents[2] / "roles"


def load_role_file(role: str, filename: str) -> ModuleType:
    """A program a role installs on its nodes (roles/ROLE/files/FILENAME, a
    standalone script whose name is no module name), loaded as a module."""
    path = ROLES / role / "files" / filename
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
