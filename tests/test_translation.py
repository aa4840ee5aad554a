"""The translation table of `jobs_plugin.translation`, checked against its docstring.

Expectations are written out here, from the documented table, rather than read back from the
module, so that a change to the mapping has to change this file too.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from prefect import states
from prefect.client.schemas.objects import State, StateType

from jobs_plugin.translation import (
    JobStatus,
    Topic,
    WorkflowRunStatus,
    advance,
    status_for_state,
    translate,
    workflow_status_for_state,
)


@pytest.fixture(scope="module")
def prefect_api() -> None:
    """Overrides the session's Prefect test server: nothing in this module talks to a Prefect
    API, so it runs without waiting for one to start."""


S = StateType
J = JobStatus
W = WorkflowRunStatus

# The documented table: Prefect state type -> job status.
STATUS_BY_TYPE: dict[StateType, JobStatus] = {
    S.SCHEDULED: J.READY,
    S.PENDING: J.READY,
    S.RUNNING: J.EXECUTING,
    S.PAUSED: J.EXECUTING,
    S.CANCELLING: J.EXECUTING,
    S.COMPLETED: J.COMPLETED,
    S.FAILED: J.FAILED,
    S.CRASHED: J.FAILED,
    S.CANCELLED: J.CANCELED,
}

WORKFLOW_STATUS_BY_TYPE: dict[StateType, WorkflowRunStatus] = {
    S.SCHEDULED: W.PENDING,
    S.PENDING: W.PENDING,
    S.RUNNING: W.RUNNING,
    S.PAUSED: W.RUNNING,
    S.CANCELLING: W.RUNNING,
    S.COMPLETED: W.COMPLETED,
    S.FAILED: W.FAILED,
    S.CRASHED: W.FAILED,
    S.CANCELLED: W.CANCELED,
}


def _named(state_type: StateType, name: str) -> Callable[[], State[Any]]:
    def build() -> State[Any]:
        return State(type=state_type, name=name)

    return build


# Every named state Prefect 3 produces, built with Prefect's own constructor where one exists.
# (name, constructor, expected type, expected job status)
NAMED_STATES: list[tuple[str, Callable[[], State[Any]], StateType, JobStatus]] = [
    ("Scheduled", states.Scheduled, S.SCHEDULED, J.READY),
    ("Late", states.Late, S.SCHEDULED, J.READY),
    ("AwaitingRetry", states.AwaitingRetry, S.SCHEDULED, J.READY),
    ("AwaitingConcurrencySlot", states.AwaitingConcurrencySlot, S.SCHEDULED, J.READY),
    # The server's resume endpoint proposes Scheduled(name="Resuming").
    ("Resuming", _named(S.SCHEDULED, "Resuming"), S.SCHEDULED, J.READY),
    ("Pending", states.Pending, S.PENDING, J.READY),
    ("Submitting", states.Submitting, S.PENDING, J.READY),
    ("InfrastructurePending", states.InfrastructurePending, S.PENDING, J.READY),
    # The engines propose Pending(name="NotReady") while upstream dependencies are unresolved.
    ("NotReady", _named(S.PENDING, "NotReady"), S.PENDING, J.READY),
    ("Running", states.Running, S.RUNNING, J.EXECUTING),
    ("Retrying", states.Retrying, S.RUNNING, J.EXECUTING),
    ("Paused", states.Paused, S.PAUSED, J.EXECUTING),
    ("Suspended", states.Suspended, S.PAUSED, J.EXECUTING),
    ("Cancelling", states.Cancelling, S.CANCELLING, J.EXECUTING),
    ("Completed", states.Completed, S.COMPLETED, J.COMPLETED),
    # The engines rename a cache hit "Cached" and a transaction rollback "RolledBack".
    ("Cached", _named(S.COMPLETED, "Cached"), S.COMPLETED, J.COMPLETED),
    ("RolledBack", _named(S.COMPLETED, "RolledBack"), S.COMPLETED, J.COMPLETED),
    ("Failed", states.Failed, S.FAILED, J.FAILED),
    # flow_engine proposes Failed(name="TimedOut") when a flow run exceeds its timeout.
    ("TimedOut", _named(S.FAILED, "TimedOut"), S.FAILED, J.FAILED),
    ("Crashed", states.Crashed, S.CRASHED, J.FAILED),
    ("Cancelled", states.Cancelled, S.CANCELLED, J.CANCELED),
]

# Topic entered with each status (the second table of the docstring).
ENTER_TOPIC: dict[JobStatus, Topic] = {
    J.READY: Topic.WAITING,
    J.EXECUTING: Topic.STARTED,
    J.COMPLETED: Topic.COMPLETED,
    J.FAILED: Topic.FAILED,
    J.CANCELED: Topic.CANCELED,
}

# Every forward move and the events it emits, in order.
FORWARD_TOPICS: dict[tuple[JobStatus, JobStatus], tuple[Topic, ...]] = {
    (J.PLANNING, J.READY): (Topic.WAITING,),
    (J.PLANNING, J.EXECUTING): (Topic.WAITING, Topic.STARTED),
    (J.PLANNING, J.COMPLETED): (Topic.WAITING, Topic.STARTED, Topic.COMPLETED),
    (J.PLANNING, J.FAILED): (Topic.FAILED,),
    (J.PLANNING, J.CANCELED): (Topic.CANCELED,),
    (J.READY, J.EXECUTING): (Topic.STARTED,),
    (J.READY, J.COMPLETED): (Topic.STARTED, Topic.COMPLETED),
    (J.READY, J.FAILED): (Topic.FAILED,),
    (J.READY, J.CANCELED): (Topic.CANCELED,),
    (J.EXECUTING, J.COMPLETED): (Topic.COMPLETED,),
    (J.EXECUTING, J.FAILED): (Topic.FAILED,),
    (J.EXECUTING, J.CANCELED): (Topic.CANCELED,),
}

ORDER = [J.PLANNING, J.READY, J.EXECUTING]
TERMINAL = [J.COMPLETED, J.FAILED, J.CANCELED]
TERMINAL_TOPICS = frozenset({Topic.COMPLETED, Topic.FAILED, Topic.CANCELED})
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))


def _pair_id(pair: tuple[JobStatus, JobStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


# --------------------------------------------------------------------------- state -> status


def test_the_table_covers_every_prefect_state_type() -> None:
    """A state type added to Prefect must be added to the table (and to this test)."""
    assert set(STATUS_BY_TYPE) == set(StateType)
    for state_type in StateType:
        assert status_for_state(state_type) is STATUS_BY_TYPE[state_type], state_type


@pytest.mark.parametrize("state_type", list(StateType), ids=lambda t: t.value)
def test_every_state_type_maps_to_its_documented_status(state_type: StateType) -> None:
    expected = STATUS_BY_TYPE[state_type]
    assert status_for_state(state_type) is expected
    assert status_for_state(state_type.value) is expected  # as stored or sent over the wire
    assert status_for_state(state_type, "AnyName") is expected


@pytest.mark.parametrize(
    ("name", "build", "state_type", "expected"),
    NAMED_STATES,
    ids=[entry[0] for entry in NAMED_STATES],
)
def test_every_named_prefect_state_maps_to_its_documented_status(
    name: str, build: Callable[[], State[Any]], state_type: StateType, expected: JobStatus
) -> None:
    state = build()
    assert (state.type, state.name) == (state_type, name)
    assert status_for_state(state.type, state.name) is expected
    assert translate(J.PLANNING, state.type, state.name).status is expected


def test_named_states_cover_every_state_type() -> None:
    assert {entry[2] for entry in NAMED_STATES} == set(StateType)


def test_an_unknown_state_type_is_refused() -> None:
    with pytest.raises(ValueError):
        status_for_state("EXPLODED")


@pytest.mark.parametrize("state_type", list(StateType), ids=lambda t: t.value)
def test_workflow_status_for_every_state_type(state_type: StateType) -> None:
    assert set(WORKFLOW_STATUS_BY_TYPE) == set(StateType)
    expected = WORKFLOW_STATUS_BY_TYPE[state_type]
    assert workflow_status_for_state(state_type) is expected
    assert workflow_status_for_state(state_type.value, "AnyName") is expected


@pytest.mark.parametrize(
    ("name", "build", "state_type", "expected"),
    NAMED_STATES,
    ids=[entry[0] for entry in NAMED_STATES],
)
def test_workflow_status_for_every_named_state(
    name: str, build: Callable[[], State[Any]], state_type: StateType, expected: JobStatus
) -> None:
    state = build()
    assert workflow_status_for_state(state.type, state.name) is WORKFLOW_STATUS_BY_TYPE[state_type]


def test_workflow_status_is_never_not_run() -> None:
    """NOT_RUN is the catalog's verdict on steps after a halt; no Prefect state produces it."""
    produced = {workflow_status_for_state(t) for t in StateType}
    assert W.NOT_RUN not in produced
    assert produced == set(WorkflowRunStatus) - {W.NOT_RUN}


