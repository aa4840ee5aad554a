"""Identifiers shaped like Flatfile's (`us_jb_...`): a type prefix and 12 random characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits

ORGANIZATION = "us_org"
JOB = "us_jb"
RUN = "us_jr"
WORKFLOW_RUN = "us_wr"
EVENT = "us_evt"
API_KEY = "us_key"
WEBHOOK = "us_wh"
DELIVERY = "us_dlv"
SCHEDULE = "us_sc"


def new_id(prefix: str) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(12))
