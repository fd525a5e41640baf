"""The orchestration seam: steps keep their retries in both modes; flows validate in both."""

from __future__ import annotations

import time

import pytest
from mlops_pipeline.errors import InvalidInputError
from mlops_pipeline.settings import get_settings
from mlops_pipeline.tasks.orchestration import Step, run_flow, step
from prefect import flow, task
from prefect.context import FlowRunContext, TaskRunContext


class Flaky:
    """Fails `failures` times, then returns how many calls it took."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.saw_task_run: list[bool] = []

    def __call__(self) -> int:
        self.calls += 1
        self.saw_task_run.append(TaskRunContext.get() is not None)
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls}")
        return self.calls


@pytest.fixture
def direct(monkeypatch):
    monkeypatch.setenv("MLOPS_ORCHESTRATE", "never")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_step_outside_a_flow_run_retries_as_its_task_declares():
    flaky = Flaky(failures=2)
    retried = step(flaky.__call__, name="flaky", retries=2, retry_delay_seconds=0)
    assert retried() == 3
    assert flaky.saw_task_run == [False, False, False]

    once = Flaky(failures=2)
    with pytest.raises(ConnectionError, match="attempt 2"):
        step(once.__call__, name="once", retries=1, retry_delay_seconds=0)()
    assert once.calls == 2


def test_retry_delays_follow_prefect_semantics(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("mlops_pipeline.tasks.orchestration.time.sleep", slept.append)
    flaky = Flaky(failures=3)
    step(flaky.__call__, name="delays", retries=3, retry_delay_seconds=[1, 5])()
    assert slept == [1.0, 5.0, 5.0]


def test_a_retry_condition_is_refused_because_direct_mode_cannot_honour_it():
    with pytest.raises(ValueError, match="retry_condition_fn"):
        Step(task(lambda: 1, retry_condition_fn=lambda *a: True))


def test_step_keeps_the_function_and_task_metadata():
    @step(retries=4)
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert add(1, 2) == 3
    assert add.fn(2, 3) == 5
    assert add.name == "add"
    assert add.task.retries == 4
    assert add.__doc__ == "Add two numbers."


@flow
def counting_flow(times: int, flaky_failures: int = 0) -> dict:
    flaky = Flaky(flaky_failures)
    result = step(flaky.__call__, name="flaky-in-flow", retries=2, retry_delay_seconds=0)()
    return {
        "times": times * 2,
        "in_flow_run": FlowRunContext.get() is not None,
        "calls": result,
        "task_runs": flaky.saw_task_run,
    }


def test_direct_mode_validates_and_casts_parameters_without_prefect(direct):
    result = run_flow(counting_flow, times="21", flaky_failures=1)
    assert result == {"times": 42, "in_flow_run": False, "calls": 2, "task_runs": [False, False]}
    with pytest.raises(InvalidInputError, match="counting_flow|counting-flow"):
        run_flow(counting_flow, times="many")


def test_orchestrated_mode_runs_steps_as_prefect_tasks_with_the_same_retries(
    prefect_harness, monkeypatch
):
    monkeypatch.setenv("MLOPS_ORCHESTRATE", "always")
    get_settings.cache_clear()
    try:
        result = run_flow(counting_flow, times="21", flaky_failures=1)
    finally:
        get_settings.cache_clear()
    assert result == {"times": 42, "in_flow_run": True, "calls": 2, "task_runs": [True, True]}


@flow
def parent_flow(times: int) -> dict:
    child = run_flow(counting_flow, times=times)
    return {"child": child, "parent_in_flow_run": FlowRunContext.get() is not None}


def test_flows_call_flows_through_the_seam_in_either_mode(direct):
    assert run_flow(parent_flow, times=2) == {
        "child": {"times": 4, "in_flow_run": False, "calls": 1, "task_runs": [False]},
        "parent_in_flow_run": False,
    }


def test_a_flow_called_inside_a_flow_run_is_a_tracked_subflow(prefect_harness, direct):
    # settings say direct, but the parent is a flow run (as under a worker): the child follows it
    result = parent_flow(times=2)
    assert result["parent_in_flow_run"] is True
    assert result["child"]["in_flow_run"] is True and result["child"]["task_runs"] == [True]


@flow
def logging_flow() -> str:
    import logging

    logging.getLogger("mlops_pipeline.domain_example").warning("domain says hello")
    return str(FlowRunContext.get().flow_run.id)


def test_domain_logs_reach_the_run_log_inside_a_run_and_stay_quiet_outside(
    prefect_harness, recwarn
):
    import logging

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logging.getLogger("mlops_pipeline.domain_example").warning("outside any run")
    assert not [w for w in recwarn if "flow run id" in str(w.message)]

    flow_run_id = logging_flow()
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        for _ in range(50):  # logs are shipped in the background: poll, bounded
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            messages = [entry.message for entry in logs]
            if "domain says hello" in messages:
                break
            time.sleep(0.2)
    assert "domain says hello" in messages, messages
