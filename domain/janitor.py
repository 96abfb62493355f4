"""When the janitor asks a gateway about a payment it has no news of. Pure.

A payment waits on the gateway in three statuses (`CHECKED`): `unknown` (a timeout or a lost
answer: money may have moved), and `pending`/`processing` (the answer, or the webhook that
must follow it, has not come). The janitor asks the gateway about such a payment on a
schedule in the spirit of Kill Bill's: by default 1 minute after an `unknown`, then 5 minutes,
1 hour and 1 day after each check; a `pending` or `processing` payment is first asked once it
is `stale_after_ms` old. After the last step the payment is left for an operator (it stays
in its status; `payments audit` and the `payments_janitor_exhausted_total` metric show it).
A refund whose call went unanswered (still `initiated`, no gateway reference) is retried on
the same steps: its command is sent again with the same idempotency key, so the gateway
answers with the first refund if it made one. One merely in flight (the executor has not
answered that its call timed out) is first retried once it is `stale_after_ms` old.

Each check's answer is a `StatusChecked` input to the payment agent; `decide` applies it.
A gateway with no search by our id is searched by creation time, only over the window in
which a create call of ours can have reached it (`lookup_window`): the cost of a check then
depends on that window, never on how many payments the gateway holds in all.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.payment import CHECKED, Operation, Payment, Source, stuck_refunds
from domain.status import PaymentStatus

__all__ = [
    "CHECKED",
    "LOOKUP_AFTER_MS",
    "LOOKUP_BEFORE_MS",
    "Schedule",
    "due_at",
    "last_authorize_at",
    "lookup_window",
    "not_charged_is_proof",
    "source_for",
    "stuck_refunds",
]

# A gateway stamps a payment with its own clock, and `created_at_ms` is the request's time,
# which a client producing straight to Kafka stamps with its clock: the search starts this
# long before it (as it always has).
LOOKUP_BEFORE_MS = 10 * 60_000
# And ends this long (at least `Schedule.not_charged_after_ms`) after the last moment the
# state shows the authorize issued, sent again or answered (`last_authorize_at`). Enough for
# the executor's attempts at the default 30 s timeout (4 attempts, up to 5 s backoff between:
# 2 min 15 s) twice over, clock skew of a minute, and a copy redelivered right after a restart.
LOOKUP_AFTER_MS = 5 * 60_000


@dataclass(frozen=True, slots=True)
class Schedule:
    steps_ms: tuple[int, ...] = (60_000, 300_000, 3_600_000, 86_400_000)
    stale_after_ms: int = 300_000  # a pending/processing payment is first asked about then
    # A gateway's "no such payment" proves nothing was charged only once the call that timed
    # out can no longer be in flight, and the gateway's search has caught up with it.
    not_charged_after_ms: int = 120_000

    def __post_init__(self) -> None:
        if not self.steps_ms or any(step <= 0 for step in self.steps_ms):
            raise ValueError("a janitor schedule needs at least one step, each > 0")
        if self.stale_after_ms <= 0 or self.not_charged_after_ms < 0:
            raise ValueError("stale_after_ms must be > 0 and not_charged_after_ms >= 0")


def due_at(payment: Payment, schedule: Schedule) -> int | None:
    """When the payment's next check is due (ms since the epoch), or None: not checked, or
    the schedule is spent. A payment with a refund the gateway never answered is checked on
    the same steps: its refund command is sent again, with the same idempotency key."""
    if payment.checks >= len(schedule.steps_ms):
        return None
    if payment.awaiting_verdict:  # the fraud rules have not answered: send the screen again
        since = max(payment.updated_at_ms, payment.checked_at_ms)
        return since + schedule.steps_ms[payment.checks]
    if payment.screening is not None:
        return None  # held for a person: no gateway has been asked
    if payment.status not in CHECKED:
        stuck = {c.refund_id for c in stuck_refunds(payment)}
        if not stuck:
            return None
        lines = [line for line in payment.refunds if line.refund_id in stuck]
        since = max([payment.checked_at_ms] + [line.updated_at_ms for line in lines])
        if payment.checks == 0 and not any(line.error_code for line in lines):
            # Only in flight (the executor has not said its call went unanswered): like a
            # pending payment, first asked about once stale. A backlog of refunds is no
            # reason to send each of them again.
            return since + schedule.stale_after_ms
        return since + schedule.steps_ms[payment.checks]
    since = max(payment.updated_at_ms, payment.checked_at_ms)
    if payment.checks == 0 and payment.status is not PaymentStatus.UNKNOWN:
        return since + schedule.stale_after_ms
    return since + schedule.steps_ms[payment.checks]


def source_for(payment: Payment) -> Source:
    """The source a check's status record names: the janitor resolves `unknown`; anything
    else is a poll of a payment whose news is late."""
    return Source.JANITOR if payment.status is PaymentStatus.UNKNOWN else Source.POLL


def not_charged_is_proof(payment: Payment, now_ms: int, schedule: Schedule) -> bool:
    """Whether a gateway's "no such payment" may fail this payment as never charged."""
    return (
        payment.status is PaymentStatus.UNKNOWN
        and now_ms - payment.updated_at_ms >= schedule.not_charged_after_ms
    )


