"""Reading docker/'s files as the builder does: Dockerfile instructions, base images, lock files."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (DOCKER / name).read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def base_images(name: str) -> list[str]:
    """The image of each FROM, with ${ARG}s replaced by the defaults the Dockerfile declares before it."""
    defaults, images = {}, []
    for keyword, arguments in dockerfile_instructions(name):
        if keyword == "ARG" and "=" in arguments:
            key, _, value = arguments.partition("=")
            defaults[key] = value
        elif keyword == "FROM":
            images.append(VARIABLE.sub(lambda match: defaults[match["name"]], arguments.split()[0]))
    return images


def lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of a lock file whose every line pins one exact version."""
    locked = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            assert len(requirement.specifier) == 1 and next(iter(requirement.specifier)).operator == "==", line
            locked[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    return locked
