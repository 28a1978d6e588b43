"""Checks a submitted config must pass beyond its schema: every path stays inside a configured root.

Data paths (`data.root`, `data.manifests.*`, `data.annotations`, also as values of a search space) must resolve inside one of `settings.data_roots`
(a relative path is looked up under each root: `root: fashion-mnist` is `<data root>/fashion-mnist`);
output paths (any `*_path` / `*_dir` field) inside `settings.output_root`. Resolution follows
symlinks, so a link pointing out of a root is refused like `..` is. The stored config carries the
resolved absolute paths, so the job reads exactly what was checked. Jobs log to the service's
tracking store and run on its Ray cluster: other `tracking.uri` / `cluster.address` values are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.settings import Settings

OUTPUT_SUFFIXES = ("_path", "_dir")


class ConfigRejected(ValueError):
    """A config value the service will not run; `loc` is the field's path inside the config."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def prepare_config(config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The config to store and run: a copy with every path checked and resolved; raises ConfigRejected."""
    return _walk(config, (), settings)


def _walk(node: Any, loc: tuple[str | int, ...], settings: Settings) -> Any:
    if isinstance(node, dict):
        return {key: _walk(value, (*loc, key), settings) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, (*loc, index), settings) for index, value in enumerate(node)]
    if not isinstance(node, str):
        return node
    # Search spaces name fields as dotted keys ({"data.root": {"grid": [...]}}): split them too.
    parts = [piece for part in loc if isinstance(part, str) for piece in part.split(".")]
    if "data" in parts and ("root" in parts or "manifests" in parts or "annotations" in parts):
        return str(_inside(node, settings.data_roots, loc, "data roots"))
    if any(part.endswith(OUTPUT_SUFFIXES) for part in parts):
        return str(_inside(node, [settings.output_root], loc, "output root"))
    if _names(parts, "tracking", "uri") and node != settings.tracking_uri:
        raise ConfigRejected(loc, f"jobs log to the service's tracking store; leave it null "
                                  f"(got {node!r})")
    if _names(parts, "cluster", "address") and node != settings.ray_address:
        raise ConfigRejected(loc, "jobs run on the service's Ray cluster; leave it null "
                                  f"(got {node!r})")
    return node


def _names(parts: list[str], section: str, field: str) -> bool:
    return section in parts and field in parts[parts.index(section):]


def _inside(value: str, roots: list[Path], loc: tuple[str | int, ...], what: str) -> Path:
    """`value` resolved (symlinks followed) inside one of `roots`; relative paths are tried under each."""
    if "\x00" in value or not value.strip():
        raise ConfigRejected(loc, "not a usable path")
    path = Path(value).expanduser() if value.startswith("~") else Path(value)
    candidates = [path.resolve()] if path.is_absolute() else [(root / path).resolve() for root in roots]
    inside = [c for c in candidates if any(c.is_relative_to(root) for root in roots)]
    if not inside:
        allowed = ", ".join(str(root) for root in roots)
        raise ConfigRejected(loc, f"{value!r} resolves outside the configured {what} ({allowed})")
    existing = [c for c in inside if c.exists()]
    return (existing or inside)[0]


def job_config_yaml(config: dict[str, Any]) -> str:
    """The YAML a job process reads with `--config` (its tracking URI comes from MLFLOW_TRACKING_URI)."""
    return yaml.safe_dump(config, sort_keys=False)
