"""NVRAM: the ini-like file zvsh wrote for ZeroVM's ZRT (``/dev/nvram`` channel).

Sections: ``[args]`` (``args = prog arg1 arg2``, each argument escaped),
``[env]`` (``name=KEY,value=VALUE`` lines), ``[fstab]``
(``channel=/dev/1.python.tar,mountpoint=/,access=ro,removable=no``),
``[mapping]`` (``channel=/dev/stdin,mode=char|file``) and ``[debug]``.
ZRT's parser treated ',' like a newline and split args on ' ', so zvsh escaped
those characters (and '\\', '"', newline) as ``\\xNN``; we do the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .manifest import ManifestError, Mount

_ESCAPED = '\\", \n'
_UNESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def escape(value: str) -> str:
    for c in _ESCAPED:
        value = value.replace(c, "\\x%02x" % ord(c))
    return value


def unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


@dataclass
class NVRAM:
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)  # alias -> "char" | "file"
    verbosity: int | None = None

    def dumps(self) -> str:
        out = ["[args]", "args = " + " ".join(escape(a) for a in self.args)]
        if self.env:
            out.append("[env]")
            out += [f"name={k},value={escape(v)}" for k, v in self.env.items()]
        if self.mounts:
            out.append("[fstab]")
            out += [f"channel={m.channel},mountpoint={m.mountpoint},access={m.access},removable=no"
                    for m in self.mounts]
        if self.mapping:
            out.append("[mapping]")
            out += [f"channel={alias},mode={mode}" for alias, mode in self.mapping.items()]
        if self.verbosity is not None:
            out += ["[debug]", f"verbosity={self.verbosity}"]
        return "\n".join(out) + "\n"

    @classmethod
    def parse(cls, text: str, source: str = "nvram") -> NVRAM:
        nv = cls()
        section = None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            if section == "args":
                key, sep, value = line.partition("=")
                if not sep or key.strip() != "args":
                    raise ManifestError(f"expected 'args = ...' in [args], got {line[:60]!r}", number, source)
                nv.args = [unescape(a) for a in value.split()]
                continue
            # the other sections hold comma-separated key=value records
            record = {}
            for item in line.split(","):
                k, sep, v = item.partition("=")
                if not sep:
                    raise ManifestError(f"expected key=value items in [{section}], got {line[:60]!r}",
                                        number, source)
                record[k.strip()] = v.strip()
            try:
                if section == "env":
                    nv.env[record["name"]] = unescape(record["value"])
                elif section == "fstab":
                    access = record.get("access", "ro")
                    if access not in ("ro", "rw"):
                        raise ManifestError(f"fstab access must be ro or rw, got {access!r}", number, source)
                    nv.mounts.append(Mount(record["channel"], record.get("mountpoint", "/"), access))
                elif section == "mapping":
                    nv.mapping[record["channel"]] = record.get("mode", "file")
                elif section == "debug":
                    nv.verbosity = int(record.get("verbosity", "0"))
                # unknown sections are ignored, as ZRT ignored them
            except KeyError as e:
                raise ManifestError(f"[{section}] record lacks {e.args[0]}=", number, source) from None
            except ValueError:
                raise ManifestError(f"[{section}] has a bad number: {line[:60]!r}", number, source) from None
        return nv
