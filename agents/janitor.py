"""The janitor: asks gateways about payments that have no news, on a schedule.

A faust timer reads each of the worker's active partitions of the due index
(`tables.schedule`, in memory, loaded from the `janitor` table a slice per tick after a
rebalance), soonest first, and stops at the first check not yet due. For each due
payment it asks the payment's gateway (`Gateway.lookup`: by reference, or by our payment id)
and sends the answer to `payment_checks`, keyed by payment id. The payment agent applies it
like any other input (`domain.payment.StatusChecked`) and schedules the next check, so the
janitor itself writes nothing but that topic: a worker killed mid-check loses nothing, the
check is simply due again on whichever worker takes the partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import faust

from agents.breaker import CircuitBreaker
from agents.executor import authorize_request
from agents.metrics import JANITOR_CHECKS
from agents.pages import active_partitions, worker_ready
from domain.errors import CircuitOpen, GatewayDeclined, GatewayError, GatewayUnavailable
from domain.janitor import (
    CHECKED,
    Schedule,
    due_at,
    lookup_window,
    not_charged_is_proof,
    source_for,
    stuck_refunds,
)
from domain.payment import Operation, Payment, Source, StatusChecked, Verdict
from domain.status import PaymentStatus
from gateways.base import Gateway, LookupRequest
from gateways.registry import lookup as gateway_named
from schemas import codec
from schemas.records import check_to_record, command_to_record, screen_to_record
from streams import names
from streams.app import Topics
from tables.payments import Tables
from tables.rows import payment_from_row

log = logging.getLogger(__name__)

_CHECK = codec("payment_check")
_COMMAND = codec("gateway_command")
_SCREEN = codec("fraud_check")
# A check whose answer has not come back after this long is made again.
_RECHECK_AFTER_S = 60.0


def lookup_request(payment: Payment, schedule: Schedule) -> LookupRequest:
    """The question for the gateway, with the window in which our create calls can have
    reached it: a gateway searched by creation time (Square) searches only that."""
    authorize = next(
        (c for c in payment.pending_commands if c.operation is Operation.AUTHORIZE), None
    )
    return LookupRequest(
        payment_id=payment.payment_id,
        created_at_ms=payment.created_at_ms,
        gateway_reference=payment.gateway_reference,
        authorize=None if authorize is None else authorize_request(authorize),
        window=lookup_window(payment, schedule),
    )


async def check_payment(
    gateways: Mapping[str, Gateway],
    breakers: Mapping[str, CircuitBreaker],
    payment: Payment,
    schedule: Schedule,
) -> StatusChecked | None:
    """Ask the gateway once; a failure is a `no_answer`, asked again at the next step. None:
    not asked at all (the gateway's circuit is open), which spends no step of the schedule."""
    asked_at = int(time.time() * 1000)

    def checked(verdict: Verdict, **fields: Any) -> StatusChecked:
        return StatusChecked(
            payment_id=payment.payment_id,
            check=payment.checks,
            source=source_for(payment),
            verdict=verdict,
            occurred_at_ms=int(time.time() * 1000),
            **fields,
        )

    breaker = breakers.get(payment.gateway)
    try:
        gateway = gateway_named(gateways, payment.gateway)
        if breaker is not None:
            breaker.before_call()
        result = await gateway.lookup(lookup_request(payment, schedule))
    except CircuitOpen:
        return None
    except GatewayDeclined as exc:  # a replayed create-order answered with its decline
        if breaker is not None:
            breaker.succeeded()
        return checked(
            Verdict.FOUND,
            status=PaymentStatus.FAILED,
            decline_code=exc.decline_code,
            error_code=exc.code,
        )
    except GatewayUnavailable as exc:
        if breaker is not None:
            breaker.failed()
        return checked(Verdict.NO_ANSWER, error_code=exc.code)
    except GatewayError as exc:
        return checked(Verdict.NO_ANSWER, error_code=exc.code)
    except Exception:
        log.exception("status check of %s failed", payment.payment_id)
        return checked(Verdict.NO_ANSWER, error_code="internal_error")
    if breaker is not None:
        breaker.succeeded()
    if result is None:
        if not_charged_is_proof(payment, asked_at, schedule):
            return checked(Verdict.NOT_CHARGED)
        return checked(Verdict.NO_ANSWER, error_code="not_found_yet")
    return checked(
        Verdict.FOUND,
        status=result.status,
        gateway_reference=result.gateway_reference,
        captured_amount=result.captured_amount,
        decline_code=result.decline_code,
        error_code=result.error_code,
    )


def _resent(payment: Payment, what: str) -> StatusChecked:
    """The check a re-sent command or screen counts as: no answer yet, what was re-sent."""
    return StatusChecked(
        payment_id=payment.payment_id,
        check=payment.checks,
        source=Source.JANITOR,
        verdict=Verdict.NO_ANSWER,
        occurred_at_ms=int(time.time() * 1000),
        error_code=what,
    )


def register(
    app: faust.App,
    topics: Topics,
    tables: Tables,
    gateways: Mapping[str, Gateway],
    breakers: Mapping[str, CircuitBreaker],
    schedule: Schedule,
    *,
    every_s: float,
    concurrency: int,
) -> Any:
    asked: dict[str, tuple[int, float]] = {}  # payment id -> (payment version, asked at)
    running: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(concurrency)

    async def resend_refunds(payment: Payment) -> StatusChecked:
        """Send unanswered refund commands again: the executor answers from the idempotency
        table if the call has an answer by now, or calls with the same key."""
        for command in stuck_refunds(payment):
            await topics.gateway_commands.send(
                key=payment.payment_id.encode(),
                value=_COMMAND.encode(command_to_record(command)),
                headers=_COMMAND.headers,
            )
        return _resent(payment, "refund_resent")

    async def resend_screen(payment: Payment) -> StatusChecked:
        """The fraud rules never answered (a check lost on its way): ask them again. Their
        histories count a payment once, and a second verdict is ignored. Always to the user
        stage, whichever stages have a rule on: it takes any screen (`agents/fraud.py`)."""
        screen = payment.screen()
        await topics.fraud_checks.send(
            key=screen.user_id.encode(),
            value=_SCREEN.encode(screen_to_record(screen, kind="screen")),
            headers=_SCREEN.headers,
        )
        return _resent(payment, "screen_resent")

    async def ask(payment: Payment) -> None:
        async with slots:
            answer: StatusChecked | None
            if payment.awaiting_verdict:
                answer = await resend_screen(payment)
            elif payment.status in CHECKED:
                answer = await check_payment(gateways, breakers, payment, schedule)
            else:
                answer = await resend_refunds(payment)
            if answer is None:  # the circuit is open: ask again on a later tick
                asked.pop(payment.payment_id, None)
                return
            JANITOR_CHECKS.labels(payment.gateway, answer.source.value, answer.verdict.value).inc()
            log.info(
                "%s check %d of %s (%s): %s %s",
                answer.source.value,
                answer.check,
                payment.payment_id,
                payment.status.value,
                answer.verdict.value,
                answer.status.value if answer.status else answer.error_code or "",
            )
            record = check_to_record(answer, gateway=payment.gateway)
            await topics.payment_checks.send(
                key=payment.payment_id.encode(), value=_CHECK.encode(record), headers=_CHECK.headers
            )

    async def forget(sender: object, revoked: object, **_: object) -> None:
        tables.janitor.forget()  # another worker may schedule them before they come back

    app.on_partitions_revoked.connect(forget)  # type: ignore[arg-type]

    @app.timer(interval=every_s, name="janitor")  # type: ignore[untyped-decorator]
    async def janitor() -> None:
        if not worker_ready(app):
            return
        now_ms = int(time.time() * 1000)
        started = time.monotonic()
        for stale in [pid for pid, (_, at) in asked.items() if started - at > _RECHECK_AFTER_S]:
            del asked[stale]
        active = active_partitions(app, names.PAYMENT_INITIATION)
        tables.janitor.forget(keep=active)
        for partition in active:
            tables.janitor.load(partition)  # a slice a tick, after the partition is assigned
            for _, payment_id in tables.janitor.due(partition, now_ms, limit=concurrency * 4):
                row = tables.payments.get(payment_id)
                if row is None:
                    continue
                payment = payment_from_row(row)
                due = due_at(payment, schedule)
                if due is None or due > now_ms:
                    continue  # the index is behind the row: the agent is about to move it
                if asked.get(payment_id, (-1, 0.0))[0] == payment.version:
                    continue  # asked already about this state; its answer is on its way
                asked[payment_id] = (payment.version, started)
                task = asyncio.create_task(ask(payment))
                running.add(task)
                task.add_done_callback(running.discard)

    return janitor
