from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EnvVarsUpsert(BaseModel):
    model_config = ConfigDict(strict=True)

    environment_variables: dict[str, str]


class EnvVarRead(BaseModel):
    name: str
    value: str


class EnvVarUpserted(BaseModel):
    id: str
    name: str
    created: bool


class EnvVarsUpserted(BaseModel):
    environment_variables: list[EnvVarUpserted]
