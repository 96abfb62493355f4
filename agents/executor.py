"""The gateway executor: stateless, concurrent, idempotent gateway calls.

It turns each `GatewayCommand` into one SDK call and a `GatewayResult` keyed by payment id.
One reader admits commands in partition order into a `KeyedDispatcher`: calls for different
payments run concurrently, calls for one payment run in order, at most
`PAYMENTS_EXECUTOR_CONCURRENCY` are admitted at once (the reader waits for a free slot), and a
command is acked only once its result is sent, so faust never commits past unfinished work.

A command redelivered after a crash is answered from the `idempotency` table when its call
already has a definite answer there, and the gateway is not called again. A call whose answer
was lost with the crash, or was ambiguous (a timeout), is made again with the same
deterministic idempotency key, so the gateway answers it with the first call's result
instead of charging twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import faust
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from agents.breaker import CircuitBreaker
from agents.dead_letter import send_to_dead_letter
from agents.dispatch import InOrderAcks, KeyedDispatcher
from agents.metrics import (
    CALLS_IN_FLIGHT,
    CALLS_IN_FLIGHT_PEAK,
    CALLS_SKIPPED,
    GATEWAY_CALL_SECONDS,
    GATEWAY_CALLS,
    STALE_COMMANDS,
)
from domain.errors import (
    CircuitOpen,
    GatewayDeclined,
    GatewayError,
    GatewayInvalidRequest,
    GatewayUnavailable,
    SerializationError,
)
from domain.payment import (
    CHECKED,
    NOT_CHARGED_ERRORS,
    CardSummary,
    GatewayCommand,
    GatewayOutcome,
    Operation,
)
from domain.refunds import RefundOutcome, RefundState
from domain.status import PaymentStatus
from gateways.base import (
    AuthorizeRequest,
    CancelRequest,
    CaptureRequest,
    Gateway,
    GatewayResult,
    RefundRequest,
    RefundStatus,
)
from gateways.registry import lookup
from schemas import codec, decode
from schemas.records import (
    attempt_record,
    command_from_record,
    outcome_to_record,
    refund_outcome_to_record,
)
from streams.app import Topics
from streams.gaps import watch_inputs
from tables.payments import Tables

log = logging.getLogger(__name__)

_RESULT = codec("gateway_result")
_ATTEMPT = codec("payment_analytics")
RETRY_ATTEMPTS = 4
# A command whose run keeps raising is dead-lettered after this many tries (about 25 s).
SETTLE_ATTEMPTS = 6
SETTLE_WAIT_MAX_S = 10.0
T = TypeVar("T")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable


def authorize_request(cmd: GatewayCommand) -> AuthorizeRequest:
    """The adapter's request for an authorize command (the janitor replays it too)."""
    return AuthorizeRequest(
        payment_id=cmd.payment_id,
        amount=cmd.amount,
        capture=cmd.capture,
        method_token=cmd.method_token,
        idempotency_key=cmd.idempotency_key,
        order_id=cmd.order_id,
        user_id=cmd.user_id,
    )


async def call_gateway(gateway: Gateway, cmd: GatewayCommand) -> GatewayResult:
    if cmd.operation is Operation.AUTHORIZE:
        return await gateway.authorize(authorize_request(cmd))
    reference = _reference(cmd)
    if cmd.operation is Operation.CAPTURE:
        return await gateway.capture(
            CaptureRequest(
                payment_id=cmd.payment_id,
                gateway_reference=reference,
                idempotency_key=cmd.idempotency_key,
                amount=cmd.amount,
            )
        )
    if cmd.operation is Operation.CANCEL:
        return await gateway.cancel(
            CancelRequest(
                payment_id=cmd.payment_id,
                gateway_reference=reference,
                idempotency_key=cmd.idempotency_key,
            )
        )
    raise GatewayError(f"unsupported operation {cmd.operation}")


def _reference(cmd: GatewayCommand) -> str:
    if not cmd.gateway_reference:
        raise GatewayInvalidRequest(f"{cmd.operation.value} needs the gateway's payment reference")
    return cmd.gateway_reference


