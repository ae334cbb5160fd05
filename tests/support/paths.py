"""Where the checkout and the offline data are."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    """``../shared/data`` beside the checkout, or ``$PROFL_DATA_DIR``."""
    return Path(os.environ.get("PROFL_DATA_DIR") or REPO.parent / "shared" / "data")
