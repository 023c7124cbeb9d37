"""Each role's meta/argument_specs.yml and defaults/main.yml describe the same
variables: every default is documented and checked, an option with no default
is required (or asserted by the role), a default written in both places is the
same, and every role README names each variable."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if (p / "tasks").is_dir())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.fixture(params=ROLES, ids=[r.name for r in ROLES])
def role(request):
    return request.param


def test_every_default_is_an_option_and_every_option_with_a_default_matches(role):
    defaults = load(role / "defaults" / "main.yml")
    options = load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(set(defaults) - set(options)) == [], "defaults missing from argument_specs.yml"
    for name, spec in options.items():
        if name not in defaults:
            # No default: the user must give it, and either the spec says so
            # or the role's own asserts check it (with a message that says how).
            asserted = f"{name} is defined" in (role / "tasks" / "assert.yml").read_text()
            assert spec.get("required") is True or asserted, f"{name}: no default, not required, not asserted"
            continue
        if "default" not in spec or (isinstance(defaults[name], str) and "{{" in defaults[name]):
            # Large structures and templated defaults are described in words.
            continue
        assert spec["default"] == defaults[name], f"{name}: argument_specs default differs from defaults/main.yml"


def test_every_public_variable_is_in_the_readme(role):
    readme = (role / "README.md").read_text()
    defaults = load(role / "defaults" / "main.yml")
    missing = [name for name in defaults if f"`{name}`" not in readme]
    assert missing == [], f"{role.name}/README.md does not describe {missing}"
