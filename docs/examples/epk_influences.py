"""Which training digits support and oppose a prediction: the Exact Path Kernel.

A small MLP trained with SGD is exactly a kernel machine over its training points; each
point's share of a test prediction is its signed contribution divided by the sum of all
absolute contributions.
"""

import sys

import torch
from torch import nn

import kernelens.epk as epk
from kernelens import plot
from kernelens.data import digits

torch.manual_seed(0)
d = digits()
X, y = d.X_train[:200].double(), d.y_train[:200]
net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
traj = epk.fit(
    net,
    X,
    y,
    epochs=2,
    batch_size=50,
    loss="cross_entropy",
    optimizer=torch.optim.SGD(net.parameters(), lr=0.2),
    seed=0,
)
K = epk.ExactPathKernel(traj, output="log_probs")
x_test = d.X_test[:3].double()
A = K.attributions(x_test)  # [3, 200, 10]
pred = net(x_test).argmax(dim=1)
a = A[torch.arange(3), :, pred]  # [3, 200]: contributions to the predicted class
shares = a / a.abs().sum(dim=1, keepdim=True)
top = shares.abs().topk(6, dim=1).indices  # [3, 6], sorted by |share|
fig = plot.influences(
    top,
    shares.gather(1, top),
    train_images=X.reshape(-1, 8, 8),
    test_images=x_test.reshape(-1, 8, 8),
    train_labels=y,
    test_labels=pred,
)
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "epk_influences.png", dpi=110)