async def _with_retries(
    call: Callable[[], Awaitable[T]], breaker: CircuitBreaker | None = None
) -> T:
    """Transient errors are retried with backoff and jitter, always with the same key.

    With a breaker, a call it refuses raises `CircuitOpen` (nothing was sent: provably no
    charge) only when no earlier attempt of this command went out. After an unanswered
    attempt the refusal is `GatewayUnavailable`, so the outcome stays `unknown`.
    """
    sent = 0

    async def guarded() -> T:
        nonlocal sent
        if breaker is not None:
            try:
                breaker.before_call()
            except CircuitOpen:
                if sent:
                    raise GatewayUnavailable(
                        "circuit opened after an unanswered attempt", code="gateway_unavailable"
                    ) from None
                raise
        sent += 1
        try:
            result = await call()
        except GatewayUnavailable:
            if breaker is not None:
                breaker.failed()
            raise
        except GatewayError:
            if breaker is not None:
                breaker.succeeded()  # a decline or a refusal is an answer: the gateway is up
            raise
        if breaker is not None:
            breaker.succeeded()
        return result

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(RETRY_ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.2, max=5),
        reraise=True,
    ):
        with attempt:
            return await guarded()
    raise AssertionError("unreachable: tenacity reraises")


async def execute_refund(
    gateways: dict[str, Gateway],
    cmd: GatewayCommand,
    breakers: Mapping[str, CircuitBreaker] | None = None,
) -> RefundOutcome:
    """One refund call. No answer keeps the refund `initiated`: its amount stays reserved."""

    def outcome(state: RefundState, **fields: Any) -> RefundOutcome:
        assert cmd.refund_id is not None
        return RefundOutcome(
            payment_id=cmd.payment_id,
            refund_id=cmd.refund_id,
            command_id=cmd.command_id,
            state=state,
            occurred_at_ms=int(time.time() * 1000),
            **fields,
        )

    try:
        gateway = lookup(gateways, cmd.gateway)
        request = RefundRequest(
            refund_id=cmd.refund_id or "",
            payment_id=cmd.payment_id,
            gateway_reference=_reference(cmd),
            amount=cmd.amount,
            idempotency_key=cmd.idempotency_key,
            reason=cmd.reason,
        )
        breaker = (breakers or {}).get(cmd.gateway)
        result = await _with_retries(lambda: gateway.refund(request), breaker)
        state = {
            RefundStatus.INITIATED: RefundState.INITIATED,
            RefundStatus.PROCESSED: RefundState.PROCESSED,
            RefundStatus.FAILED: RefundState.FAILED,
        }[result.status]
        return outcome(state, gateway_reference=result.refund_reference)
    except GatewayUnavailable as exc:
        return outcome(RefundState.INITIATED, error_code=exc.code)
    except GatewayError as exc:
        return outcome(RefundState.FAILED, error_code=exc.code)
    except Exception as exc:
        log.exception("unexpected error executing %s", cmd.command_id)
        return outcome(RefundState.INITIATED, error_code=type(exc).__name__)


async def execute(
    gateways: dict[str, Gateway],
    cmd: GatewayCommand,
    breakers: Mapping[str, CircuitBreaker] | None = None,
) -> GatewayOutcome:
    """Run one command with retries on transient errors; map every error to an outcome."""

    def outcome(status: PaymentStatus, **fields: Any) -> GatewayOutcome:
        return GatewayOutcome(
            payment_id=cmd.payment_id,
            command_id=cmd.command_id,
            operation=cmd.operation,
            status=status,
            occurred_at_ms=int(time.time() * 1000),
            **fields,
        )

    try:
        gateway = lookup(gateways, cmd.gateway)
        breaker = (breakers or {}).get(cmd.gateway)
        result = await _with_retries(lambda: call_gateway(gateway, cmd), breaker)
        return outcome(
            result.status,
            gateway_reference=result.gateway_reference,
            captured_amount=result.captured_amount,
            decline_code=result.decline_code,
            error_code=result.error_code,
            card=_summary(result),
        )
    except GatewayDeclined as exc:
        return outcome(
            PaymentStatus.FAILED,
            decline_code=exc.decline_code,
            error_code=exc.code,
            error_message=exc.message,
        )
    except GatewayUnavailable as exc:
        # Timeouts included: we cannot know whether money moved. `unknown` until the gateway
        # is asked again; never a guess of failed.
        return outcome(PaymentStatus.UNKNOWN, error_code=exc.code, error_message=exc.message)
    except GatewayError as exc:
        return outcome(PaymentStatus.FAILED, error_code=exc.code, error_message=exc.message)
    except Exception as exc:
        # A bug of ours after the call may hide a charge: unknown, never failed.
        log.exception("unexpected error executing %s", cmd.command_id)
        return outcome(
            PaymentStatus.UNKNOWN, error_code="internal_error", error_message=type(exc).__name__
        )


