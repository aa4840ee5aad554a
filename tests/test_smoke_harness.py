from __future__ import annotations

from pathlib import Path

import jobs_plugin as jp
from jobs_plugin import JobStatus


def test_a_job_runs_to_completion(catalog_url: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    job = jp.create_job(
        name="harness",
        job_config_json={
            "workflowExecutionOrder": [
                {"workflowId": "test.record", "parameters": {"path": str(out), "label": "a"}}
            ]
        },
    )
    run = jp.execute(job.id)
    assert run.status is JobStatus.COMPLETED
    assert out.read_text().count("\n") == 1
