"""Translation of Prefect flow-run states into job statuses and lifecycle events.

Pure functions, no I/O. The table (also in the README):

| Prefect state type | state names                                          | job status  |
|--------------------|------------------------------------------------------|-------------|
| (no flow run yet)  | run record created, plan being resolved              | PLANNING    |
| SCHEDULED          | Scheduled, Late, AwaitingRetry, AwaitingConcurrencySlot | READY    |
| PENDING            | Pending, Submitting, InfrastructurePending           | READY       |
| RUNNING            | Running, Retrying                                    | EXECUTING   |
| PAUSED             | Paused, Suspended                                    | EXECUTING   |
| CANCELLING         | Cancelling                                           | EXECUTING   |
| COMPLETED          | Completed, Cached, ...                               | COMPLETED   |
| FAILED             | Failed, TimedOut, ...                                | FAILED      |
| CRASHED            | Crashed                                              | FAILED      |
| CANCELLED          | Cancelled                                            | CANCELED    |

A status never goes backwards (rank PLANNING < READY < EXECUTING < terminal); a state that
would move it back, or sideways between terminal statuses, changes nothing. Moving forward
emits one event per status entered; on the way to COMPLETED (only) the statuses skipped are
entered too, so a completed run always reads waiting, started, completed:

| entering   | event          | note                                                      |
|------------|----------------|-----------------------------------------------------------|
| READY      | job:waiting    |                                                           |
| EXECUTING  | job:started    |                                                           |
| COMPLETED  | job:completed  | from PLANNING/READY, `job:waiting`/`job:started` come first |
| FAILED     | job:failed     | never preceded by a synthetic `job:started`               |
| CANCELED   | job:canceled   | extension; never preceded by a synthetic `job:started`    |

`job:created`, `job:updated` (progress, parts, processed or info changed) and `job:deleted`
do not come from Prefect states; the catalog emits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from prefect.client.schemas.objects import StateType


class JobStatus(str, Enum):
    PLANNING = "PLANNING"
    READY = "READY"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def rank(self) -> int:
        return _RANK[self]


class WorkflowRunStatus(str, Enum):
    """Status of one step of a run. NOT_RUN: an earlier step halted the run before this one."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    NOT_RUN = "NOT_RUN"

    @property
    def is_terminal(self) -> bool:
        return self not in (WorkflowRunStatus.PENDING, WorkflowRunStatus.RUNNING)


class Topic(str, Enum):
    CREATED = "job:created"
    WAITING = "job:waiting"
    STARTED = "job:started"
    UPDATED = "job:updated"
    COMPLETED = "job:completed"
    FAILED = "job:failed"
    CANCELED = "job:canceled"
    DELETED = "job:deleted"
    OUTCOME_ACKNOWLEDGED = "job:outcome-acknowledged"


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})
_RANK = {
    JobStatus.PLANNING: 0,
    JobStatus.READY: 1,
    JobStatus.EXECUTING: 2,
    JobStatus.COMPLETED: 3,
    JobStatus.FAILED: 3,
    JobStatus.CANCELED: 3,
}
_ENTER_TOPIC = {
    JobStatus.READY: Topic.WAITING,
    JobStatus.EXECUTING: Topic.STARTED,
    JobStatus.COMPLETED: Topic.COMPLETED,
    JobStatus.FAILED: Topic.FAILED,
    JobStatus.CANCELED: Topic.CANCELED,
}
_STATUS_BY_TYPE = {
    StateType.SCHEDULED: JobStatus.READY,
    StateType.PENDING: JobStatus.READY,
    StateType.RUNNING: JobStatus.EXECUTING,
    StateType.PAUSED: JobStatus.EXECUTING,
    StateType.CANCELLING: JobStatus.EXECUTING,
    StateType.COMPLETED: JobStatus.COMPLETED,
    StateType.FAILED: JobStatus.FAILED,
    StateType.CRASHED: JobStatus.FAILED,
    StateType.CANCELLED: JobStatus.CANCELED,
}
_ON_THE_WAY = (JobStatus.READY, JobStatus.EXECUTING)
_WORKFLOW_STATUS_BY_JOB_STATUS = {
    JobStatus.READY: WorkflowRunStatus.PENDING,
    JobStatus.EXECUTING: WorkflowRunStatus.RUNNING,
    JobStatus.COMPLETED: WorkflowRunStatus.COMPLETED,
    JobStatus.FAILED: WorkflowRunStatus.FAILED,
    JobStatus.CANCELED: WorkflowRunStatus.CANCELED,
}


@dataclass(frozen=True)
class Transition:
    """The outcome of observing a state: the status after it and the events to emit, in order."""

    previous: JobStatus
    status: JobStatus
    topics: tuple[Topic, ...]

    @property
    def changed(self) -> bool:
        return self.status is not self.previous


def status_for_state(state_type: StateType | str, state_name: str | None = None) -> JobStatus:
    """The job status a Prefect state maps to. The state name refines nothing today: every named
    state belongs with its type (TimedOut is FAILED, Late is READY, ...); it is accepted so that
    callers pass what Prefect gives them and the table can grow without changing call sites."""
    del state_name
    return _STATUS_BY_TYPE[StateType(state_type)]


def workflow_status_for_state(
    state_type: StateType | str, state_name: str | None = None
) -> WorkflowRunStatus:
    return _WORKFLOW_STATUS_BY_JOB_STATUS[status_for_state(state_type, state_name)]


def advance(current: JobStatus, target: JobStatus) -> Transition:
    """Move from ``current`` towards ``target``; never backwards, never between terminals."""
    if target.rank <= current.rank:
        return Transition(current, current, ())
    # Statuses on the way to success are entered even when the observed state skipped them;
    # a run that fails or is canceled before it ran never gets a synthetic job:started.
    passed = _ON_THE_WAY if target in _ON_THE_WAY or target is JobStatus.COMPLETED else ()
    topics = [_ENTER_TOPIC[s] for s in passed if current.rank < s.rank <= target.rank]
    if target.is_terminal:
        topics.append(_ENTER_TOPIC[target])
    return Transition(current, target, tuple(topics))


def translate(
    current: JobStatus, state_type: StateType | str, state_name: str | None = None
) -> Transition:
    """The transition caused by observing a Prefect flow-run state while in ``current``."""
    return advance(current, status_for_state(state_type, state_name))
