"""The family's paper figures as MLflow artifacts (`figures/<name>.png`), drawn at the end of a run.

The LightningModule of each family knows what its paper shows (`module.figures(batches)`); this
module feeds it a few test batches and stores the matplotlib figures (Agg backend) in the run.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")


def test_batches(datamodule, count: int) -> list:
    """The first `count` batches of the test split (clips stay grouped per video)."""
    datamodule.setup("test")
    batches = []
    for batch in datamodule.test_dataloader():
        batches.append(batch)
        if len(batches) >= count:
            break
    return batches


def log_figures(uri: str, run_id: str, module, batches: list) -> list[str]:
    """Draw the module's figures from `batches` and log them; returns the file names."""
    from training import tracking

    return tracking.log_figures(uri, run_id, module.figures(batches))
