"""Request models: what the API accepts, validated with pydantic."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MISSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def valid_mission_id(mission_id: str) -> bool:
    return bool(MISSION_ID.fullmatch(mission_id))


def normalise_hostname(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_HOSTNAME_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"{value!r} is not a hostname (give e.g. 'example.com', no scheme or path)"
        )
    return host


class Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_domains: Annotated[list[str], Field(max_length=20)] = []

    @field_validator("allowed_domains")
    @classmethod
    def _hostnames(cls, domains: list[str]) -> list[str]:
        return list(dict.fromkeys(normalise_hostname(d) for d in domains))


class CreateMission(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    objective: Annotated[str, Field(min_length=1, max_length=2000)]
    scope: Scope = Scope()
    budget_usd: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = 1.0
    tool: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    inputs: dict[str, Any] = {}


def validation_message(error: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one line a person can act on: `field: problem; ...`."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join([prefix, *map(str, item["loc"])] if prefix else map(str, item["loc"]))
        parts.append(f"{where or 'body'}: {item['msg']}")
    return "; ".join(parts)
