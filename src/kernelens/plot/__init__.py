"""Figures users ask for, each returned as a :class:`matplotlib.figure.Figure`.

- :func:`spectrum`: an NTK (or any kernel) spectrum, eigenvalue vs rank and cumulative share;
- :func:`influences`: the training points that support and oppose each prediction (EPK), as
  an image grid or a table;
- :func:`metric`: an RFM metric ``M`` as a heatmap with its diagonal;
- :func:`learning_curves`: error or accuracy vs training-set size, with spread bands.

The figures are built without :mod:`matplotlib.pyplot`, so no global state is touched and
nothing is shown unless you ask (``fig.savefig(...)``, or return it in a notebook).
"""

from ._curves import learning_curves
from ._influences import influences
from ._metric import metric
from ._spectrum import spectrum

__all__ = ["influences", "learning_curves", "metric", "spectrum"]
