"""Small builders of jobs and runs for the tests (the workflows are those of `tests.workflows`)."""

from __future__ import annotations

from typing import Any

import jobs_plugin as jp
from jobs_plugin import catalog
from jobs_plugin.models import Isolation, JobRun


def job_fields(name: str = "job", *steps: str | dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Keyword fields of a job running ``steps`` (default: one `test.noop`)."""
    order = list(steps) or ["test.noop"]
    return {"name": name, "job_config_json": {"workflowExecutionOrder": order}, **fields}


def make_job(
    name: str = "job",
    *steps: str | dict[str, Any],
    organization: str | None = None,
    **fields: Any,
) -> jp.JobPublic:
    """A job created through the public API."""
    return jp.create_job(organization=organization, **job_fields(name, *steps, **fields))


def step_rows(*workflow_ids: str) -> list[dict[str, Any]]:
    """Plan rows for ``catalog.set_plan``, as the engine records them."""
    return [
        {"position": i, "workflow_id": w, "name": w, "isolation": Isolation.INLINE}
        for i, w in enumerate(workflow_ids)
    ]


def planned_run(job: jp.JobPublic, *workflow_ids: str) -> JobRun:
    """A run of ``job`` in PLANNING with its plan recorded (no Prefect flow run behind it)."""
    run = catalog.create_run(job.id, job.organization_id)
    catalog.set_plan(run.id, step_rows(*(workflow_ids or ("test.noop",))))
    return catalog.get_run(run.id)
