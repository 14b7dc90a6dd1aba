"""Shared pytest set-up: make tests/ importable (strategies, harness) and pin float64 defaults."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
