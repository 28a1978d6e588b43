"""The dataset report of `attnlab data check` and of every video training run, from one `DatasetScan`.

`summarize(scan, cfg)` -> a JSON-ready dict: the layout read, file/sample counts, what came from the
probe cache, the verdict under the config's bad-data policy (would training start?), and per split:
videos, samples, usable samples, classes and their balance, duration / frame-rate / resolution / codec
distributions of the usable videos, bad files and bad segments by kind, samples shorter than one
clip (padded by `data.pad`), and the list of every bad file and segment. `render_table(summary)`
draws it as a terminal table (rows: facts, columns: splits). No torch here.
"""

from __future__ import annotations

from collections import Counter
from io import StringIO

import numpy as np

from datamodules.sampling import clip_span
from datamodules.scan import FILE_REASONS, SEGMENT_REASONS, DatasetScan, policy_error

TOP = 5  # distinct values shown per distribution in the table (the JSON keeps all)


def summarize(scan: DatasetScan, cfg) -> dict:
    """The report (see the module docstring) of `scan` under `cfg` (its VideoDataConfig)."""
    span = clip_span(cfg.clip_len, cfg.frame_interval)
    return {
        "layout": scan.layout,
        "root": cfg.root,
        "backend": cfg.backend,
        "classes": len(scan.class_names),
        "files": len(scan.files),
        "from_probe_cache": scan.cached,
        "samples": scan.samples,
        "bad_files": len(scan.bad_files),
        "bad_fraction": scan.budgeted_bad_samples() / scan.samples if scan.samples else 0.0,
        "max_bad_fraction": cfg.max_bad_fraction,
        "clip_span_frames": span,
        "verdict": verdict(scan, cfg),
        "splits": {split: _split_summary(scan, split, span) for split, entries in scan.entries.items() if entries},
        "bad": _bad_listing(scan),
    }


def verdict(scan: DatasetScan, cfg) -> str:
    """'ok', or why training with this config would stop at setup (the error it would raise)."""
    error = policy_error(scan, cfg)
    return "ok" if error is None else f"training stops: {error}"


def _split_summary(scan: DatasetScan, split: str, span: int) -> dict:
    entries, records, rejected = scan.entries[split], scan.records[split], scan.rejected[split]
    usable = {record.path: record.info for record in records}  # distinct usable videos
    per_class = Counter(record.label for record in records)
    counts = [per_class.get(label, 0) for label in range(len(scan.class_names))]
    listed_classes = {entry.label for entry in entries}
    present = [count for label, count in enumerate(counts) if label in listed_classes]
    return {
        "videos": len({entry.path for entry in entries}),
        "samples": len(entries),
        "usable_samples": len(records),
        "classes": {
            "listed": len(listed_classes),
            "without_usable_samples": [scan.class_names[label] for label in sorted(listed_classes)
                                       if counts[label] == 0],
            "min_samples": min(present, default=0),
            "max_samples": max(present, default=0),
            "imbalance": (max(present) / min(present)) if present and min(present) else None,
            "per_class": {scan.class_names[label]: counts[label] for label in sorted(listed_classes)},
        },
        "duration_s": _distribution([info.duration for info in usable.values()]),
        "fps": _counts(f"{info.fps:g}" for info in usable.values()),
        "resolution": _counts(f"{info.width}x{info.height}" for info in usable.values()),
        "codecs": _counts(info.codec or "unknown" for info in usable.values()),
        "bad_files": _by_reason({entry.path: rejected[p] for p, entry in enumerate(entries)
                                 if p in rejected and rejected[p].segment is None}.values(), FILE_REASONS),
        "bad_segments": _by_reason([bad for bad in rejected.values() if bad.segment is not None], SEGMENT_REASONS),
        "shorter_than_clip": sum(record.num_frames < span for record in records),
    }


def _bad_listing(scan: DatasetScan) -> list[dict]:
    """Every bad file once, and every bad segment, with the splits that list it."""
    found: dict[tuple, dict] = {}
    for split, rejected in scan.rejected.items():
        for bad in rejected.values():
            key = (bad.path, bad.segment)
            item = found.setdefault(key, {"path": bad.path, "reason": bad.reason, "detail": bad.detail,
                                          "segment": list(bad.segment) if bad.segment else None, "splits": []})
            if split not in item["splits"]:
                item["splits"].append(split)
    return list(found.values())


