"""Where independent tasks run: one after another in this process, or on a Dask cluster.

The sampler's step 4 (sampling chunks) and step 5 (slices of profile start points) and the
batch ingestion of several workspaces are lists of independent tasks. A task runner maps a
module-level function over such a list and yields the results **in task order**, whatever
order the workers finish them in, so the caller folds them exactly as a sequential loop would:
the same seed gives the same numbers in-process and on any number of workers (bit for bit at
the same torch thread count per process; workers use one thread).

* :class:`InProcess` (the default) runs the tasks one after another.
* :class:`DaskRunner` submits them to a ``dask.distributed`` client (a ``LocalCluster`` of
  worker processes, a cluster of dask-jobqueue's ``SLURMCluster``/``HTCondorCluster``, any
  scheduler address). Large shared inputs (the flow, the likelihood) are scattered to the
  workers once per runner and handed to every task. A task that raises is retried
  ``retries`` times; a task whose worker dies is rescheduled by the scheduler (up to
  ``distributed.scheduler.allowed-failures`` times).

:func:`open_runner` starts or connects to the cluster for the command-line options
``--workers N`` / ``--scheduler ADDRESS`` (or the runcard keys ``workers``/``scheduler``).
Dask is an optional dependency: ``pip install "smeft-pyhf[dask]"``.

Example:
    >>> runner = InProcess()
    >>> list(runner.map(pow, [(2, 3), (3, 2)], label="powers"))
    [8, 9]
    >>> list(runner.map(int, [("11",), ("21",)], shared={"base": 8}, label="octal"))
    [9, 17]
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from .exceptions import ConfigError

__all__ = [
    "CONNECT_TIMEOUT",
    "DASK_EXTRA",
    "DaskRunner",
    "InProcess",
    "TaskRunner",
    "chunks",
    "open_runner",
    "require_dask",
]

log = logging.getLogger(__name__)

DASK_EXTRA = 'pip install "smeft-pyhf[dask]"'
"""The install command of the optional Dask dependency."""

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a scheduler given by address before giving up."""


class TaskRunner(Protocol):
    """Maps a function over independent tasks and yields the results in task order."""

    n_workers: int

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], *,
            shared: Mapping[str, Any] | None = None, label: str = "tasks",
            level: int = logging.INFO) -> Iterator[Any]:
        """``fn(*task, **shared)`` for every task, in task order."""
        ...


class _Progress:
    """Logs ``label: k/n tasks done on <where> (t s)`` at every tenth of the tasks."""

    def __init__(self, label: str, total: int, where: str, level: int) -> None:
        self.label, self.total, self.where, self.level = label, total, where, level
        self.every = max(1, total // 10)
        self.done = 0
        self.start = time.perf_counter()

    def tick(self) -> None:
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            log.log(self.level, "  %s: %d/%d tasks done %s (%.1f s)", self.label, self.done,
                    self.total, self.where, time.perf_counter() - self.start)


class InProcess:
    """Runs every task in this process, one after another (the default runner).

    Example:
        >>> list(InProcess().map(max, [(1, 5), (7, 2)]))
        [5, 7]
    """

    n_workers = 1

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], *,
            shared: Mapping[str, Any] | None = None, label: str = "tasks",
            level: int = logging.INFO) -> Iterator[Any]:
        """``fn(*task, **shared)`` for every task, in task order."""
        progress = _Progress(label, len(tasks), "in this process", level)
        for task in tasks:
            out = fn(*task, **(shared or {}))
            progress.tick()
            yield out

    def __repr__(self) -> str:
        return "InProcess()"


