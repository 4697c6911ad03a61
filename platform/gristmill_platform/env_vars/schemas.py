from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator


def _as_text(value: object) -> object:
    # The documented example passes a number; environment values are text in the end.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("must be a string, a number or a boolean")
    return value


EnvValue = Annotated[str, BeforeValidator(_as_text)]


class EnvVarsUpsert(BaseModel):
    environment_variables: dict[str, EnvValue]


class EnvVarRead(BaseModel):
    name: str
    # None for callers who may not see values (viewers, execution tokens: auth/policy.py)
    value: str | None


class EnvVarUpserted(BaseModel):
    id: str
    name: str
    created: bool


class EnvVarsUpserted(BaseModel):
    environment_variables: list[EnvVarUpserted]
