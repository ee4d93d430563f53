"""An embedded two-worker Dask cluster shared by the distributed tests (a few seconds to start)."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed")


@pytest.fixture(scope="session")
def client():
    from kernelens.distributed import local_client

    with local_client(n_workers=2, threads_per_worker=1) as c:
        yield c


@pytest.fixture(scope="session")
def client1():
    from kernelens.distributed import local_client

    with local_client(n_workers=1, threads_per_worker=1) as c:
        yield c
