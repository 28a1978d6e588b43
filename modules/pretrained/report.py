"""The loading report: what happened to every tensor of the network when its starting weights were loaded."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

# What happened to a tensor of the network (or, for "unused", of the source):
STATUSES = {
    "loaded": "copied from the source",
    "inflated": "2D source kernel inflated to 3D (repeated over time, divided by k_t)",
    "from_conv": "self-attention initialised from the 3×3 conv it replaces (from_conv, Theorem 1)",
    "reinitialised": "kept this network's fresh initialisation (classifier head, or a mismatch with strict: false)",
    "new": "an inserted block's tensor, not in the source: fresh initialisation",
    "kept": "a BatchNorm step counter the source does not have: this network's value",
    "replaced": "source conv replaced by self-attention and not used (selfattn_from_conv: false)",
    "unused": "source tensor that matches nothing in this network (strict: false)",
}
PRETRAINED = ("loaded", "inflated")  # weights that come from the source as they are


@dataclass
class Entry:
    key: str
    status: str
    source_shape: tuple[int, ...] | None
    target_shape: tuple[int, ...] | None
    note: str = ""


@dataclass
class LoadingReport:
    """Every tensor of the network (and every unused one of the source) with its status.

    `source` describes where the weights came from (filled by the caller: file and hash, or model URI
    and version); `warnings` are the problems that `strict: false` let pass.
    """

    source_format: str
    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, status: str, source_shape=None, target_shape=None, note: str = "") -> None:
        self.entries.append(Entry(key, status, _shape(source_shape), _shape(target_shape), note))

    def keys(self, *statuses: str) -> list[str]:
        return [entry.key for entry in self.entries if entry.status in statuses]

    def counts(self) -> dict[str, int]:
        counted = Counter(entry.status for entry in self.entries)
        return {status: counted[status] for status in STATUSES if counted[status]}

    def summary(self) -> str:
        return ", ".join(f"{count} {status}" for status, count in self.counts().items())

    def format(self) -> str:
        """The printed and logged text: source, summary, warnings, then one line per tensor."""
        lines = ["initial weights: " + ", ".join(f"{key}={value}" for key, value in self.source.items()
                                                 if value not in (None, "")),
                 f"format: {self.source_format}", f"tensors: {self.summary()}"]
        lines += [f"WARNING: {warning}" for warning in self.warnings]
        width = max((len(entry.key) for entry in self.entries), default=0)
        for entry in self.entries:
            shapes = f"{_text(entry.source_shape)} -> {_text(entry.target_shape)}"
            lines.append(f"  {entry.status:<13} {entry.key:<{width}}  {shapes}" + (f"  ({entry.note})" if entry.note else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "source_format": self.source_format, "counts": self.counts(),
                "warnings": self.warnings, "tensors": [asdict(entry) for entry in self.entries]}


def _shape(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(int(size) for size in shape)


def _text(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "×".join(map(str, shape)) or "scalar"
