"""Domain errors of prefect-jobs. Every error raised on purpose derives from ``JobsError``::

    JobsError
    ├── NotFoundError            an id that does not exist (or belongs to another organization)
    │   ├── JobNotFound
    │   ├── RunNotFound
    │   ├── WorkflowNotFound
    │   ├── EventNotFound
    │   ├── ApiKeyNotFound
    │   └── ScheduleNotFound
    ├── ValidationError          bad input; names the field; nothing was written
    ├── ConflictError            the object is in a state that forbids the operation
    │   ├── InvalidTransition
    │   └── VersionConflict
    ├── ExecutionError           the engine could not start or follow a run
    └── AuthenticationError      a missing, unknown or revoked API key

The REST layer maps each class to one HTTP status in one table.
"""

from __future__ import annotations


class JobsError(Exception):
    """Base class of every error prefect-jobs raises on purpose."""


class NotFoundError(JobsError):
    kind = "object"

    def __init__(self, object_id: str) -> None:
        self.object_id = object_id
        super().__init__(f"{self.kind} {object_id!r} not found")


class JobNotFound(NotFoundError):
    kind = "job"


class RunNotFound(NotFoundError):
    kind = "job run"


class WorkflowNotFound(NotFoundError):
    kind = "workflow"


class EventNotFound(NotFoundError):
    kind = "event"


class ApiKeyNotFound(NotFoundError):
    kind = "API key"


class WebhookNotFound(NotFoundError):
    kind = "webhook"


class DeliveryNotFound(NotFoundError):
    kind = "webhook delivery"


class ScheduleNotFound(NotFoundError):
    kind = "schedule"


class ValidationError(JobsError):
    """Bad input. ``field`` is the dotted path of the offending field, spelled as on the wire."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ConflictError(JobsError):
    """The operation does not fit the object's current state."""


class InvalidTransition(ConflictError):
    pass


class VersionConflict(ConflictError):
    pass


class ExecutionError(JobsError):
    pass


class AuthenticationError(JobsError):
    """A missing, unknown or revoked API key."""
