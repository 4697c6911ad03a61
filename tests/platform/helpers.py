"""Helpers for tests that administer the environment under test directly."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from gristmill_platform.admin import AdminConsole


def run_admin(settings: Any, action: str, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with AdminConsole(settings) as console:
            return await getattr(console, action)(*args, **kwargs)

    return asyncio.run(go())


def new_user_token(settings: Any, email: str, *, expires_in: timedelta | None = None) -> Any:
    run_admin(settings, "create_user", email.split("@")[0], email)
    return run_admin(settings, "create_token", email, name="test", expires_in=expires_in)
