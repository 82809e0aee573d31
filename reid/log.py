"""One logging set-up for every command line and stage process: level, stream (stderr) and line format."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr as ``time LEVEL process logger: message`` (the process names the stage in a pipeline run)."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(max(level, logging.WARNING))  # five lines on which CPU build it loads
