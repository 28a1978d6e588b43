"""The result of a search as the papers lay out their ablations: placement × reduction -> metric.

One table per search (SE paper Tables 10/13, Non-local Table 2c): a row per placement, a column
per reduction ratio, each cell the best value of the metric over the trials with that pair
(`*` = stopped early by ASHA, value at the stop; `over budget` = pruned before training; `—` = no
trial). Written as Markdown and CSV, plus a heatmap figure of the same grid.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EARLY_STOP_MARK = "*"


@dataclass
class Cell:
    value: float | None = None
    stopped_early: bool = False
    over_budget: bool = False
    trials: int = 0


@dataclass
class AblationTable:
    metric: str
    mode: str  # "max" | "min"
    row_name: str
    column_name: str
    rows: list[Any] = field(default_factory=list)
    columns: list[Any] = field(default_factory=list)
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, row: Any, column: Any) -> Cell:
        return self.cells.get((str(row), str(column)), Cell())

    def best(self) -> tuple[Any, Any] | None:
        """(row, column) of the best value, or None if no trial reported the metric."""
        scored = [(key, c.value) for key, c in self.cells.items() if c.value is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda item: item[1])[0]


def build_table(trials: list[dict[str, Any]], *, metric: str, mode: str, row_name: str, column_name: str,
                rows: list[Any] | None = None, columns: list[Any] | None = None) -> AblationTable:
    """`trials`: one dict per trial with `row_name`, `column_name`, `metric` (may be None),
    `stopped_early` and `over_budget` flags. Row/column order: `rows`/`columns`, then first seen."""
    table = AblationTable(metric=metric, mode=mode, row_name=row_name, column_name=column_name,
                          rows=list(rows or []), columns=list(columns or []))
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    for trial in trials:
        row, column = trial.get(row_name), trial.get(column_name)
        if row not in table.rows:
            table.rows.append(row)
        if column not in table.columns:
            table.columns.append(column)
        cell = table.cells.setdefault((str(row), str(column)), Cell())
        cell.trials += 1
        value = trial.get(metric)
        if trial.get("over_budget"):
            cell.over_budget = cell.value is None
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if cell.value is None or better(value, cell.value):
            cell.value, cell.stopped_early, cell.over_budget = float(value), bool(trial.get("stopped_early")), False
    return table


def _text(cell: Cell) -> str:
    if cell.value is not None:
        return f"{cell.value:.4f}{EARLY_STOP_MARK if cell.stopped_early else ''}"
    return "over budget" if cell.over_budget else "—"


def _header(value: Any, name: str) -> str:
    short = name.rsplit(".", 1)[-1]
    return f"r={value}" if short == "reduction" else f"{short}={value}"


def to_markdown(table: AblationTable) -> str:
    """A Markdown table; the best cell in bold."""
    best = table.best()
    head = [table.row_name.rsplit(".", 1)[-1]] + [_header(c, table.column_name) for c in table.columns]
    lines = [f"{table.metric} ({table.mode}) by {table.row_name} × {table.column_name}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        cells = []
        for column in table.columns:
            text = _text(table.cell(row, column))
            cells.append(f"**{text}**" if best == (str(row), str(column)) else text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", f"{EARLY_STOP_MARK} stopped early by ASHA (value at the stop); over budget = pruned "
              "before training; — = no trial."]
    return "\n".join(lines) + "\n"


def to_csv(table: AblationTable) -> str:
    """Long format: one line per (row, column) with the value and how it was reached."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([table.row_name, table.column_name, table.metric, "stopped_early", "over_budget", "trials"])
    for row in table.rows:
        for column in table.columns:
            cell = table.cell(row, column)
            writer.writerow([row, column, "" if cell.value is None else cell.value, int(cell.stopped_early),
                             int(cell.over_budget), cell.trials])
    return buffer.getvalue()


def heatmap(table: AblationTable, path: str | Path) -> Path:
    """PNG heatmap of the metric over rows × columns, each cell annotated with its text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.full((len(table.rows), len(table.columns)), np.nan)
    for i, row in enumerate(table.rows):
        for j, column in enumerate(table.columns):
            value = table.cell(row, column).value
            grid[i, j] = np.nan if value is None else value
    width = 1.6 + 1.1 * max(len(table.columns), 1)
    height = 1.2 + 0.5 * max(len(table.rows), 1)
    figure, axes = plt.subplots(figsize=(width, height))
    colormap = "viridis" if table.mode == "max" else "viridis_r"  # brighter = better either way
    image = axes.imshow(np.ma.masked_invalid(grid), cmap=colormap, aspect="auto")
    axes.set_xticks(range(len(table.columns)), [_header(c, table.column_name) for c in table.columns])
    axes.set_yticks(range(len(table.rows)), [str(r) for r in table.rows])
    axes.set_xlabel(table.column_name)
    axes.set_ylabel(table.row_name)
    for i, row in enumerate(table.rows):
        for j, column in enumerate(table.columns):
            axes.text(j, i, _text(table.cell(row, column)), ha="center", va="center", fontsize=8,
                      color="white" if not np.isnan(grid[i, j]) else "grey")
    figure.colorbar(image, ax=axes, label=table.metric)
    axes.set_title(f"{table.metric} ({table.mode})")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(table: AblationTable, folder: str | Path) -> dict[str, Path]:
    """ablation.md, ablation.csv and ablation.png in `folder`; returns the paths by kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    markdown, comma_separated = folder / "ablation.md", folder / "ablation.csv"
    markdown.write_text(to_markdown(table))
    comma_separated.write_text(to_csv(table))
    return {"markdown": markdown, "csv": comma_separated, "figure": heatmap(table, folder / "ablation.png")}
