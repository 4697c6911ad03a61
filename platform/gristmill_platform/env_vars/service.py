from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gristmill_platform.db.models.env_vars import EnvironmentVariable
from gristmill_platform.db.types import utcnow
from gristmill_platform.env_vars.repository import EnvVarRepository
from gristmill_platform.errors import BadRequest, NotFound
from gristmill_platform.logs import redactor

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# The platform sets these in every execution (tokens, URLs, execution id); a user variable
# must not be able to shadow them.
RESERVED_PREFIXES = ("CRAFT_AI_", "GRISTMILL_")
MAX_VALUE_LENGTH = 64 * 1024
MAX_PER_REQUEST = 500


@dataclass(frozen=True)
class Upserted:
    name: str
    created: bool


def validate_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise BadRequest(
            f"Invalid environment variable name {name!r}: use letters, digits and '_', "
            "not starting with a digit, at most 255 characters"
        )
    if name.upper().startswith(RESERVED_PREFIXES):
        raise BadRequest(
            f"Environment variable name {name!r} is reserved: names starting with "
            f"{' or '.join(RESERVED_PREFIXES)} are set by the platform"
        )


class EnvVarService:
    def __init__(self, repository: EnvVarRepository) -> None:
        self.repository = repository

    async def upsert_many(self, variables: Mapping[str, str]) -> list[Upserted]:
        if not variables:
            raise BadRequest("No environment variable given")
        if len(variables) > MAX_PER_REQUEST:
            raise BadRequest(f"At most {MAX_PER_REQUEST} environment variables per request")
        # validate everything first, so a bad entry leaves nothing half-written
        for name, value in variables.items():
            validate_name(name)
            if len(value) > MAX_VALUE_LENGTH:
                raise BadRequest(
                    f"Value of environment variable {name!r} is too long "
                    f"({len(value)} characters, at most {MAX_VALUE_LENGTH})"
                )
            if "\x00" in value:
                raise BadRequest(f"Value of environment variable {name!r} contains a NUL byte")
        # their values are often credentials: masked in every log line from now on
        redactor.register(*variables.values())
        results = []
        for name, value in variables.items():
            existing = await self.repository.get(name)
            now = utcnow()
            if existing is None:
                await self.repository.add(
                    EnvironmentVariable(name=name, value=value, created_at=now, updated_at=now)
                )
                results.append(Upserted(name=name, created=True))
            else:
                existing.value = value
                existing.updated_at = now
                results.append(Upserted(name=name, created=False))
        await self.repository.session.flush()
        return results

    async def list(self) -> Sequence[EnvironmentVariable]:
        return await self.repository.list()

    async def as_mapping(self) -> dict[str, str]:
        return {v.name: v.value for v in await self.repository.list()}

    async def delete(self, name: str) -> EnvironmentVariable:
        variable = await self.repository.get(name)
        if variable is None:
            raise NotFound(f"Environment variable {name!r} not found")
        await self.repository.delete(variable)
        return variable