def _summary(result: GatewayResult) -> CardSummary | None:
    card = result.card
    if card is None or not (card.brand or card.last4):
        return None
    return CardSummary(
        brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year
    )


def stale_command(row: Mapping[str, Any] | None, cmd: GatewayCommand) -> str | None:
    """Why a redelivered authorize must not be sent, or None to send it.

    The payment row proves a copy stale once the payment no longer waits for it: the payment
    has settled (a janitor found it never charged, or the answer came another way), or it
    moved to another gateway. Without a row, or while the payment still waits, it is sent:
    the agent sends a command just before it saves the row, and a copy that arrives first
    must not be lost. The same idempotency key keeps a repeat from charging twice.
    """
    if row is None or cmd.operation is not Operation.AUTHORIZE:
        return None
    if row.get("gateway") != cmd.gateway:
        return f"the payment moved to {row.get('gateway')}"
    if PaymentStatus(row["status"]) not in WAITING:
        return f"the payment is already {row['status']}"
    return None


# A payment in these may still be waiting for its authorize call (`in_review`: approved by a
# person after the fraud rules held it, it stays so until the gateway answers).
WAITING = frozenset({*CHECKED, PaymentStatus.REQUIRES_ACTION, PaymentStatus.IN_REVIEW})


def _definite(record: dict[str, Any]) -> bool:
    """An answer the gateway would repeat for the same key: worth remembering."""
    if record["operation"] == Operation.REFUND.value:
        return not (record["refund_status"] == RefundState.INITIATED.value and record["error_code"])
    return bool(record["status"] != PaymentStatus.UNKNOWN.value)


