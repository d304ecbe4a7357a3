"""Running imgrad on Dask: choosing the scheduler, directory batches and huge images on a cluster.

Schedulers
----------
Every entry point takes ``scheduler``:

- ``None``: Dask's own setting if there is one (the ``DASK_SCHEDULER_ADDRESS`` environment
  variable, or ``scheduler-address`` in an already imported Dask config), else ``"threads"``.
- ``"threads"``: threads of this process (no Dask needed). Directory batches use
  :func:`imgrad.batch.process_tree` itself.
- ``"local:N"``: a Dask ``LocalCluster`` of ``N`` single-threaded worker processes on
  127.0.0.1 (HTTP routes on a free loopback port), started for the call and closed after it.
- ``"tcp://host:8786"`` (any address Dask accepts, e.g. ``tls://``, ``ucx://``): an existing
  cluster. imgrad must be installed on the scheduler and on every worker (the workers import
  ``imgrad`` to run the tasks); files are named by path, so inputs and outputs must be on storage
  that every worker sees at the same path.
- a ``distributed.Client``: used as is and left open.

Results do not depend on the scheduler: every file and every tile runs the same code with the
same arithmetic, wherever it runs (see :mod:`imgrad.tiled` for why tiles are exact).

Failures
--------
A file that cannot be read, computed or written is a failure ``(path, reason)`` and never stops
the batch; errors are caught on the worker and not retried (they would fail again). A worker
that dies (killed, out of memory) is not a failure of the file: Dask runs its tasks again on
another worker, and only a file whose tasks killed ``distributed.scheduler.allowed-failures``
workers (3 by default) is reported, with the reason ``KilledWorker``.

The ``imgrad[dask]`` extra (``dask[distributed]``, ``tifffile``, ``zarr``) is imported only when
a Dask scheduler is used; without it the message says ``pip install 'imgrad[dask]'``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from .io import DEFAULT_MAX_PIXELS
from .tiled import require

__all__ = [
    "SCHEDULER_ENV",
    "client_for",
    "executor_for",
    "map_files",
    "process_tree",
    "resolve_scheduler",
]

#: Dask's environment variable naming the scheduler to connect to.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
_FORMS = "None, 'threads', 'local:N', a scheduler address such as 'tcp://host:8786', or a Client"


def resolve_scheduler(scheduler: Any = None) -> Any:
    """The scheduler a call uses: ``scheduler``, else Dask's setting, else ``"threads"``.

    Strings are checked (``ValueError`` quoting the bad one); a ``local:N`` count must be >= 1.
    """
    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
        if scheduler is None and "dask" in sys.modules:  # a config the caller set up
            scheduler = sys.modules["dask"].config.get("scheduler-address", None)
        return scheduler or "threads"
    if not isinstance(scheduler, str):
        if hasattr(scheduler, "get_executor") and hasattr(scheduler, "submit"):
            return scheduler  # a distributed.Client
        raise TypeError(f"scheduler must be {_FORMS}; got {type(scheduler).__name__}")
    if scheduler == "threads" or "://" in scheduler:
        return scheduler
    if scheduler.startswith("local:"):
        count = scheduler.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"'local:N' needs a worker count N >= 1; got {scheduler!r}")
        return scheduler
    raise ValueError(f"scheduler must be {_FORMS}; got {scheduler!r}")


@contextmanager
def client_for(scheduler: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for a resolved scheduler other than ``"threads"``.

    ``local:N`` starts a ``LocalCluster`` (bound to 127.0.0.1, HTTP on a free loopback port) for
    the duration of the ``with`` block; an address connects to that scheduler; a ``Client`` is
    yielded as is.
    """
    if not isinstance(scheduler, str):
        yield scheduler
        return
    distributed = require("distributed", "running on a Dask cluster")
    if scheduler.startswith("local:"):
        with _workers_ignore_ctrl_c():
            cluster = distributed.LocalCluster(
                n_workers=int(scheduler.removeprefix("local:")),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # its HTTP routes on a free loopback port
            )
        with cluster, distributed.Client(cluster) as client, _quiet_after_interrupt():
            yield client
        return
    with distributed.Client(scheduler) as client, _quiet_after_interrupt():
        yield client


@contextmanager
def _quiet_after_interrupt() -> Iterator[None]:
    """After Ctrl-C, silence the logs of the tasks the closing client cuts short (Dask and
    tornado log each as an error with its traceback); the interrupt itself is reported."""
    try:
        yield
    except KeyboardInterrupt:
        for name in list(logging.root.manager.loggerDict):  # Dask sets some children's levels
            if name.split(".")[0] in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Ignore SIGINT while local workers start, so that they inherit it: Ctrl-C (sent to the
    whole process group) then interrupts this process alone, which closes the cluster, instead of
    every worker printing its own ``KeyboardInterrupt`` traceback. Only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def executor_for(scheduler: Any) -> Iterator[tuple[Executor, int]]:
    """An executor for tiles and how many calls to keep in flight on it.

    ``"threads"`` gives a thread pool of this process (torch releases the GIL); a Dask scheduler
    gives the client's ``concurrent.futures`` executor, two calls per worker thread in flight.
    """
    resolved = resolve_scheduler(scheduler)
    if resolved == "threads":
        threads = os.cpu_count() or 1
        with ThreadPoolExecutor(threads, thread_name_prefix="imgrad-tile") as pool:
            yield pool, 2 * threads
        return
    with client_for(resolved) as client:
        yield client.get_executor(pure=False), 2 * max(1, sum(client.nthreads().values()))


