"""kernelens on a Dask cluster: the same tiles as Dask tasks.

``client=`` on the tiled entry points (:func:`kernelens.empirical_ntk`, :class:`NTKOperator`,
:func:`kernelens.ntk.spectrum`, :meth:`Kernel.operator` / :meth:`Kernel.matvec`,
:func:`kernelens.linalg.solve_kernel_system` and the scikit-learn estimators) takes any
:class:`distributed.Client`: the embedded one from :func:`local_client`, or one connected to a
scheduler. ``client=None`` (the default) computes in-process. Data goes to the workers once;
results are combined in a fixed tile order, so they do not depend on the number of workers.

Needs the ``scale`` extra: ``pip install "kernelens[scale]"``.
"""

from ._client import check_client, local_client
from ._tasks import SharedData, map_tiles
from .kernel import DistributedKernelOperator, row_tiles
from .ntk import DistributedNTKOperator, distributed_empirical_ntk, ntk_block_plan

__all__ = [
    "DistributedKernelOperator",
    "DistributedNTKOperator",
    "SharedData",
    "check_client",
    "distributed_empirical_ntk",
    "local_client",
    "map_tiles",
    "ntk_block_plan",
    "row_tiles",
]