def register(
    app: faust.App,
    topics: Topics,
    gateways: dict[str, Gateway],
    tables: Tables,
    *,
    max_in_flight: int,
    breakers: Mapping[str, CircuitBreaker] | None = None,
) -> Any:
    async def send_result(cmd: GatewayCommand, record: dict[str, Any]) -> None:
        await topics.gateway_results.send(
            key=cmd.payment_id.encode(), value=_RESULT.encode(record), headers=_RESULT.headers
        )

    answered = tables.idempotency

    async def run(cmd: GatewayCommand, partition: int) -> None:
        call_key = f"call:{cmd.idempotency_key}"
        earlier = answered.get(call_key, int(time.time() * 1000))
        if earlier is not None:
            log.info("%s %s answered before, not called again", cmd.gateway, cmd.command_id)
            CALLS_SKIPPED.labels(cmd.gateway).inc()
            await send_result(cmd, earlier["result"])
            return
        stale = stale_command(tables.payments.get(cmd.payment_id), cmd)
        if stale is not None:
            log.info("%s %s not called: %s", cmd.gateway, cmd.command_id, stale)
            STALE_COMMANDS.labels(cmd.gateway, cmd.operation.value).inc()
            return
        started = time.monotonic()
        decline = None
        if cmd.operation is Operation.REFUND:
            refund = await execute_refund(gateways, cmd, breakers)
            latency_ms = int((time.monotonic() - started) * 1000)
            record = refund_outcome_to_record(
                refund, gateway=cmd.gateway, amount=cmd.amount.amount, latency_ms=latency_ms
            )
            answer, error = refund.state.value, refund.error_code
        else:
            outcome = await execute(gateways, cmd, breakers)
            latency_ms = int((time.monotonic() - started) * 1000)
            record = outcome_to_record(outcome, gateway=cmd.gateway, latency_ms=latency_ms)
            answer, error, decline = outcome.status.value, outcome.error_code, outcome.decline_code
        log.debug("%s %s -> %s (%d ms)", cmd.gateway, cmd.command_id, answer, latency_ms)
        GATEWAY_CALLS.labels(cmd.gateway, cmd.operation.value, answer).inc()
        GATEWAY_CALL_SECONDS.labels(cmd.gateway, cmd.operation.value).observe(latency_ms / 1000)
        if _definite(record):
            entry = {"payment_id": cmd.payment_id, "result": record}
            answered.put(call_key, entry, partition=partition, now_ms=int(time.time() * 1000))
            if record["error_code"] in NOT_CHARGED_ERRORS:
                # A refusal lets the payment agent fail over to another gateway. It must be on
                # disk before the agent can act on it, so that a copy of this command
                # redelivered after a crash is answered with it, never sent to this gateway.
                await app.producer.flush()
        await send_result(cmd, record)
        attempt = attempt_record(
            cmd,
            outcome=answer,
            decline_code=decline,
            error_code=error,
            latency_ms=latency_ms,
            occurred_at_ms=int(time.time() * 1000),
        )
        await topics.payment_analytics.send(
            key=cmd.payment_id.encode(), value=_ATTEMPT.encode(attempt), headers=_ATTEMPT.headers
        )

    async def run_settled(cmd: GatewayCommand, event: Any) -> None:
        """`run`, until it returns or the command is in `dead_letter`: a command whose run
        raised and was never settled held every later command of its partition unacked
        (`InOrderAcks`), and so the partition's commit, for good. A run that raises is tried
        again (every step is idempotent: the `answered` table, the gateway's idempotency
        key); after `SETTLE_ATTEMPTS` it is dead-lettered with the error, and the payment,
        still pending, is the janitor's. Only a dead letter that cannot be sent waits on."""
        attempts = 0
        while True:
            attempts += 1
            try:
                await run(cmd, event.message.partition)
                return
            except Exception as exc:
                log.warning(
                    "%s %s raised (attempt %d): %r", cmd.gateway, cmd.command_id, attempts, exc
                )
                if attempts >= SETTLE_ATTEMPTS:
                    try:
                        await send_to_dead_letter(topics.dead_letter, event, exc)
                        return
                    except Exception as dlq_exc:
                        log.warning("could not dead-letter %s: %r", cmd.command_id, dlq_exc)
            await asyncio.sleep(min(SETTLE_WAIT_MAX_S, 0.5 * 2 ** min(attempts, 10)))

    gaps = watch_inputs(app)

    @app.agent(topics.gateway_commands, name="gateway-executor")
    async def gateway_executor(stream: Any) -> Any:
        """One reader, many calls: commands are admitted in partition order, run concurrently
        across payments and in order within one, and each is acked only when its result was
        sent and every earlier command of its partition was acked: calls finish out of order,
        acks never do, so no commit passes a call that has not finished (faust itself does
        not guarantee that for out-of-order acks: see `InOrderAcks`)."""
        dispatcher = KeyedDispatcher(max_in_flight, on_change=_in_flight)
        manual = stream.noack()
        acks = InOrderAcks(manual.ack)
        async for event in manual.events():
            gaps.observe(event.message.topic, event.message.partition, event.message.offset)
            token = acks.admit(event)
            try:
                cmd = command_from_record(
                    decode("gateway_command", event.value, dict(event.headers or {}))
                )
            except SerializationError as exc:
                await send_to_dead_letter(topics.dead_letter, event, exc)
                await acks.done(token)
                continue

            async def work(
                cmd: GatewayCommand = cmd, event: Any = event, token: Any = token
            ) -> None:
                await run_settled(cmd, event)
                await acks.done(token)

            await dispatcher.submit(cmd.payment_id, work)

    return gateway_executor


def _in_flight(running: int, peak: int) -> None:
    CALLS_IN_FLIGHT.set(running)
    CALLS_IN_FLIGHT_PEAK.set(peak)