class DaskRunner:
    """Runs tasks on the workers of a ``dask.distributed`` client.

    Shared inputs are scattered to every worker once (by object identity) and live there as
    long as the runner; results come back in task order. At most ``window`` tasks are in
    flight (default: four per worker connected at the time), so a consumer that stops early (step 4's
    ``target_ess``) wastes little, and finished results wait for their turn in a small buffer.

    Args:
        client: a connected ``distributed.Client``.
        retries: how often a task that raised is run again (``Client.submit(retries=)``).
        window: the largest number of tasks submitted but not yet yielded.

    Example:
        >>> from distributed import Client, LocalCluster  # doctest: +SKIP
        >>> with LocalCluster(n_workers=2, processes=True) as cluster, Client(cluster) as c:
        ...     list(DaskRunner(c).map(pow, [(2, 3), (3, 2)]))  # doctest: +SKIP
        [8, 9]
    """

    def __init__(self, client: Any, *, retries: int = 2, window: int | None = None) -> None:
        self.client = client
        self.retries = retries
        self.window = window
        self._shared: dict[int, tuple[Any, Any]] = {}

    @property
    def n_workers(self) -> int:
        """Workers connected to the scheduler now (at least 1)."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def _scatter(self, obj: Any) -> Any:
        """The future of ``obj`` on the workers (scattered on first use)."""
        key = id(obj)
        if key not in self._shared:
            future = self.client.scatter(obj, broadcast=True, hash=False)
            self._shared[key] = (obj, future)  # keeps obj alive, so its id is not reused
        return self._shared[key][1]

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], *,
            shared: Mapping[str, Any] | None = None, label: str = "tasks",
            level: int = logging.INFO) -> Iterator[Any]:
        """``fn(*task, **shared)`` for every task on the workers, yielded in task order.

        Raises:
            Exception: the exception of a task that failed ``retries + 1`` times, or
                ``distributed``'s ``KilledWorker`` for a task that killed its workers too often.
        """
        from distributed import as_completed

        handles = {k: self._scatter(v) for k, v in (shared or {}).items()}
        n = len(tasks)
        progress = _Progress(label, n, f"on {self.n_workers} Dask worker(s)", level)
        token = uuid.uuid4().hex[:8]
        index: dict[str, int] = {}
        finished: dict[int, Any] = {}
        pending = as_completed(loop=self.client.loop)
        submitted = yielded = 0
        try:
            while yielded < n:
                # workers may join (a batch job that starts) or leave while the step runs
                window = self.window or 4 * self.n_workers
                while submitted < n and submitted - yielded < window:
                    future = self.client.submit(fn, *tasks[submitted], **handles,
                                                key=f"{label}-{token}-{submitted}",
                                                retries=self.retries, pure=False)
                    index[future.key] = submitted
                    pending.add(future)
                    submitted += 1
                future = next(pending)
                finished[index.pop(future.key)] = future.result()
                progress.tick()
                while yielded in finished:
                    out = finished.pop(yielded)
                    yielded += 1
                    yield out
        finally:
            leftover = list(pending.futures)
            if leftover:
                self.client.cancel(leftover)

    def __repr__(self) -> str:
        return f"DaskRunner({self.client!r})"


def require_dask() -> Any:
    """Import and return ``distributed``, or explain how to install it.

    Raises:
        ConfigError: when Dask is not installed; the message names the extra to install.
    """
    try:
        import distributed
    except ImportError as err:
        raise ConfigError(
            "running on a Dask cluster (--workers, --scheduler, or the runcard keys workers/"
            "scheduler) needs dask.distributed, which is not installed",
            where="cluster",
            hint=f"install the optional dependency: {DASK_EXTRA}; or run in-process "
            "(no --workers/--scheduler)",
        ) from err
    return distributed


def _local_cluster(distributed: Any, workers: int, device: str) -> Any:
    """A ``LocalCluster`` of ``workers`` single-threaded processes (one per GPU on CUDA when
    dask-cuda is installed)."""
    common = {"n_workers": workers, "threads_per_worker": 1, "dashboard_address": ":0",
              "silence_logs": logging.WARNING}
    if device.startswith("cuda"):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            log.warning("dask-cuda is not installed: the %d worker processes share the GPU(s) "
                        "this process sees (pip install dask-cuda for one worker per GPU)",
                        workers)
        else:
            import torch

            gpus = ",".join(str(i) for i in range(min(workers, torch.cuda.device_count())))
            log.info("starting %d Dask CUDA workers on GPUs %s", workers, gpus)
            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=gpus, **common)
    return distributed.LocalCluster(processes=True, **common)


@contextlib.contextmanager
def open_runner(*, workers: int | None = None, scheduler: str | None = None,
                device: str = "cpu", retries: int = 2) -> Iterator[DaskRunner | None]:
    """Start or connect to a Dask cluster for the duration of a ``with`` block.

    Args:
        workers: start a ``LocalCluster`` of this many worker processes (one thread each).
        scheduler: connect to the scheduler at this address (``tcp://host:8786``) instead,
            e.g. of a dask-jobqueue cluster; the cluster's workers are used as they are.
        device: the torch device of the fit; ``cuda...`` starts one worker per GPU when
            dask-cuda is installed.
        retries: passed to :class:`DaskRunner`.

    Yields:
        A :class:`DaskRunner`, or ``None`` (run in-process) when neither is given.

    Raises:
        ConfigError: both given, ``workers < 1``, Dask not installed, or the scheduler cannot
            be reached within :data:`CONNECT_TIMEOUT` seconds (the address is in the message).

    Example:
        >>> with open_runner() as runner:
        ...     print(runner)
        None
    """
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and scheduler is not None:
        raise ConfigError("workers and scheduler exclude each other", where="cluster",
                          hint="give --workers N for a local cluster or --scheduler ADDRESS "
                          "for a running one")
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"workers={workers!r} must be >= 1", where="cluster",
                          hint="give the number of worker processes")
    distributed = require_dask()
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT,
                                            set_as_default=False)
            except (OSError, TimeoutError, ValueError) as err:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at {scheduler} within "
                    f"{CONNECT_TIMEOUT:g} s ({type(err).__name__}: {err})",
                    where="--scheduler",
                    hint="start the cluster first and pass its scheduler address "
                    "(cluster.scheduler_address), or use --workers N for a local cluster",
                ) from err
            stack.enter_context(client)
            log.info("connected to the Dask scheduler at %s (%d workers)", scheduler,
                     len(client.scheduler_info().get("workers", {})))
        else:
            cluster = stack.enter_context(_local_cluster(distributed, int(workers), device))
            client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
            log.info("started a local Dask cluster of %d worker processes", workers)
        yield DaskRunner(client, retries=retries)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive slices of at most ``size`` out of ``n``.

    Example:
        >>> chunks(5, 2)
        [(0, 2), (2, 4), (4, 5)]
    """
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)] if n else []