def last_authorize_at(payment: Payment) -> int:
    """The last moment the payment's state shows its authorize issued, sent or answered.

    - `created_at_ms`: the request, which issues the first authorize (or holds it for the
      fraud rules, whose verdict follows within moments and releases it).
    - `issued_at_ms` of each authorize still in the outbox (pending or held): a fail-over to
      another gateway issues a new one later.
    - `updated_at_ms`: every status change. An `unknown` is the executor's answer once all
      its attempts of the call gave up, so every attempt was sent before it.
    - `checked_at_ms` while `pending`: a check that found nothing sends a lost authorize again
      (`decide`), and the fraud screen is sent again with a check too (its verdict then
      releases the held authorize). In other statuses a check sends nothing to the gateway.
    """
    moments = [payment.created_at_ms, payment.updated_at_ms]
    moments += [
        c.issued_at_ms
        for c in (*payment.pending_commands, *payment.held_commands)
        if c.operation is Operation.AUTHORIZE
    ]
    if payment.status is PaymentStatus.PENDING:
        moments.append(payment.checked_at_ms)
    return max(moments)


def lookup_window(payment: Payment, schedule: Schedule) -> tuple[int, int]:
    """[from, until) in ms since the epoch: the creation times at which a gateway can hold a
    payment that one of our create calls made for this payment.

    Why the bounds are safe. A gateway creates our payment only when the executor's create
    call reaches it, and the executor sends one only for an authorize this state issued.
    - From: not before the request (`created_at_ms`); `LOOKUP_BEFORE_MS` earlier, for clocks
      that disagree, exactly as far back as the search has always started.
    - Until: every authorize the state issued, or sent again, shows in `last_authorize_at`,
      and a call lands within `LOOKUP_AFTER_MS` of being sent. Never sooner than the
      schedule's `not_charged_after_ms`: the time after which the janitor already counts an
      answered call as no longer in flight.
    - Only an `unknown` payment is failed when the search finds nothing, and its
      `updated_at_ms` is the executor's answer, given after every attempt of the call had
      been sent. A `pending` payment's command may still be queued when it is searched for;
      finding nothing then only means "ask again" (`not_charged_is_proof`).
    What the state cannot show is the executor running a copy of an authorize again (a
    redelivery after a worker crash, an outbox re-emitted for a repeated request); the
    window assumes such a copy runs within `LOOKUP_AFTER_MS` of the state's last mark, as
    `not_charged_after_ms` already assumes of the call it answered.
    """
    after = max(LOOKUP_AFTER_MS, schedule.not_charged_after_ms)
    return payment.created_at_ms - LOOKUP_BEFORE_MS, last_authorize_at(payment) + after
