"""Tiles as Dask tasks: data goes to the workers once, results come back in tile order.

Every distributed computation in kernelens is a *tile plan* (a list of independent, pure tasks
fixed by the problem size and the memory budget, never by the number of workers) mapped over a
client. Each tile's result is computed by one task, and results are combined by the caller in
tile order, never in completion order, so the answer is bitwise identical for any number of
workers and across runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from .._progress import progress
from ._client import check_client, require_distributed

__all__ = ["SharedData", "map_tiles"]

#: Rounds of re-scattering shared data and resubmitting tiles whose inputs were lost.
_RESUBMIT_ROUNDS = 3
#: Retries Dask grants each task when its worker dies (tasks are pure, so a retry is safe).
_TASK_RETRIES = 3


class Payload:
    """An object in transit: its cloudpickle bytes and a token naming this version of it.

    Workers keep the bytes (Dask moves them between workers as plain bytes; its own serialiser
    for ``torch.nn.Module`` would rebuild modules without their hook dictionaries) and unpickle
    each payload once per worker process (:func:`resolve`).
    """

    __slots__ = ("data", "token")

    def __init__(self, obj: Any) -> None:
        import cloudpickle

        self.token = uuid.uuid4().hex
        self.data = cloudpickle.dumps(obj)

    def __getstate__(self) -> tuple[str, bytes]:
        return self.token, self.data

    def __setstate__(self, state: tuple[str, bytes]) -> None:
        self.token, self.data = state


#: Unpickled payloads of this (worker) process, most recent last.
_RESOLVED: OrderedDict[str, Any] = OrderedDict()
#: Payloads kept unpickled per worker process (a job shares a handful: model, inputs, vector).
_RESOLVED_MAX = 16


def resolve(payload: Any) -> Any:
    """The object a :class:`Payload` carries (unpickled once per process); others unchanged."""
    if not isinstance(payload, Payload):
        return payload
    if payload.token not in _RESOLVED:
        import cloudpickle

        _RESOLVED[payload.token] = cloudpickle.loads(payload.data)
        while len(_RESOLVED) > _RESOLVED_MAX:
            _RESOLVED.popitem(last=False)
    _RESOLVED.move_to_end(payload.token)
    return _RESOLVED[payload.token]


def _run_tile(fn: Callable[..., Any], tile: Any, *payloads: Any, **kwargs: Any) -> Any:
    return fn(tile, *(resolve(p) for p in payloads), **kwargs)


class SharedData:
    """Objects (tensors, a model's state) sent to every worker once and replicated there.

    ``broadcast=True`` puts a copy on every worker, so losing one worker loses no data; if every
    copy is lost (all workers restarted), :func:`map_tiles` scatters the objects again from the
    local originals kept here.
    """

    def __init__(self, client: Any, **objects: Any) -> None:
        self.client = client
        self.objects = objects
        self.futures: dict[str, Any] = {}
        self.scatter()

    def scatter(self) -> None:
        """(Re)send every object to all workers."""
        for name, obj in self.objects.items():
            self.put(name, obj)

    def put(self, name: str, obj: Any) -> None:
        """Add (or replace) one object and send it to all workers."""
        self.objects[name] = obj
        self.futures[name] = self.client.scatter(Payload(obj), broadcast=True, hash=False)

    def __getitem__(self, name: str) -> Any:
        return self.futures[name]


def _is_lost_data(err: BaseException) -> bool:
    distributed = require_distributed()
    return isinstance(err, distributed.client.FutureCancelledError | asyncio.CancelledError)


def map_tiles(
    client: Any,
    fn: Callable[..., Any],
    tiles: Sequence[Any],
    shared: SharedData | None = None,
    *,
    shared_names: Sequence[str] = (),
    desc: str = "tiles",
    show_progress: bool | None = None,
    **kwargs: Any,
) -> list[Any]:
    """``[fn(tile, *shared_objects, **kwargs) for tile in tiles]`` on the workers.

    Args:
        client: a running :class:`distributed.Client`.
        fn: a pure, picklable function (module level).
        tiles: small per-task descriptions (slices, index pairs).
        shared: data already on the workers; ``shared_names`` picks the objects passed to
            ``fn`` after the tile, in that order.
        desc: progress-bar label (the bar shows on a terminal only).
        **kwargs: plain keyword arguments passed to every task.

    Returns:
        Results in the order of ``tiles``.
    """
    check_client(client)
    distributed = require_distributed()
    results: list[Any] = [None] * len(tiles)
    pending = list(range(len(tiles)))
    for round_ in range(_RESUBMIT_ROUNDS + 1):
        args = [shared[name] for name in shared_names] if shared is not None else []
        futures = {
            client.submit(
                _run_tile, fn, tiles[i], *args, pure=False, retries=_TASK_RETRIES, **kwargs
            ): i
            for i in pending
        }
        lost: list[int] = []
        done = distributed.as_completed(list(futures), raise_errors=False)
        for future in progress(done, total=len(futures), desc=desc, enable=show_progress):
            i = futures[future]
            if future.status == "error":
                err = future.exception()
                if _is_lost_data(err) and round_ < _RESUBMIT_ROUNDS:
                    lost.append(i)
                    continue
                raise err
            if future.status == "cancelled":
                if round_ < _RESUBMIT_ROUNDS:
                    lost.append(i)
                    continue
                raise RuntimeError(
                    f"{desc}: a task was cancelled {_RESUBMIT_ROUNDS + 1} times (workers lost "
                    "again and again); check the cluster's health."
                )
            results[i] = future.result()
        if not lost:
            return results
        if shared is not None:
            shared.scatter()
        pending = sorted(lost)
    raise AssertionError("unreachable")  # pragma: no cover
