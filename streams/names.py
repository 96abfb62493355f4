"""Topic names: the pipeline's public contract. Pure constants, safe for the ingress to import."""

from __future__ import annotations

PAYMENT_INITIATION = "payment_initiation"  # PaymentRequested, from the ingress or any service
PAYMENT_ACTIONS = "payment_actions"  # PaymentAction: capture or cancel an authorization
REFUND_REQUEST = "refund_request"  # RefundRequested
GATEWAY_COMMANDS = "gateway_commands"  # GatewayCommand, payment agent -> executor
GATEWAY_RESULTS = "gateway_results"  # GatewayResult, executor -> payment agent
GATEWAY_EVENTS = "gateway_events"  # GatewayEvent, verified webhooks from the ingress
PAYMENT_CHECKS = "payment_checks"  # PaymentCheck, the janitor's answers from the gateways
PAYMENT_STATUS = "payment_status"  # PaymentStatus, one per transition, for consumers
REFUND_STATUS = "refund_status"  # RefundStatus, one per refund transition
PAYMENT_ANALYTICS = "payment_analytics"  # PaymentAttempt, one per gateway attempt outcome
DEAD_LETTER = "dead_letter"  # undecodable or unprocessable records, with reason headers

# Every input about a payment is keyed by payment id, so these must share a partition count.
KEYED_TOPICS = (
    PAYMENT_INITIATION,
    PAYMENT_ACTIONS,
    REFUND_REQUEST,
    REFUND_STATUS,
    PAYMENT_ANALYTICS,
    GATEWAY_COMMANDS,
    GATEWAY_RESULTS,
    GATEWAY_EVENTS,
    PAYMENT_CHECKS,
    PAYMENT_STATUS,
)
ALL_TOPICS = (*KEYED_TOPICS, DEAD_LETTER)

# Dead-letter headers
DLQ_SOURCE_TOPIC = "dlq-source-topic"
DLQ_SOURCE_PARTITION = "dlq-source-partition"
DLQ_SOURCE_OFFSET = "dlq-source-offset"
DLQ_ERROR_TYPE = "dlq-error-type"
DLQ_ERROR_MESSAGE = "dlq-error-message"
