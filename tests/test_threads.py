"""kernelens never changes torch's global thread counts when imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import json, torch
before = [torch.get_num_threads(), torch.get_num_interop_threads()]
import kernelens
from kernelens import data, epk, experiments, kernels, linalg, ntk, plot, report, rfm, sparse
experiments.list_experiments()
print(json.dumps([before, [torch.get_num_threads(), torch.get_num_interop_threads()]]))
"""


def test_import_leaves_thread_counts_alone():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == after
