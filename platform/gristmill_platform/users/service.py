"""Deleting a user without breaking what runs in their name."""

from __future__ import annotations

from dataclasses import dataclass

from gristmill_platform.auth.service import AuthService
from gristmill_platform.db.models.auth import User
from gristmill_platform.errors import BadRequest, Conflict
from gristmill_platform.users.ownership import Owned, OwnershipRepository


@dataclass(frozen=True)
class Deleted:
    user: User
    owned: Owned
    transferred_to: User | None


async def delete_user(auth: AuthService, ownership: OwnershipRepository, id_or_email: str,
                      *, transfer_to: str | None = None) -> Deleted:
    """Delete a user and their tokens. Their deployments run as them, so a user owning any
    is refused unless ``transfer_to`` names who takes over everything they own."""
    user = await auth.find_user(id_or_email)
    owned = await ownership.owned_by(user.id)
    heir = await auth.find_user(transfer_to) if transfer_to else None
    if heir is not None:
        if heir.id == user.id:
            raise BadRequest("--transfer-to names the user being deleted: pick someone else")
        if heir.is_viewer and not heir.is_admin:
            raise BadRequest(f"{heir.email} is a viewer and may not own resources: transfer "
                             "to an admin or a member")
    elif owned.deployments:
        raise Conflict(
            f"{user.email} owns deployment(s) {', '.join(owned.deployments)}, which run as "
            "them: pass --transfer-to <email> to hand everything they own to another user, "
            "or delete the deployments first", name="UserOwnsDeployments",
            additional_data={"deployments": owned.deployments})
    if heir is not None and owned.anything:
        await ownership.transfer(user.id, heir.id)
    await auth.delete_user(user.id)
    return Deleted(user=user, owned=owned, transferred_to=heir)