def _guarded(function: Callable[[Any], None], item: Any) -> str | None:
    """Run ``function(item)`` on a worker; ``None`` when it worked, else a one-line reason.

    Catching here (not on the client) keeps the reason of any error, picklable or not, and stops
    Dask from retrying an error that would only happen again.
    """
    from .batch import failure_reason

    try:
        function(item)
    except Exception as error:
        return failure_reason("process", getattr(item, "source", str(item)), error)
    return None


def map_files(
    function: Callable[[Any], None],
    items: Sequence[Any],
    *,
    scheduler: Any,
    on_done: Callable[[Any, str | None], None],
    in_flight: int | None = None,
) -> None:
    """Run ``function(item)`` for every item on a Dask cluster; report each as it finishes.

    ``on_done(item, reason)`` gets ``reason=None`` on success, else the error's one-line reason
    (or ``"KilledWorker: ..."`` when the item's task killed too many workers). At most
    ``in_flight`` tasks (default: four per worker thread) are queued on the cluster at once, so
    millions of items never flood the scheduler. ``function`` and the items must be picklable,
    and ``function`` importable on the workers.
    """
    distributed = require("distributed", "running on a Dask cluster")
    with client_for(resolve_scheduler(scheduler)) as client:
        limit = in_flight or 4 * max(1, sum(client.nthreads().values()))
        todo = iter(items)
        futures = distributed.as_completed()
        owner: dict[str, Any] = {}

        def submit() -> bool:
            item = next(todo, None)
            if item is None:
                return False
            future = client.submit(_guarded, function, item, pure=False, retries=0)
            owner[future.key] = item
            futures.add(future)
            return True

        for _ in range(limit):
            if not submit():
                break
        for future in futures:
            item = owner.pop(future.key)
            try:
                reason = future.result()
            except distributed.KilledWorker as error:
                reason = f"KilledWorker: the worker running it died too often ({error})"
            finally:
                future.release()
            on_done(item, reason)
            submit()


def _process_task(task: Any, recipe: Any, root: Path, alpha: str, max_pixels: int | None) -> None:
    """One file of a tree on a worker: the checks and the call of :class:`imgrad.batch`."""
    from .batch import is_inside, make_folder, process_file

    make_folder(task.dest.parent)
    if not is_inside(task.dest.parent.resolve(), root):
        raise ValueError("it is outside the output directory (a symbolic link?)")
    process_file(task.source, task.dest, recipe, alpha=alpha, max_pixels=max_pixels)


def process_tree(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    recipe: Any,
    *,
    scheduler: Any = None,
    format: str = "png",
    patterns: Sequence[str] = (),
    recursive: bool = True,
    overwrite: bool = False,
    workers: int = 4,
    batch_size: int = 16,
    alpha: str = "composite",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_progress: Callable[[Any], None] | None = None,
    on_failure: Callable[[Any], None] | None = None,
) -> Any:
    """:func:`imgrad.batch.process_tree` on any scheduler: same arguments, outputs and summary.

    With ``scheduler`` resolving to ``"threads"`` this *is* :func:`imgrad.batch.process_tree`
    (``workers`` and ``batch_size`` apply there). On a Dask cluster each file is one task
    (read, compute, atomic write, all on the worker); the same plan (skips for resume, refused
    outputs), the same :class:`imgrad.batch.Progress` after each file and the same
    :class:`imgrad.batch.Failure` records, and the outputs are byte-identical. A
    ``KeyboardInterrupt`` stops the run (each output is written atomically) and the summary
    says ``interrupted``, as there.
    """
    from . import batch

    resolved = resolve_scheduler(scheduler)
    if resolved == "threads":
        return batch.process_tree(
            input_dir,
            output_dir,
            recipe,
            format=format,
            patterns=patterns,
            recursive=recursive,
            overwrite=overwrite,
            workers=workers,
            batch_size=batch_size,
            alpha=alpha,
            max_pixels=max_pixels,
            on_progress=on_progress,
            on_failure=on_failure,
        )
    run = batch.TreeRun.start(
        input_dir,
        output_dir,
        recipe,
        format=format,
        patterns=patterns,
        recursive=recursive,
        overwrite=overwrite,
        alpha=alpha,
        on_progress=on_progress,
        on_failure=on_failure,
    )
    function = partial(
        _process_task, recipe=recipe, root=run.root.resolve(), alpha=alpha, max_pixels=max_pixels
    )
    try:
        map_files(function, run.plan.tasks, scheduler=resolved, on_done=run.report)
    except KeyboardInterrupt:  # the client is closed and the cluster drops the queued tasks
        run.summary.interrupted = True
    return run.finish()
