"""Resolution of a job configuration into an ordered plan of workflows, with validation.

Runs at create/update time (so bad input is refused before anything is written) and again in
PLANNING (so a run fails cleanly when a workflow disappeared or its parameters no longer fit).
Every problem is a ``ValidationError`` naming the field in its wire (camelCase) spelling.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from prefect import Flow

from jobs_plugin import catalog, registry
from jobs_plugin.errors import ValidationError
from jobs_plugin.models import (
    OPERATION_TYPES,
    Isolation,
    JobConfigJson,
    JobType,
    Operation,
    StepSpec,
    Workflow,
)

_FLOW_NAME_BANNED = re.compile(r"[/%&><]")


@dataclass(frozen=True)
class PlannedStep:
    """One workflow of a plan, with everything needed to run it."""

    position: int
    workflow_id: str
    name: str
    entrypoint: str
    parameters: dict[str, Any]
    isolation: Isolation
    retries: int
    retry_delay_seconds: float
    timeout_seconds: float | None
    flow: Flow[..., Any] = field(compare=False, repr=False)
    deployment: str | None = None
    """``flow/deployment`` a ``deployment``-isolated step runs as."""

    def describe(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "workflowId": self.workflow_id,
            "name": self.name,
            "entrypoint": self.entrypoint,
            "parameters": self.flow.serialize_parameters(self.parameters),
            "isolation": self.isolation.value,
            "retries": self.retries,
            "retryDelaySeconds": self.retry_delay_seconds,
            "timeoutSeconds": self.timeout_seconds,
            "deployment": self.deployment,
        }


def builtin_workflow_id(operation: Operation | str) -> str:
    """The workflow a job with an ``operation`` and no execution order runs."""
    return f"operation.{Operation(operation).value}"


def check_anatomy(job_type: JobType | str | None, operation: Operation | str | None) -> None:
    """The seed's four kinds of jobs: extract a file; map, delete or export a workbook/sheet."""
    if operation is None:
        return
    op = Operation(operation)
    if job_type is None:
        raise ValidationError("type", f"is required with operation {op.value!r}")
    allowed = OPERATION_TYPES[op]
    if JobType(job_type) not in allowed:
        kinds = " or ".join(sorted(t.value for t in allowed))
        raise ValidationError(
            "operation",
            f"{op.value!r} does not apply to type {JobType(job_type).value!r} (it acts on {kinds})",
        )


def operation_parameters(
    job_type: JobType | str | None,
    source: str | None,
    destination: str | None,
    config: dict[str, Any] | None,
) -> dict[str, Any]:
    """The parameters of the built-in workflow a job with an ``operation`` (and no execution
    order) runs: the job's own ``type``, ``source``, ``destination`` and ``config``."""
    values = {
        "type": JobType(job_type).value if job_type is not None else None,
        "source": source,
        "destination": destination,
        "config": config,
    }
    return {key: value for key, value in values.items() if value is not None}


def steps_of(
    config: JobConfigJson | dict[str, Any] | None,
    operation: Operation | str | None,
    operation_params: dict[str, Any] | None = None,
) -> list[StepSpec]:
    parsed = (
        config if isinstance(config, JobConfigJson) else JobConfigJson.model_validate(config or {})
    )
    steps = list(parsed.workflow_execution_order)
    if not steps and operation is not None:
        steps = [
            StepSpec(workflow_id=builtin_workflow_id(operation), parameters=operation_params or {})
        ]
    if not steps:
        raise ValidationError(
            "jobConfigJson.workflowExecutionOrder",
            "is empty: list at least one workflow id (or give the job an operation)",
        )
    return steps


