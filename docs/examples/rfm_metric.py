"""The metric an RFM learns on the scaling task: weight on the three relevant coordinates.

The target ``y = 5 x1^3 + 10 x2^2 + 2 x3`` depends on three of 20 coordinates; the Average
Gradient Outer Product concentrates ``M`` on them.
"""

import sys

import torch

from kernelens import plot
from kernelens.data import rfm_scaling
from kernelens.rfm import RFMRegressor

s = rfm_scaling(500, 20, seed=0, dtype=torch.float64)
rfm = RFMRegressor().fit(s.X_train, s.y_train)
fig = plot.metric(rfm, feature_names=[f"x{i + 1}" for i in range(20)], title="RFM metric M")
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "rfm_metric.png", dpi=110)
