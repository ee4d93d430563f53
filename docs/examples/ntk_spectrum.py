"""The NTK spectrum of a small MLP on digits, at initialisation.

The eigenvalues of the empirical NTK fall off by orders of magnitude: gradient descent learns
the top directions first (see the ``ntk_spectrum_speed`` experiment).
"""

import sys

import torch
from torch import nn

import kernelens
from kernelens import plot
from kernelens.data import digits

torch.manual_seed(0)
d = digits()
x = d.X_train[:200].float()
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 1))
K = kernelens.empirical_ntk(model, x, output="trace")  # [200, 200]
fig = plot.spectrum(K.double(), label="ReLU MLP, width 256", title="Empirical NTK on 200 digits")
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "ntk_spectrum.png", dpi=110)
