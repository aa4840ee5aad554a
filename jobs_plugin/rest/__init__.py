"""The ``/v1`` REST API: a thin FastAPI layer over the Python API (``jobs_plugin.api``).

Shapes follow Flatfile's public Jobs API (see the project's wire-format notes): camelCase keys,
``{"data": ...}`` envelopes, ``{"errors": [{"key", "message"}]}`` on failure.
"""

from __future__ import annotations

from jobs_plugin.rest.app import create_app

__all__ = ["create_app"]
