"""Learning curves of kernel classifiers on digits: Laplace vs Gaussian kernel.

Test error against the number of training points, mean and spread over three random subsets.
"""

import sys

import numpy as np

from kernelens import plot
from kernelens.data import digits
from kernelens.kernels import KernelClassifier

d = digits()
X, y = d.X_train.numpy(), d.y_train.numpy()
sizes = [50, 100, 200, 400, 800]
curves = {}
for kernel, bandwidth in (("laplace", 3.0), ("gaussian", 3.0)):
    means, stds = [], []
    for n in sizes:
        errs = []
        for seed in range(3):
            idx = np.random.default_rng(seed).choice(len(X), n, replace=False)
            clf = KernelClassifier(kernel, bandwidth=bandwidth, alpha=1e-2).fit(X[idx], y[idx])
            errs.append(1 - clf.score(d.X_test.numpy(), d.y_test.numpy()))
        means.append(np.mean(errs))
        stds.append(np.std(errs))
    curves[f"{kernel} kernel"] = (sizes, means, stds)
fig = plot.learning_curves(curves, ylabel="test error", logy=True, title="Digits")
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "learning_curves.png", dpi=110)
