"""A run in the Prefect UI: its progress artifact reaches 100% and its markdown artifacts hold
the outcome and the plan, read back from the session's real Prefect server."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.utilities.asyncutils import run_coro_as_sync

import jobs_plugin as jp
from jobs_plugin import artifacts


def _artifacts_of(flow_run_id: str) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            return list(
                await client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                    )
                )
            )

    return run_coro_as_sync(read())


def test_a_completed_run_shows_its_progress_plan_and_outcome(catalog_url: str) -> None:
    job = jp.create_job(
        name="shown",
        job_config_json={
            "workflowExecutionOrder": [
                {"workflowId": "test.chunks", "parameters": {"count": 3}},
                "test.noop",
            ]
        },
    )
    run = jp.execute(job.id)
    assert run.status.value == "COMPLETED" and run.prefect_flow_run_id
    by_key = {a.key: a for a in _artifacts_of(run.prefect_flow_run_id)}

    progress = by_key[artifacts.artifact_key("progress", run.id)]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert progress.description == f"{run.parts} of {run.parts} parts processed (100%)"

    summary = by_key[artifacts.artifact_key("summary", run.id)]
    assert summary.type == "markdown"
    assert summary.data.startswith("# shown: COMPLETED")
    assert "2 of 2 workflows completed" in summary.data
    plan = summary.data[summary.data.index("## Plan") :]
    assert "`test.chunks`" in plan and "`test.noop`" in plan
    assert plan.index("test.chunks") < plan.index("test.noop")


def test_a_failed_run_says_so(catalog_url: str) -> None:
    job = jp.create_job(
        name="doomed",
        job_config_json={
            "workflowExecutionOrder": [{"workflowId": "test.fail", "parameters": {"message": "x"}}]
        },
    )
    run = jp.execute(job.id)
    assert run.status.value == "FAILED" and run.prefect_flow_run_id
    by_key = {a.key: a for a in _artifacts_of(run.prefect_flow_run_id)}
    outcome = by_key[artifacts.artifact_key("summary", run.id)].data
    assert outcome.startswith("# doomed: FAILED") and "test.fail" in outcome
    assert float(by_key[artifacts.artifact_key("progress", run.id)].data) < 100.0


def test_artifact_keys_are_what_prefect_accepts() -> None:
    key = artifacts.artifact_key("plan", "us_jr_AbC_12")
    assert key == "prefect-jobs-plan-us-jr-abc-12"