def plan(
    organization_id: str,
    *,
    job_name: str,
    job_type: JobType | str | None,
    operation: Operation | str | None,
    job_config_json: JobConfigJson | dict[str, Any] | None,
    source: str | None = None,
    destination: str | None = None,
    config: dict[str, Any] | None = None,
) -> list[PlannedStep]:
    """Resolve and validate every step; raise on the first problem."""
    if _FLOW_NAME_BANNED.search(job_name):
        raise ValidationError("name", "must not contain any of / % & > <")
    check_anatomy(job_type, operation)
    implicit = operation_parameters(job_type, source, destination, config)
    steps = steps_of(job_config_json, operation, implicit)
    workflows = catalog.find_workflows([s.workflow_id for s in steps], organization_id)
    planned: list[PlannedStep] = []
    for position, step in enumerate(steps):
        # The step an operation implies is the job's own: its errors name `operation`.
        where = (
            f"jobConfigJson.workflowExecutionOrder[{position}]"
            if _has_order(job_config_json)
            else "operation"
        )
        workflow = workflows.get(step.workflow_id)
        if workflow is None:
            raise ValidationError(where, f"unknown workflow id {step.workflow_id!r}")
        planned.append(_plan_step(position, step, workflow, where))
    return planned


def _has_order(config: JobConfigJson | dict[str, Any] | None) -> bool:
    if isinstance(config, JobConfigJson):
        return bool(config.workflow_execution_order)
    return bool(
        (config or {}).get("workflowExecutionOrder")
        or (config or {}).get("workflow_execution_order")
    )


def plan_snapshot(snapshot: dict[str, Any]) -> list[PlannedStep]:
    """The plan of a frozen job version (what a run executes)."""
    return plan(
        snapshot["organization_id"],
        job_name=snapshot["name"],
        job_type=snapshot.get("type"),
        operation=snapshot.get("operation"),
        job_config_json=snapshot.get("job_config_json"),
        source=snapshot.get("source"),
        destination=snapshot.get("destination"),
        config=snapshot.get("config"),
    )


def _plan_step(position: int, step: StepSpec, workflow: Workflow, where: str) -> PlannedStep:
    try:
        flow = registry.load_flow(workflow.entrypoint)
    except ValidationError as exc:
        raise ValidationError(where, f"workflow {workflow.id!r}: {exc.message}") from exc
    try:
        parameters = _validated(workflow.entrypoint, step.parameters)
    except Exception as exc:
        raise ValidationError(f"{where}.parameters", _first_line(exc)) from exc
    isolation = step.isolation or workflow.isolation
    return PlannedStep(
        position=position,
        workflow_id=workflow.id,
        name=workflow.name,
        entrypoint=workflow.entrypoint,
        parameters=parameters,
        isolation=isolation,
        retries=workflow.retries if step.retries is None else step.retries,
        retry_delay_seconds=(
            workflow.retry_delay_seconds
            if step.retry_delay_seconds is None
            else step.retry_delay_seconds
        ),
        timeout_seconds=workflow.timeout_seconds
        if step.timeout_seconds is None
        else step.timeout_seconds,
        flow=flow,
        deployment=(workflow.deployment or default_deployment(flow, workflow.id))
        if isolation is Isolation.DEPLOYMENT
        else None,
    )


def default_deployment(flow: Flow[..., Any], workflow_id: str) -> str:
    """The deployment a ``deployment``-isolated workflow runs as unless it names one:
    ``<flow name>/<workflow id>`` (what ``prefect-jobs workflows deploy`` creates)."""
    return f"{flow.name}/{workflow_id}"


def _validated(entrypoint: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Prefect's validation of a step's parameters, cached: a job runs the same steps again
    and again. A deep copy goes out so that a workflow cannot change the cached values."""
    key = json.dumps(parameters, sort_keys=True, default=str)
    return copy.deepcopy(_validate_cached(entrypoint, key))


@lru_cache(maxsize=1024)
def _validate_cached(entrypoint: str, parameters_json: str) -> dict[str, Any]:
    flow = registry.load_flow(entrypoint)
    return flow.validate_parameters(json.loads(parameters_json))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:500]
