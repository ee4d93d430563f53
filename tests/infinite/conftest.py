"""Test setup for kernelens.infinite: the shared helpers in this folder are importable (tests run
with --import-mode=importlib)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
