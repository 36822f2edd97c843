"""The Deployment aggregate: one pipeline released to one named environment, as a numbered
series of releases, at most one of them active.

A release pins a revision of the pipeline and a strategy. `direct`: active at once.
`blue-green`: the release verifies first — one verification run of its revision must
succeed by its deadline (the release event's time plus `verification_timeout`); until then
the active release (blue), if any, stays active. A verification outcome applies once, to
the release that verifies; a late or repeated one changes nothing. A rollback makes an
earlier release's revision active again as a new release (a forward event). A retired
deployment refuses every command and keeps its history.

Status: `active` while a release is active (a next release may be verifying meanwhile:
blue serves); `verifying` while the first release verifies; `failed` when no release is
active and the last one failed; `retired`; `pending` only inside the create, before its
first release.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import (
    Conflict,
    InvalidCommand,
    InvalidDefinition,
    NoActiveRelease,
    Retired,
    VerificationInProgress,
)
from domain.event_trigger import EventTrigger, trigger_errors
from domain.events import CommandContext, NornCreated, NornEvent
from domain.release import (
    DIRECT,
    DeploymentStatus,
    Release,
    ReleaseOutcome,
    Strategy,
    check_descriptive,
    check_environment,
    check_json,
    check_strategy,
)
from domain.run import RunStatus


class DeploymentEvent(NornEvent):
    aggregate_type = "deployment"


class DeploymentCreated(DeploymentEvent, NornCreated):
    pipeline_id: str
    environment: str
    strategy: Strategy
    variables: dict[str, Any]
    labels: dict[str, str]
    description: str
    triggers: tuple[EventTrigger, ...] = ()
    """Events that start a run of the active release (domain/event_trigger.py)."""


class DeploymentTriggersSet(DeploymentEvent):
    """The deployment's triggers replaced; they react to events from now on."""

    triggers: tuple[EventTrigger, ...]

    def apply(self, aggregate: Deployment) -> None:
        aggregate.triggers = self.triggers
        aggregate.triggers_since = self.timestamp


class ReleaseActivated(DeploymentEvent):
    """A direct release: active at once; the release active before it is superseded."""

    release: int
    revision: int
    strategy: Strategy
    previous_release: int | None

    def apply(self, aggregate: Deployment) -> None:
        aggregate._add(self, self.revision, self.strategy, ReleaseOutcome.ACTIVE)
        aggregate._activate(self.release, ReleaseOutcome.SUPERSEDED)


class ReleaseVerifying(DeploymentEvent):
    """A blue-green release and its verification run; it must succeed by the deadline
    (this event's time plus the strategy's verification_timeout)."""

    release: int
    revision: int
    strategy: Strategy
    run_id: str

    def apply(self, aggregate: Deployment) -> None:
        release = aggregate._add(self, self.revision, self.strategy, ReleaseOutcome.VERIFYING)
        release.run_id = self.run_id
        release.deadline = self.timestamp + timedelta(
            seconds=self.strategy.verification_timeout or 0
        )
        aggregate.verifying_release = self.release


class ReleaseVerified(DeploymentEvent):
    """The verification run succeeded by the deadline: the release is active."""

    release: int
    run_id: str
    previous_release: int | None

    def apply(self, aggregate: Deployment) -> None:
        aggregate.verifying_release = None
        aggregate._activate(self.release, ReleaseOutcome.SUPERSEDED)


class ReleaseFailed(DeploymentEvent):
    """The verifying release did not pass: its run failed, was cancelled, crashed or
    timed out, its deadline passed, or the deployment was retired. The active release,
    if any, stays active."""

    release: int
    reason: str
    run_status: str | None = None

    def apply(self, aggregate: Deployment) -> None:
        release = aggregate.releases[self.release]
        release.outcome = ReleaseOutcome.FAILED
        release.failure = self.reason
        aggregate.verifying_release = None


class DeploymentRolledBack(DeploymentEvent):
    """A new release, active at once, of an earlier release's revision; the release it
    replaces is marked rolled back."""

    release: int
    revision: int
    rolled_back_to: int
    previous_release: int

    def apply(self, aggregate: Deployment) -> None:
        restored = aggregate.releases[self.rolled_back_to]
        made = aggregate._add(self, self.revision, restored.strategy, ReleaseOutcome.ACTIVE)
        made.rolled_back_to = self.rolled_back_to
        aggregate._activate(self.release, ReleaseOutcome.ROLLED_BACK)


class DeploymentRetired(DeploymentEvent):
    def apply(self, aggregate: Deployment) -> None:
        aggregate.retired = True


