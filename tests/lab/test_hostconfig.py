"""The Debian mirror is read from the host's apt configuration, in both formats."""

import pytest

from zerolab.lab import hostconfig


def test_deb822_sources(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
    roots = [str(tmp_path)]
    assert hostconfig.debian_mirror(roots=roots) == "http://mirror.invalid/debian"
    assert hostconfig.debian_security_mirror(roots=roots) == "http://mirror.invalid/debian-security"


def test_one_line_sources_with_options(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# a comment\ndeb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n"
    )
    assert hostconfig.debian_mirror(roots=[str(tmp_path / "sources.list")]) == "http://mirror.invalid/debian"


def test_disabled_deb822_stanza_is_ignored(tmp_path):
    (tmp_path / "x.sources").write_text("Types: deb\nEnabled: no\nURIs: http://off.invalid/debian\nSuites: bookworm\n")
    with pytest.raises(hostconfig.MirrorNotFound, match="no 'bookworm' source"):
        hostconfig.debian_mirror(roots=[str(tmp_path)])
