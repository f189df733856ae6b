"""Reads the hashed locks that requirements/update.sh writes (uv's requirements format) and derives from
them what setup.sh and the conda envs install. Standard library only: setup.sh runs it before anything
is installed.

  python3 requirements/locks.py split LOCK NAME WITH WITHOUT   LOCK's entry NAME to WITH, the rest to WITHOUT
  python3 requirements/locks.py envs LOCK ENV.yaml...          rewrite the envs' pinned pip sections from LOCK
  python3 requirements/locks.py names LOCK...                  name==version of every package, one a line
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(\s+\\)?$")
HASH = re.compile(r"^\s+--hash=(\S+?)(\s+\\)?$")
VIA_ONE = re.compile(r"^\s+# via (.+)$")
VIA_MORE = re.compile(r"^\s+#   (.+)$")

# the pip section of an env file: what its rules import, then (after NEEDED) what those need
DIRECT = "# imported by the rules' scripts"
NEEDED = "# what those need"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str  # canonical
    version: str
    lines: list[str] = field(default_factory=list)  # the requirement and its --hash lines
    via: set[str] = field(default_factory=set)  # canonical names of the packages that need it

    @property
    def hashes(self) -> list[str]:
        return [m.group(1) for line in self.lines if (m := HASH.match(line))]


def parse(path) -> dict[str, Entry]:
    """Entries of a lock by canonical name. Raises ValueError on a line it does not understand."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        if m := ENTRY.match(line):
            current = Entry(canonical(m.group(1)), m.group(2), [line])
            if current.name in entries:
                raise ValueError(f"{path}:{number}: {current.name} is locked twice")
            entries[current.name] = current
            in_via = False
        elif m := HASH.match(line):
            if current is None or in_via:
                raise ValueError(f"{path}:{number}: a hash outside a requirement")
            current.lines.append(line)
        elif line.lstrip().startswith("#"):
            if current is not None and (m := VIA_ONE.match(line)):
                current.via.add(_via_name(m.group(1)))
                in_via = True
            elif current is not None and line.strip() == "# via":
                in_via = True
            elif current is not None and in_via and (m := VIA_MORE.match(line)):
                current.via.add(_via_name(m.group(1)))
            else:
                in_via = False
        elif line.startswith("--"):
            raise ValueError(f"{path}:{number}: pip options in a lock are not expected ({line.split()[0]})")
        else:
            raise ValueError(f"{path}:{number}: not a pinned requirement: {line!r}")
    return entries


def _via_name(text: str) -> str:
    # "torch", "qabench (pyproject.toml)", "-r requirements/tools.in", "-c requirements/constraints.txt"
    return text.strip() if text.startswith("-") or "(" in text else canonical(text.strip())


def closure(entries: dict[str, Entry], roots) -> set[str]:
    """``roots`` and every locked package that one of them needs, directly or not."""
    result = {canonical(r) for r in roots}
    missing = result - entries.keys()
    if missing:
        raise KeyError(f"not in the lock: {', '.join(sorted(missing))}")
    grew = True
    while grew:
        grew = False
        for name, entry in entries.items():
            if name not in result and entry.via & result:
                result.add(name)
                grew = True
    return result


def split(lock, name: str, with_path, without_path) -> None:
    entries = parse(lock)
    name = canonical(name)
    if name not in entries:
        raise SystemExit(f"error: {lock} locks no {name}")
    Path(with_path).write_text("\n".join(entries[name].lines) + "\n")
    Path(without_path).write_text("".join("\n".join(e.lines) + "\n" for n, e in entries.items() if n != name))


def env_pip_lines(env_file) -> tuple[list[str], list[str], list[str]]:
    """(lines up to and including the DIRECT marker, the direct package names, the pip section's indent)."""
    lines = Path(env_file).read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == DIRECT)
    except StopIteration:
        raise ValueError(f"{env_file}: no '{DIRECT}' line opening the pinned pip packages") from None
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    direct = []
    for line in lines[start + 1:]:
        if line.strip().startswith(NEEDED):
            break
        m = re.match(r"^\s+- ([A-Za-z0-9][A-Za-z0-9._-]*)(==\S+)?\s*$", line)
        if not m:
            raise ValueError(f"{env_file}: expected '- name==version' after '{DIRECT}', got {line!r}")
        direct.append(canonical(m.group(1)))
    return lines[: start + 1], direct, indent


def env_text(env_file, entries: dict[str, Entry], lock_name: str) -> str:
    """The env file with its pip section pinned from ``entries``: the direct packages, then their needs."""
    head, direct, indent = env_pip_lines(env_file)
    needed = sorted(closure(entries, direct) - set(direct))
    body = [f"{indent}- {n}=={entries[n].version}" for n in sorted(direct)]
    body.append(f"{indent}{NEEDED} (requirements/update.sh pins them from {lock_name})")
    body += [f"{indent}- {n}=={entries[n].version}" for n in needed]
    return "\n".join(head + body) + "\n"


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "split":
        split(*args)
    elif command == "envs":
        lock, *envs = args
        entries = parse(lock)
        for env in envs:
            Path(env).write_text(env_text(env, entries, f"requirements/{Path(lock).name}"))
    elif command == "names":
        for lock in args:
            for entry in parse(lock).values():
                print(f"{entry.name}=={entry.version}")
    else:
        raise SystemExit(f"error: unknown command {command!r} (split, envs, names)")


if __name__ == "__main__":
    main(sys.argv[1:])
