"""NTK test setup: the shared test models are importable (tests run with
--import-mode=importlib), and torch runs single-threaded (tiny models on a shared machine
are much faster without thread oversubscription)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
