"""Steps over `mlops_pipeline.monitoring.captures`: list, claim, read and count a window of
captured traffic, and advance the deployment's watermark once the window's results are saved.

Monitoring at volume maps `summarise_partition` over the window's capture files
(`map_partitions`): inside a Prefect flow run through the flow's task runner (a
`ThreadPoolTaskRunner`, or prefect-dask's `DaskTaskRunner` for `--task-runner dask[:address]`,
see `task_runner_for`); in direct mode, where Prefect offers no `.map()`, through the executor
that task runner wraps (a thread pool, or a `distributed.Client` on the same cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.monitoring import captures, partitions
from mlops_pipeline.tasks.orchestration import step
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

list_new_captures = step(captures.list_new_captures, cache_policy=NO_CACHE)
claim_new_captures = step(captures.claim_new_captures, cache_policy=NO_CACHE)
release_claim = step(captures.release_claim, cache_policy=NO_CACHE)
read_captures = step(captures.read_captures, cache_policy=NO_CACHE)
summarise_window = step(captures.summarise_window, cache_policy=NO_CACHE)
commit_watermark = step(captures.commit_watermark, cache_policy=NO_CACHE)
summarise_partition = step(
    partitions.summarise_partition, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1
)

logger = logging.getLogger(__name__)

LOCAL_DASK_WORKERS = 2  # `dask` without an address: a LocalCluster of this many workers
# worker processes on this machine only, no dashboard (it needs bokeh)
LOCAL_CLUSTER = {
    "n_workers": LOCAL_DASK_WORKERS,
    "threads_per_worker": 1,
    "host": "127.0.0.1",
    "dashboard_address": None,
}
THREADS = 4  # partitions summarised at once by the thread pool (numpy/arrow release the GIL)


def parse_task_runner(text: str) -> tuple[str, str | None]:
    """`threads`, `dask` or `dask:ADDRESS` (a scheduler, e.g. tcp://10.0.0.5:8786) as
    (kind, address). Raises InvalidInputError naming the value otherwise."""
    kind, _, address = text.strip().partition(":")
    if kind == "threads" and not address:
        return "threads", None
    if kind == "dask":
        return "dask", address or None
    raise InvalidInputError(
        f"--task-runner '{text}' is not threads, dask or dask:ADDRESS.",
        hint="Use threads (the default), dask (a local Dask cluster) or "
        "dask:tcp://HOST:8786 (an existing Dask scheduler).",
    )


def task_runner_for(text: str) -> TaskRunner:
    """The Prefect task runner of a `--task-runner` value (see `parse_task_runner`): a
    `ThreadPoolTaskRunner`, or a `DaskTaskRunner` on the scheduler at the address, or on a
    temporary `LocalCluster` of `LOCAL_DASK_WORKERS` workers."""
    kind, address = parse_task_runner(text)
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=THREADS)
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs=LOCAL_CLUSTER,
    )


# a map: the summaries of the calls, yielded in call order as they are ready
Mapper = Callable[[list[dict[str, Any]]], Iterator[partitions.PartitionSummary]]


def _summarise_directly(**kwargs: Any) -> partitions.PartitionSummary:
    """`summarise_partition` with its retries, outside a flow run; a module function, so a
    Dask worker process unpickles it by name."""
    return summarise_partition.call_directly(**kwargs)


@contextmanager
def _direct_mapper(text: str) -> Iterator[Mapper]:
    """Direct mode's map: the executor the Prefect task runner of `text` would use."""
    kind, address = parse_task_runner(text)
    if kind == "threads":
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            yield lambda calls: pool.map(lambda kw: _summarise_directly(**kw), calls)
        return
    from distributed import Client, LocalCluster

    if address:
        client, cluster = Client(address), None
    else:
        cluster = LocalCluster(**LOCAL_CLUSTER)
        client = Client(cluster)
    try:

        def run(calls: list[dict[str, Any]]) -> Iterator[partitions.PartitionSummary]:
            futures = [client.submit(_summarise_directly, **kw, pure=False) for kw in calls]
            for future in futures:
                yield future.result()
                future.release()  # the worker may drop it: only the merged summary is kept

        yield run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _flow_map(calls: list[dict[str, Any]]) -> Iterator[partitions.PartitionSummary]:
    """Prefect's map through the current flow run's task runner."""
    if not calls:
        return
    shared = {key: unmapped(value) for key, value in calls[0].items() if key != "relpath"}
    shared["only"] = [kw.get("only") for kw in calls]  # differs per call: mapped like the paths
    futures = summarise_partition.task.map(relpath=[kw["relpath"] for kw in calls], **shared)
    for future in futures:
        yield future.result()


def map_partitions(
    task_runner: str | None,
    capture_uri: str,
    relpaths: list[str],
    features: dict[str, str],
    plans: list[partitions.ColumnPlan],
    feedback: Any = None,
) -> partitions.PartitionSummary:
    """Summarise every capture file of a window in parallel and merge the summaries in window
    order as they arrive; rows a later file repeats are summarised again alone and taken back
    out (see `monitoring.partitions`). `task_runner` is a `--task-runner` value, or None for
    one process with no pool (the reference for equality tests).

    Raises InvalidInputError for a bad `task_runner`; whatever a partition's read raises
    beyond the quarantined cases (after the step's retries).
    """
    base = {
        "capture_uri": capture_uri,
        "features": features,
        "plans": plans,
        "feedback": feedback,
        "only": None,
    }
    with _mapper(task_runner) as run:
        merged = partitions.merge_summaries(run([base | {"relpath": p} for p in relpaths]))
        repeats = partitions.repeated_keys(merged.keys_by_file)
        if repeats:
            again = [base | {"relpath": relpaths[i], "only": keys} for i, keys in repeats.items()]
            partitions.merge_summaries(run(again), merged, sign=-1)
    merged.keys_by_file = []
    return merged


def _flow_task_runner(task_runner: str) -> TaskRunner | None:
    """The active flow run's task runner when it is the kind `task_runner` asks for, else None
    (no flow run, or a deployment run given `dask` as a parameter: the default thread pool)."""
    kind, address = parse_task_runner(task_runner)
    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if kind == "threads":
        return runner if isinstance(runner, ThreadPoolTaskRunner) else None
    from prefect_dask import DaskTaskRunner

    if isinstance(runner, DaskTaskRunner) and address in (None, runner.address):
        return runner
    return None


@contextmanager
def _mapper(task_runner: str | None) -> Iterator[Mapper]:
    if task_runner is None:
        logger.info("summarising capture partitions in this process")
        yield lambda calls: (_summarise_directly(**kw) for kw in calls)
    elif (runner := _flow_task_runner(task_runner)) is not None:
        logger.info("summarising capture partitions through the flow's %s", type(runner).__name__)
        yield _flow_map
    else:
        logger.info("summarising capture partitions on %s outside a flow run", task_runner)
        with _direct_mapper(task_runner) as run:
            yield run