class Deployment(Aggregate):
    def __init__(
        self,
        tenant_id: str,
        pipeline_id: str,
        environment: str,
        strategy: Strategy,
        variables: dict[str, Any],
        labels: dict[str, str],
        description: str,
        actor: str,
        triggers: tuple[EventTrigger, ...] = (),
    ) -> None:
        self.tenant_id = tenant_id
        self.triggers = triggers
        self.triggers_since: datetime | None = None
        """When the triggers were last replaced (None: as created)."""
        self.pipeline_id = pipeline_id
        self.environment = environment
        self.strategy = strategy
        self.variables = variables
        self.labels = labels
        self.description = description
        self.created_by = actor
        self.releases: dict[int, Release] = {}
        self.active_release: int | None = None
        self.verifying_release: int | None = None
        self.retired = False

    @classmethod
    def create(
        cls,
        *,
        deployment_id: UUID,
        tenant_id: str,
        pipeline_id: str,
        environment: str,
        ctx: CommandContext,
        strategy: Strategy = DIRECT,
        variables: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        description: str = "",
        triggers: tuple[EventTrigger, ...] = (),
    ) -> Deployment:
        """The deployment alone; its first release follows in the same command
        (`release`), so a deployment is never saved without one."""
        check_environment(environment)
        check_strategy(strategy)
        check_json(variables or {}, "variables")
        check_descriptive(labels or {}, description)
        _check_triggers(triggers)
        return cls._create(
            DeploymentCreated,
            id=deployment_id,
            tenant_id=tenant_id,
            pipeline_id=pipeline_id,
            environment=environment,
            strategy=strategy,
            variables=variables or {},
            labels=labels or {},
            description=description,
            triggers=triggers,
            **ctx.event_fields(),
        )

    # --- queries ------------------------------------------------------------------------

    @property
    def status(self) -> DeploymentStatus:
        if self.retired:
            return DeploymentStatus.RETIRED
        if self.active_release is not None:
            return DeploymentStatus.ACTIVE  # also while a next release verifies
        if self.verifying_release is not None:
            return DeploymentStatus.VERIFYING
        return DeploymentStatus.FAILED if self.releases else DeploymentStatus.PENDING

    @property
    def next_release(self) -> int:
        return len(self.releases) + 1

    def active(self) -> Release:
        self._require_live()
        if self.active_release is None:
            raise NoActiveRelease(f"deployment {self.id} has no active release")
        return self.releases[self.active_release]

    def verifying(self) -> Release | None:
        return None if self.verifying_release is None else self.releases[self.verifying_release]

    def run_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params of a run of this deployment: its variables, overridden key by key."""
        return {**self.variables, **params}

    # --- commands -----------------------------------------------------------------------

    def release(
        self,
        revision: int,
        ctx: CommandContext,
        *,
        strategy: Strategy | None = None,
        run_id: str | None = None,
    ) -> Release:
        """Release `revision` (with `strategy`, else the deployment's). A blue-green
        release names its verification run (queued in the same append)."""
        self._require_live()
        self._require_not_verifying()
        strategy = strategy or self.strategy
        check_strategy(strategy)
        if strategy.verifies:
            if run_id is None:
                raise InvalidCommand("a blue-green release needs its verification run")
            self._trigger(
                ReleaseVerifying,
                ctx,
                release=self.next_release,
                revision=revision,
                strategy=strategy,
                run_id=run_id,
            )
        else:
            self._trigger(
                ReleaseActivated,
                ctx,
                release=self.next_release,
                revision=revision,
                strategy=strategy,
                previous_release=self.active_release,
            )
        return self.releases[len(self.releases)]

    def record_verification(
        self,
        release: int,
        run_id: str,
        run_status: RunStatus,
        finished_at: datetime,
        ctx: CommandContext,
        error: str | None = None,
    ) -> bool:
        """The verification run of `release` ended. Applies only to the release that
        verifies and to its own run, once: anything else (a late or repeated outcome, a
        retired deployment) records nothing and answers False. A run that succeeded after
        the deadline does not pass: the deadline is the fact, not when it was noticed."""
        verifying = self._verifying(release, run_id)
        if verifying is None:
            return False
        if run_status == RunStatus.SUCCEEDED:
            assert verifying.deadline is not None
            if finished_at <= verifying.deadline:
                self._trigger(
                    ReleaseVerified,
                    ctx,
                    release=release,
                    run_id=run_id,
                    previous_release=self.active_release,
                )
                return True
            reason = "the verification run succeeded after the deadline"
        elif run_status in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise InvalidCommand(f"verification run {run_id} has not ended ({run_status})")
        else:
            reason = f"the verification run {run_status}" + (f": {error}" if error else "")
        self._trigger(ReleaseFailed, ctx, release=release, reason=reason, run_status=run_status)
        return True

    def expire_verification(self, release: int, now: datetime, ctx: CommandContext) -> bool:
        """The deadline of verifying `release` has passed by `now` with no outcome: it
        fails. False (nothing recorded) before the deadline or if it no longer verifies."""
        verifying = self._verifying(release)
        if verifying is None or verifying.deadline is None or now < verifying.deadline:
            return False
        self._trigger(
            ReleaseFailed,
            ctx,
            release=release,
            reason=f"the verification run did not succeed by the deadline "
            f"({verifying.strategy.verification_timeout}s)",
        )
        return True

    def roll_back(self, ctx: CommandContext, to_release: int | None = None) -> Release:
        """Make an earlier release's revision active again, as a new release: the one
        named, else the latest earlier release that was active and whose revision is
        neither the active one's nor one a rollback moved away from."""
        self._require_live()
        self._require_not_verifying()
        current = self.active()
        target = self._rollback_target(current, to_release)
        self._trigger(
            DeploymentRolledBack,
            ctx,
            release=self.next_release,
            revision=target.revision,
            rolled_back_to=target.release,
            previous_release=current.release,
        )
        return self.releases[len(self.releases)]

    def set_triggers(self, triggers: tuple[EventTrigger, ...], ctx: CommandContext) -> bool:
        """Replace the triggers; False (nothing recorded) when they are the same."""
        self._require_live()
        _check_triggers(triggers)
        if triggers == self.triggers:
            return False
        self._trigger(DeploymentTriggersSet, ctx, triggers=triggers)
        return True

    def retire(self, ctx: CommandContext) -> Release | None:
        """Retire; a release still verifying fails with it. Returns that release (its
        run is to be cancelled by the caller, in the same append)."""
        self._require_live()
        verifying = self.verifying()
        if verifying is not None:
            self._trigger(
                ReleaseFailed,
                ctx,
                release=verifying.release,
                reason="the deployment was retired",
            )
        self._trigger(DeploymentRetired, ctx)
        return verifying

    # --- helpers ------------------------------------------------------------------------

    def _rollback_target(self, current: Release, to_release: int | None) -> Release:
        if to_release is not None:
            target = self.releases.get(to_release)
            if target is None:
                raise InvalidCommand(f"release {to_release} does not exist", "to_release")
            if target.release == current.release:
                raise Conflict(f"release {to_release} is the active one", "to_release")
            if target.outcome not in (ReleaseOutcome.SUPERSEDED, ReleaseOutcome.ROLLED_BACK):
                raise Conflict(
                    f"release {to_release} was never active ({target.outcome})", "to_release"
                )
            return target
        # Never back to a revision that was rolled back from, nor to the active one.
        shunned = {r.revision for r in self.releases.values() if r.outcome == "rolled_back"}
        shunned.add(current.revision)
        for number in range(current.release - 1, 0, -1):
            earlier = self.releases[number]
            if earlier.outcome == ReleaseOutcome.SUPERSEDED and earlier.revision not in shunned:
                return earlier
        raise Conflict("no earlier release to roll back to", "to_release")

    def _verifying(self, release: int, run_id: str | None = None) -> Release | None:
        if self.retired or self.verifying_release != release:
            return None
        verifying = self.releases[release]
        if run_id is not None and verifying.run_id != run_id:
            return None
        return verifying

    def _require_live(self) -> None:
        if self.retired:
            raise Retired(f"deployment {self.id} is retired")

    def _require_not_verifying(self) -> None:
        if self.verifying_release is not None:
            raise VerificationInProgress(self.verifying_release)

    def _add(
        self,
        event: ReleaseActivated | ReleaseVerifying | DeploymentRolledBack,
        revision: int,
        strategy: Strategy,
        outcome: ReleaseOutcome,
    ) -> Release:
        number = event.release
        made = Release(
            release=number,
            revision=revision,
            strategy=strategy,
            outcome=outcome,
            created_by=event.actor,
            created_at=event.timestamp,
        )
        self.releases[number] = made
        return made

    def _activate(self, number: int, previous_becomes: ReleaseOutcome) -> None:
        if self.active_release is not None:
            self.releases[self.active_release].outcome = previous_becomes
        self.releases[number].outcome = ReleaseOutcome.ACTIVE
        self.releases[number].replaced = self.active_release
        self.active_release = number

    def _trigger(
        self, event_class: type[DeploymentEvent], ctx: CommandContext, **fields: Any
    ) -> None:
        self.trigger_event(event_class, tenant_id=self.tenant_id, **ctx.event_fields(), **fields)


def _check_triggers(triggers: tuple[EventTrigger, ...]) -> None:
    errors = trigger_errors(triggers)
    if errors:
        raise InvalidDefinition(errors)
