"""The fuzz tests use the integration harness (broker process, raw client)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