def _distribution(values: list[float]) -> dict | None:
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    low, p5, median, p95, high = np.percentile(array, [0, 5, 50, 95, 100])
    return {"min": float(low), "p5": float(p5), "median": float(median), "p95": float(p95), "max": float(high),
            "mean": float(array.mean())}


def _counts(values) -> dict[str, int]:
    """{value: count}, most common first."""
    return dict(Counter(values).most_common())


def _by_reason(bad, reasons: tuple[str, ...]) -> dict[str, int]:
    counted = Counter(item.reason for item in bad)
    return {reason: counted[reason] for reason in reasons if counted[reason]}


# ---- terminal table ---------------------------------------------------------------------------------


def table_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the report: one column per split."""
    splits = list(summary["splits"])
    facts = [
        ("videos", lambda s: str(s["videos"])),
        ("samples (usable)", lambda s: f"{s['samples']} ({s['usable_samples']})"),
        ("classes", lambda s: f"{s['classes']['listed']}" + (f", {len(s['classes']['without_usable_samples'])} "
                                                             "without usable samples"
                                                             if s["classes"]["without_usable_samples"] else "")),
        ("samples per class", lambda s: f"{s['classes']['min_samples']}-{s['classes']['max_samples']}"
                                        + (f" (x{s['classes']['imbalance']:.1f})"
                                           if s["classes"]["imbalance"] and s["classes"]["imbalance"] > 1 else "")),
        ("duration s (min/median/max)", lambda s: "-" if s["duration_s"] is None else
         f"{s['duration_s']['min']:.2f} / {s['duration_s']['median']:.2f} / {s['duration_s']['max']:.2f}"),
        ("fps", lambda s: _top(s["fps"])),
        ("resolution", lambda s: _top(s["resolution"])),
        ("codecs", lambda s: _top(s["codecs"])),
        ("bad files", lambda s: _top(s["bad_files"], everything=True) or "0"),
        ("bad segments", lambda s: _top(s["bad_segments"], everything=True) or "0"),
        (f"shorter than one clip ({summary['clip_span_frames']} frames)", lambda s: str(s["shorter_than_clip"])),
    ]
    return ["", *splits], [[name, *(show(summary["splits"][split]) for split in splits)] for name, show in facts]


def _top(counts: dict[str, int], everything: bool = False) -> str:
    shown = list(counts.items()) if everything else list(counts.items())[:TOP]
    more = len(counts) - len(shown)
    return ", ".join(f"{value}: {count}" for value, count in shown) + (f", +{more} more" if more > 0 else "")


def headline(summary: dict) -> str:
    cached = f", {summary['from_probe_cache']} from the probe cache" if summary["from_probe_cache"] else ""
    return (f"{summary['layout']} layout at {summary['root']}: {summary['classes']} classes, {summary['files']} "
            f"files{cached}, {summary['samples']} samples; bad {summary['bad_fraction']:.1%} of samples "
            f"(data.max_bad_fraction {summary['max_bad_fraction']:.0%}); verdict: {summary['verdict']}")


def render_table(summary: dict, width: int = 160, bad_shown: int = 10) -> str:
    """The report as text: a headline, the per-split table and the first `bad_shown` bad files/segments."""
    from rich.console import Console
    from rich.table import Table

    headers, rows = table_rows(summary)
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    console = Console(file=StringIO(), width=width, record=True)
    console.print(headline(summary), highlight=False, markup=False)
    console.print(table)
    for item in summary["bad"][:bad_shown]:
        segment = f" [segment {item['segment'][0]}-{item['segment'][1]} s]" if item["segment"] else ""
        console.print(f"  {item['reason']}: {item['path']}{segment} {item['detail']}", highlight=False, markup=False)
    if len(summary["bad"]) > bad_shown:
        console.print(f"  ... and {len(summary['bad']) - bad_shown} more (all in the JSON report)")
    return console.export_text()
