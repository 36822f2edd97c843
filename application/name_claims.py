"""Taking and moving a unique name (domain/name_claim.py) inside a command's append: one
way for every kind of name (pipelines, tenants, a deployment's environment, jobs)."""

from __future__ import annotations

from application import unit_of_work
from application.event_store import NornEventStore
from domain.events import CommandContext
from domain.name_claim import NameClaim, claim_id


def take_name(
    store: NornEventStore,
    scope: str,
    name: str,
    holder: str,
    ctx: CommandContext,
    *,
    tenant_id: str | None,
    fresh: bool = False,
) -> NameClaim:
    """The claim on `name` in `scope`, taken for `holder`, to save in the command's
    append. `fresh`: claimed as new without reading it (most names are claimed for the
    first time; the store refuses the append if it ever was, and the command tries again
    without `fresh`). Else the claim is read: taken over if released, NameTaken if held.
    In a unit of work the claim is always read: its append comes once, at the commit, so
    a claim wrongly assumed new could not be tried again (application/unit_of_work.py)."""
    fresh = fresh and unit_of_work.current() is None
    claim = None if fresh else store.find(NameClaim, claim_id(scope, name))
    if claim is None:
        return NameClaim.claim_new(
            tenant_id=tenant_id, scope=scope, name=name, holder_id=holder, ctx=ctx
        )
    claim.claim(holder, ctx)
    return claim


def move_name(
    store: NornEventStore,
    scope: str,
    old_name: str,
    new_name: str,
    holder: str,
    ctx: CommandContext,
    *,
    tenant_id: str | None,
) -> list[NameClaim]:
    """The claims a rename changes: the new name taken, the old one released (none when
    both are the same name, as claims compare names)."""
    if claim_id(scope, old_name) == claim_id(scope, new_name):
        return []
    claims = [take_name(store, scope, new_name, holder, ctx, tenant_id=tenant_id)]
    old = store.find(NameClaim, claim_id(scope, old_name))
    if old is not None:
        old.release(holder, ctx)
        claims.append(old)
    return claims