# --------------------------------------------------------------------------- statuses


def test_ranks_and_terminal_statuses() -> None:
    assert [s.rank for s in ORDER] == [0, 1, 2]
    assert {s.rank for s in TERMINAL} == {3}
    assert {s for s in JobStatus if s.is_terminal} == set(TERMINAL)
    assert {s for s in WorkflowRunStatus if s.is_terminal} == {
        W.COMPLETED,
        W.FAILED,
        W.CANCELED,
        W.NOT_RUN,
    }


# --------------------------------------------------------------------------- transitions


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_status_never_goes_backwards_or_sideways(pair: tuple[JobStatus, JobStatus]) -> None:
    current, target = pair
    transition = advance(current, target)
    assert transition.previous is current
    if target.rank > current.rank:
        assert transition.status is target
        assert transition.changed
        assert transition.topics == FORWARD_TOPICS[pair]
    else:
        assert transition.status is current
        assert not transition.changed
        assert transition.topics == ()


def test_forward_table_lists_exactly_the_forward_moves() -> None:
    forward = {(c, t) for c, t in ALL_PAIRS if t.rank > c.rank}
    assert set(FORWARD_TOPICS) == forward


@pytest.mark.parametrize("terminal", TERMINAL, ids=lambda s: s.value)
@pytest.mark.parametrize("state_type", list(StateType), ids=lambda t: t.value)
def test_terminal_statuses_never_change(terminal: JobStatus, state_type: StateType) -> None:
    transition = translate(terminal, state_type)
    assert transition.status is terminal
    assert transition.topics == ()
    assert not transition.changed


