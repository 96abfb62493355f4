"""The payment agent: the single writer of payment state, strictly ordered per payment id.

It decodes one input, loads the payment, calls `domain.payment.decide`, saves the decision,
and hands its outputs (status records, gateway commands, screens) to the outbox, which sends
them only once the broker has the saved state, and then acks the input (`agents.outbox`). A
seq number therefore leaves only from a state a successor starts from; a crash between the
save and the send loses nothing, since the input is read again and replays the saved outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP

from agents.dead_letter import send_to_dead_letter
from agents.fraud import observe as observe_verdict
from agents.metrics import (
    INPUTS_IGNORED,
    JANITOR_EXHAUSTED,
    PAYMENTS_SETTLED,
    PROCESSING_SECONDS,
    WEBHOOKS_UNHANDLED,
)
from agents.outbox import Outbox, Output, restored
from domain.errors import PaymentError, SerializationError
from domain.fraud import FraudRules, Stage
from domain.janitor import CHECKED, Schedule, due_at, stuck_refunds
from domain.payment import (
    CancelRequested,
    CaptureRequested,
    Decision,
    GatewayNotice,
    Input,
    NoticeKind,
    Payment,
    PaymentRequested,
    ReviewDecided,
    StatusChange,
    decide,
    duplicate,
)
from domain.refunds import RefundRequested, RefundState
from domain.status import SETTLED
from gateways.registry import interpret
from schemas import codec, decode
from schemas.codec import Codec
from schemas.records import (
    action_from_record,
    check_from_record,
    command_to_record,
    payment_requested_from_record,
    refund_requested_from_record,
    refund_status_record,
    result_from_record,
    screen_to_record,
    status_record,
    to_ms,
    verdict_from_record,
)
from streams import names
from streams.app import Topics
from streams.ledger import REPAIRED, InputLedger, RangeReader
from tables.payments import Tables
from tables.rows import payment_from_row, payment_to_row, refund_to_row
from tables.writes import ChangelogWrites

log = logging.getLogger(__name__)

# Ignored inputs that happen to every payment (a webhook repeating what the gateway already
# answered, a redelivery): counted, logged only at DEBUG.
_ROUTINE = frozenset(
    {"no_change", "duplicate_request", "duplicate_outcome", "duplicate_event", "refund_pending"}
)
_COMMAND = codec("gateway_command")
_STATUS = codec("payment_status")
_REFUND = codec("refund_status")
_SCREEN = codec("fraud_check")
REPAIR_SLICE = 100  # records a repair applies between two turns of the event loop
OUTBOX = "outbox"  # the row's records not yet seen sent (`agents.outbox`)


def _output(topic: Any, key: bytes, schema: Codec, record: dict[str, Any]) -> Output:
    return Output(topic, key, schema.encode(record), schema.headers)


class _Record:
    """A record read by the repair reader, shaped like a faust event for dead-lettering."""

    def __init__(self, record: Any) -> None:
        self.message = record


class UnhandledEvent(Exception):
    """A verified webhook of a type we do not act on: counted and skipped, not an error."""

    def __init__(self, gateway: str, event_type: str) -> None:
        super().__init__(f"{gateway} {event_type}")
        self.gateway = gateway
        self.event_type = event_type


def decode_input(topic: str, value: bytes | None, headers: dict[str, bytes]) -> Input:
    if topic == names.PAYMENT_INITIATION:
        return payment_requested_from_record(decode("payment_requested", value, headers))
    if topic == names.GATEWAY_RESULTS:
        return result_from_record(decode("gateway_result", value, headers))
    if topic == names.PAYMENT_ACTIONS:
        return action_from_record(decode("payment_action", value, headers))
    if topic == names.REFUND_REQUEST:
        return refund_requested_from_record(decode("refund_request", value, headers))
    if topic == names.GATEWAY_EVENTS:
        return notice_from_event(decode("gateway_event", value, headers))
    if topic == names.PAYMENT_CHECKS:
        return check_from_record(decode("payment_check", value, headers))
    if topic == names.FRAUD_VERDICTS:
        return verdict_from_record(decode("fraud_verdict", value, headers))
    raise SerializationError(f"payment agent does not read topic {topic!r}")


def notice_from_event(rec: dict[str, Any]) -> GatewayNotice:
    try:
        payload = json.loads(rec["payload"])
    except (ValueError, TypeError) as exc:
        raise SerializationError(f"gateway event payload is not JSON: {exc}") from exc
    effect = interpret(rec["gateway"], rec["event_type"], payload)
    if effect is None:
        raise UnhandledEvent(rec["gateway"], rec["event_type"])
    return GatewayNotice(
        payment_id=rec["payment_id"],
        event_id=f"{rec['gateway']}:{rec['event_id']}",
        event_type=rec["event_type"],
        kind=NoticeKind(effect.kind.value),
        status=effect.status,
        occurred_at_ms=to_ms(rec["occurred_at"]),
        gateway_reference=effect.gateway_reference,
        amount=effect.amount,
        decline_code=effect.decline_code,
        refund_state=RefundState(effect.refund_status.value) if effect.refund_status else None,
        refund_reference=effect.refund_reference,
        capture_needed=effect.capture_needed,
    )


def request_key(item: Input) -> tuple[str, str] | None:
    """A client request's key in the `idempotency` table and its body fingerprint."""
    if isinstance(item, PaymentRequested):
        return f"payment:{item.payment_id}", item.fingerprint
    if isinstance(item, RefundRequested):
        return f"refund:{item.refund_id}", item.fingerprint
    if isinstance(item, CaptureRequested):
        return f"capture:{item.payment_id}:{item.request_id}", str(item.amount)
    if isinstance(item, CancelRequested):
        return f"cancel:{item.payment_id}:{item.request_id}", ""
    if isinstance(item, ReviewDecided):
        return f"review:{item.payment_id}:{item.request_id}", str(item.approve)
    return None


