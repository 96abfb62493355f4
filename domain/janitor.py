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
answers with the first refund if it made one.

Each check's answer is a `StatusChecked` input to the payment agent; `decide` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.payment import CHECKED, Payment, Source, stuck_refunds
from domain.status import PaymentStatus

__all__ = [
    "CHECKED",
    "Schedule",
    "due_at",
    "not_charged_is_proof",
    "source_for",
    "stuck_refunds",
]


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
        since = max(
            [payment.checked_at_ms]
            + [line.updated_at_ms for line in payment.refunds if line.refund_id in stuck]
        )
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