@pytest.mark.parametrize("pair", list(FORWARD_TOPICS), ids=_pair_id)
def test_forward_moves_enter_their_target_last(pair: tuple[JobStatus, JobStatus]) -> None:
    current, target = pair
    topics = advance(current, target).topics
    assert topics[-1] is ENTER_TOPIC[target]
    assert len(set(topics)) == len(topics)
    # Failing or being canceled never invents a job:started.
    if target in (J.FAILED, J.CANCELED):
        assert Topic.STARTED not in topics


def test_documented_examples() -> None:
    assert translate(J.PLANNING, S.COMPLETED, "Completed").topics == (
        Topic.WAITING,
        Topic.STARTED,
        Topic.COMPLETED,
    )
    assert translate(J.READY, S.FAILED, "Failed").topics == (Topic.FAILED,)
    assert translate(J.READY, S.CRASHED, "Crashed").topics == (Topic.FAILED,)
    assert translate(J.READY, S.CANCELLED, "Cancelled").topics == (Topic.CANCELED,)
    assert translate(J.EXECUTING, S.PENDING, "Pending").status is J.EXECUTING
    assert translate(J.EXECUTING, S.SCHEDULED, "AwaitingRetry").topics == ()
    assert translate(J.COMPLETED, S.FAILED, "Failed").status is J.COMPLETED
    assert translate(J.FAILED, S.COMPLETED, "Completed").status is J.FAILED


@pytest.mark.parametrize("state_type", list(StateType), ids=lambda t: t.value)
def test_observing_the_same_state_twice_changes_nothing(state_type: StateType) -> None:
    first = translate(J.PLANNING, state_type)
    again = translate(first.status, state_type)
    assert again.status is first.status
    assert again.topics == ()


# --------------------------------------------------------------------------- fold property


def _fold(observed: list[tuple[StateType, str]]) -> tuple[list[JobStatus], list[Topic]]:
    status = J.PLANNING
    statuses = [status]
    topics: list[Topic] = []
    for state_type, name in observed:
        transition = translate(status, state_type, name)
        assert transition.previous is status
        status = transition.status
        statuses.append(status)
        topics.extend(transition.topics)
    return statuses, topics


def _check_fold(observed: list[tuple[StateType, str]]) -> None:
    statuses, topics = _fold(observed)
    ranks = [s.rank for s in statuses]
    assert ranks == sorted(ranks), observed
    # Each topic at most once per run.
    assert len(topics) == len(set(topics)), (observed, topics)
    # At most one terminal topic, and it is the last one.
    terminal_at = [i for i, t in enumerate(topics) if t in TERMINAL_TOPICS]
    assert len(terminal_at) <= 1, (observed, topics)
    if terminal_at:
        assert terminal_at[0] == len(topics) - 1, (observed, topics)
    # job:started never after a terminal topic; job:waiting never after job:started.
    if Topic.STARTED in topics and terminal_at:
        assert topics.index(Topic.STARTED) < terminal_at[0]
    if Topic.STARTED in topics and Topic.WAITING in topics:
        assert topics.index(Topic.WAITING) < topics.index(Topic.STARTED)
    # The topics say where the run ended: the last status entered is the final status.
    final = statuses[-1]
    if final is J.PLANNING:
        assert topics == []
    else:
        assert topics[-1] is ENTER_TOPIC[final], (observed, topics)
    # A run reported COMPLETED has been waiting and started, in that order.
    if final is J.COMPLETED:
        assert topics == [Topic.WAITING, Topic.STARTED, Topic.COMPLETED]


def test_folding_any_sequence_of_states_is_monotonic_and_emits_each_topic_once() -> None:
    """Property test over many random sequences (seeded: a failure reproduces)."""
    alphabet = [(entry[2], entry[0]) for entry in NAMED_STATES]
    rng = random.Random(20240611)
    for _ in range(3000):
        length = rng.randint(0, 12)
        _check_fold([rng.choice(alphabet) for _ in range(length)])


def test_folding_every_sequence_of_up_to_three_state_types() -> None:
    """Exhaustive over short sequences, where the interesting orderings live."""
    types = [(t, t.value.capitalize()) for t in StateType]
    for length in range(4):
        for observed in itertools.product(types, repeat=length):
            _check_fold(list(observed))