def recall(tables: Tables, item: Input, state: Payment | None, now_ms: int) -> Decision | None:
    """The decision the dedup tables make alone: a repeat of an input already applied.

    An entry counts only if the payment has reached the version the entry recorded: after a
    crash the entry may have been saved while the payment's own write was lost, and then the
    input must be applied again.
    """
    request = request_key(item)
    if isinstance(item, GatewayNotice):
        entry, reason = tables.seen_events.get(item.event_id, now_ms), "duplicate_event"
    elif request is not None:
        entry, reason = tables.idempotency.get(request[0], now_ms), "duplicate_request"
        if entry is not None and entry["fingerprint"] != request[1]:
            return Decision(state, ignored="idempotency_conflict")
    else:
        return None
    if entry is None or state is None or state.version < entry["version"]:
        return None
    return duplicate(state, reason)


def remember(
    tables: Tables, item: Input, decision: Decision, *, partition: int, now_ms: int
) -> None:
    """Record a client request or webhook event, and what became of it, in its dedup table."""
    entry = {
        "payment_id": item.payment_id,
        "version": decision.state.version if decision.state is not None else 0,
        "outcome": decision.ignored or "applied",
    }
    request = request_key(item)
    if isinstance(item, GatewayNotice):
        entry["event_type"] = item.event_type
        tables.seen_events.put(item.event_id, entry, partition=partition, now_ms=now_ms)
    elif request is not None:
        entry["fingerprint"] = request[1]
        tables.idempotency.put(request[0], entry, partition=partition, now_ms=now_ms)


def reschedule(tables: Tables, payment: Payment, schedule: Schedule, *, partition: int) -> None:
    """Put the payment's next janitor check in the due index, or take it out."""
    due = due_at(payment, schedule)
    held = payment.screening is not None and not payment.awaiting_verdict
    if due is None and not held and (payment.status in CHECKED or stuck_refunds(payment)):
        JANITOR_EXHAUSTED.labels(payment.gateway, payment.status.value).inc()
        log.warning(
            "%s is still %s after the janitor's last check: left for an operator",
            payment.payment_id,
            payment.status.value,
        )
    tables.janitor.set(payment.payment_id, due, partition=partition)


def observe_settled(payment: Payment, changes: tuple[StatusChange, ...]) -> None:
    """Count a payment's first settled status, and how long it took from the request."""
    for change in changes:
        if change.status in SETTLED and change.previous_status not in SETTLED:
            PAYMENTS_SETTLED.labels(payment.gateway, change.status.value).inc()
            took_s = max(change.occurred_at_ms - payment.created_at_ms, 0) / 1000
            PROCESSING_SECONDS.labels(payment.gateway).observe(took_s)


