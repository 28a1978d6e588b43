"""Where attnlab keeps local state: $ATTNLAB_HOME, default ~/.attnlab.

Here, in the lowest package that keeps state (the video probe cache), so that `training` (MLflow store,
checkpoints, Ray results) and `datamodules` resolve the same folder from one place.
"""

import os
from pathlib import Path


def attnlab_home() -> Path:
    """Root of everything attnlab keeps locally: $ATTNLAB_HOME, default ~/.attnlab (created)."""
    home = Path(os.environ.get("ATTNLAB_HOME") or Path.home() / ".attnlab").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
