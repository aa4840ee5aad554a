"""Workflows: Prefect flows declared with ``@workflow`` and loaded back from their entrypoints.

Declaring is import-time and free of I/O: the decorator only remembers the flow. Registering
(writing the catalog entry) is done by ``jobs_plugin.register_workflow`` or
``prefect-jobs workflows register MODULE``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, overload

from prefect import Flow
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from jobs_plugin.errors import ValidationError
from jobs_plugin.models import Isolation, WorkflowCreate

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__prefect_jobs_workflow__"
# Keyed by entrypoint: the same id declared again by a module loaded another way (a file
# path) must not hide the importable declaration.
_declared: dict[str, WorkflowCreate] = {}


@dataclass(frozen=True)
class Declared:
    spec: WorkflowCreate
    flow: Flow[..., Any]


def entrypoint_of(flow: Flow[..., Any]) -> str:
    """``package.module:function`` of a flow defined at module level; for a flow defined in
    the script being run (``__main__``), ``/path/to/script.py:function``."""
    fn = flow.fn
    module = getattr(fn, "__module__", None)
    if module == "__main__" and "<locals>" not in fn.__qualname__:
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file:
            return f"{Path(main_file).resolve()}:{fn.__qualname__}"
    if not module or module == "__main__" or "<locals>" in fn.__qualname__:
        raise ValidationError(
            "entrypoint",
            f"flow {flow.name!r} is not importable (define it at module level of an importable "
            "module, or register it with an explicit entrypoint)",
        )
    return f"{module}:{fn.__qualname__}"


@overload
def workflow(fn: F, /) -> Flow[..., Any]: ...


@overload
def workflow(
    fn: None = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    isolation: Isolation | str = Isolation.INLINE,
    deployment: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 0,
    timeout_seconds: float | None = None,
) -> Callable[[Any], Flow[..., Any]]: ...


def workflow(
    fn: Any = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    isolation: Isolation | str = Isolation.INLINE,
    deployment: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 0,
    timeout_seconds: float | None = None,
) -> Any:
    """Declare a Prefect flow (or a plain function, made a flow) as a workflow jobs can run.

    ``id`` defaults to the flow's name; the settings are the workflow's defaults, which each
    step of a job may override. ``isolation="deployment"`` runs it as a flow run of the Prefect
    deployment ``deployment`` (default ``<flow name>/<id>``, see ``deploy_workflow``).
    """

    def decorate(target: Any) -> Flow[..., Any]:
        flow_obj: Flow[..., Any] = target if isinstance(target, Flow) else Flow(fn=target)
        spec = WorkflowCreate(
            id=id or flow_obj.name,
            name=name or flow_obj.name,
            description=description or flow_obj.description,
            entrypoint=entrypoint_of(flow_obj),
            isolation=Isolation(isolation),
            deployment=deployment,
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            timeout_seconds=timeout_seconds,
        )
        setattr(flow_obj, _ATTRIBUTE, spec)
        _declared[spec.entrypoint] = spec
        return flow_obj

    return decorate(fn) if fn is not None else decorate


def declaration_of(flow: Flow[..., Any]) -> WorkflowCreate | None:
    spec = getattr(flow, _ATTRIBUTE, None)
    return spec if isinstance(spec, WorkflowCreate) else None


def declared_in(module_name: str) -> list[WorkflowCreate]:
    """Import ``module_name`` (and its submodules, for a package) and return what it declares."""
    module = importlib.import_module(module_name)
    names = [module_name]
    if hasattr(module, "__path__"):
        import pkgutil

        names += [m.name for m in pkgutil.walk_packages(module.__path__, module_name + ".")]
        for name in names[1:]:
            importlib.import_module(name)
    prefixes = tuple(names)
    return [s for s in _declared.values() if s.entrypoint.split(":")[0].startswith(prefixes)]


@lru_cache(maxsize=256)
def load_flow(entrypoint: str) -> Flow[..., Any]:
    """The flow an entrypoint names: ``path/to/file.py:flow`` or ``package.module:flow``."""
    try:
        loaded: Any = load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    except Exception as exc:
        raise ValidationError("entrypoint", f"cannot load {entrypoint!r}: {exc}") from exc
    if not isinstance(loaded, Flow):
        raise ValidationError("entrypoint", f"{entrypoint!r} is not a Prefect flow")
    return loaded


def schema_of(flow: Flow[..., Any]) -> dict[str, Any]:
    """The JSON schema of a flow's parameters, as Prefect shows it for deployments."""
    return parameter_schema(flow.fn).model_dump(mode="json")