def register(
    app: faust.App,
    topics: Topics,
    tables: Tables,
    *,
    sweep_every_ms: int,
    schedule: Schedule,
    bootstrap: str,
    fraud_rules: FraudRules | None,
) -> Any:
    """`fraud_rules`: the fraud rules, or None when screening is off. The stateless ones are
    decided in `decide`; a screen goes to the first stage with a rule on (`first_stage`)."""
    payments = tables.payments
    first = fraud_rules.first_stage if fraud_rules is not None else Stage.USER
    ledger = InputLedger(tables.inputs)
    reader = RangeReader(bootstrap)
    writes = ChangelogWrites(payments, tables.refunds, tables.janitor.stored)
    outbox = Outbox()
    by_name = {
        t.get_topic_name(): t
        for t in (
            topics.refund_status,
            topics.gateway_commands,
            topics.payment_status,
            topics.fraud_checks,
            topics.fraud_card_checks,
        )
    }

    async def forget(sender: object, revoked: object, **_: object) -> None:
        ledger.forget()

    app.on_partitions_revoked.connect(forget)  # type: ignore[arg-type]

    def outputs(decision: Decision, payment_id: str) -> list[Output]:
        """The records a decision sends, encoded, in the order they leave."""
        state = decision.state
        key = payment_id.encode()
        currency = state.amount.currency if state else ""
        out = [
            _output(topics.refund_status, key, _REFUND, refund_status_record(refund, currency))
            for refund in decision.refund_changes
        ]
        if state is None:
            return out
        out += [
            _output(topics.gateway_commands, key, _COMMAND, command_to_record(command))
            for command in decision.commands
        ]
        out += [
            _output(topics.payment_status, key, _STATUS, status_record(state, change))
            for change in decision.changes
        ]
        for screen in decision.screens:  # to the first fraud stage with a rule on
            topic, by = (
                (topics.fraud_card_checks, screen.card)
                if first is Stage.CARD
                else (topics.fraud_checks, screen.user_id)
            )
            out.append(
                _output(topic, by.encode(), _SCREEN, screen_to_record(screen, kind="screen"))
            )
        out += [  # straight to the card stage
            _output(
                topics.fraud_card_checks,
                screen.card.encode(),
                _SCREEN,
                screen_to_record(screen, kind="decline"),
            )
            for screen in decision.declines
        ]
        return out

    async def handle(
        source: Any, value: bytes | None, headers: Any, *, ack: Any = None
    ) -> Decision | None:
        """Decode, decide and save one input record, and hand its outputs to the outbox, with
        `ack` (the event to ack once they are sent, if any); None when it was not applied
        (dead-lettered, or a webhook type we do not act on). `source` has the record's
        `message` (topic, partition, offset, key, value), as a faust event does."""
        msg = source.message
        now_ms = int(time.time() * 1000)
        for dedup in (tables.idempotency, tables.seen_events):
            dedup.sweep(msg.partition, now_ms, every_ms=sweep_every_ms)
        try:
            item = decode_input(msg.topic, value, dict(headers or {}))
            row = payments.get(item.payment_id)
            # An input about a payment the table does not hold may have overtaken the
            # request that creates it: the stream merges the input topics in no fixed order
            # (a restart reads several of them again at once).
            if (
                row is None
                and not isinstance(item, PaymentRequested)
                and await catch_up(msg.partition)
            ):
                row = payments.get(item.payment_id)
            state = payment_from_row(row) if row is not None else None
            recalled = recall(tables, item, state, now_ms)
            decision = recalled or decide(state, item, fraud=fraud_rules)
        except UnhandledEvent as unhandled:
            WEBHOOKS_UNHANDLED.labels(unhandled.gateway, unhandled.event_type).inc()
            log.info("unhandled webhook type, skipped: %s", unhandled)
            await outbox.put(writes.take(), (), ack)
            return None
        except (SerializationError, PaymentError) as exc:
            await send_to_dead_letter(topics.dead_letter, source, exc)
            await outbox.put(writes.take(), (), ack)
            return None
        if decision.ignored is not None:
            reason = decision.ignored.split(":")[0]
            INPUTS_IGNORED.labels(msg.topic, reason).inc()
            log.log(
                logging.DEBUG if reason in _ROUTINE else logging.INFO,
                "ignored %s for %s: %s",
                type(item).__name__,
                item.payment_id,
                decision.ignored,
            )
        if decision.verdict is not None:  # the stateless rules decided it, in `decide`
            observe_verdict(decision.verdict.payment_id, decision.verdict.hits)
        if decision.ignored is None and decision.state is not None:
            observe_settled(decision.state, decision.changes)
        # Records an earlier outbox saved and may not have sent go again first, as they were.
        kept = row.get(OUTBOX, ()) if row is not None else ()
        sends = [*restored(outbox.unseen(kept), by_name), *outputs(decision, item.payment_id)]
        new = decision.state
        if new is not None:
            for refund in decision.refund_changes:
                if (line := new.refund(refund.refund_id)) is not None:
                    tables.refunds[refund.refund_id] = refund_to_row(line, item.payment_id)
            # Outputs from an unchanged state (a replay, or records sent again) save the row
            # too: this worker's store may hold a row whose write never reached the log.
            if new != state or sends:
                saved = payment_to_row(new)
                saved[OUTBOX] = outbox.keep(kept, sends)
                payments[item.payment_id] = saved
            if new != state:
                reschedule(tables, new, schedule, partition=msg.partition)
        await outbox.put(writes.take(), sends, ack)
        if recalled is None:  # after the payment: an entry never runs ahead of its state
            remember(tables, item, decision, partition=msg.partition, now_ms=now_ms)
        return decision

    async def catch_up(partition: int) -> bool:
        """Apply the partition's payment requests not yet applied, up to its high watermark,
        read straight from it; True when there were any. Asked before an input about a
        payment the table does not hold is ignored as `unknown_payment`: that input may have
        overtaken the request that creates its payment."""
        tp = TP(names.PAYMENT_INITIATION, partition)
        try:
            end = app.consumer.highwater(tp)
        except Exception:  # not assigned here (aiokafka asserts): nothing to catch up on
            return False
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
        if end is None or committed is None:
            return False
        # With no mark yet, the ledger falls back on the commit (as the agent's loop does),
        # never on the high watermark: records not yet fetched are not applied.
        last = ledger.last_applied(tp.topic, partition, committed)
        if end <= last + 1:
            return False
        try:
            await repair(tp.topic, partition, last + 1, end, why="not applied yet")
        except (TimeoutError, KafkaError) as exc:
            log.warning("%s[%s]: catching up failed, %r", tp.topic, partition, exc)
            return False
        return True

    async def repair(
        topic: str, partition: int, start: int, end: int, *, why: str = "skipped by the stream"
    ) -> None:
        """Apply records of a partition the stream has not given the agent, read straight from
        the partition: ones it skipped, or ones an input about their payment cannot wait for."""
        log.warning(
            "%s[%s]: offsets %s..%s were %s; applying them now",
            topic, partition, start, end - 1, why,
        )  # fmt: skip
        for n, record in enumerate(await reader.read(topic, partition, start, end), 1):
            if n % REPAIR_SLICE == 0:  # a long range never holds the event loop for long
                await asyncio.sleep(0)
            decision = await handle(_Record(record), record.value, record.headers)
            was = "repeat" if decision is None or decision.ignored is not None else "lost"
            REPAIRED.labels(topic, was).inc()
            if was == "lost":
                log.warning("%s[%s]@%s had never been applied", topic, partition, record.offset)
            ledger.repaired(topic, partition, record.offset)

    @app.agent(topics.payment_inputs, name="payment-agent")
    async def payment_agent(stream: Any) -> Any:
        manual = stream.noack()  # acked by the outbox, once the input's outputs are sent
        sender = asyncio.ensure_future(outbox.run(manual.ack))
        try:
            async for event in manual.events():
                if sender.done():  # it only stops on a bug: stop here too, acking nothing
                    sender.result()
                await apply(event)
        finally:
            sender.cancel()

    async def apply(event: Any) -> None:
        """Repair any gap before the input, then handle it (unless a catch-up did), its ack
        handed to the outbox."""
        msg = event.message
        # Any input topic of this partition the group committed past what was applied
        # (the record in hand reveals its own topic's gap even before a commit does).
        committed = getattr(app.consumer, "_committed_offset", {})
        for topic in names.PAYMENT_INPUTS:
            end = msg.offset if topic == msg.topic else committed.get(TP(topic, msg.partition))
            if end is not None:
                last = ledger.last_applied(topic, msg.partition, end)
                if end > last + 1:
                    await repair(topic, msg.partition, last + 1, end)
        if ledger.was_repaired(msg.topic, msg.partition, msg.offset):
            # A catch-up applied it already, ahead of the stream: applied again, it would
            # come back as a duplicate and send the payment's last records a second time.
            await outbox.put([], (), event)
        else:
            await handle(event, event.value, event.headers, ack=event)
        ledger.applied(msg.topic, msg.partition, msg.offset)
        if ledger.due(msg.topic, msg.partition):  # a flush covered it: write it now
            ledger.persist(msg.topic, msg.partition)

    @app.timer(interval=1.0, name="input-marks")  # type: ignore[untyped-decorator]
    async def flush_marks() -> None:
        """One producer flush a second for every input partition's mark, off the agent's
        path: the marks applied before it are then safe to persist (`streams.ledger`)."""
        marks = ledger.snapshot()
        await app.producer.flush()
        ledger.flushed(marks)

    return payment_agent
