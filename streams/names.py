"""Topic names: the pipeline's public contract. Pure constants, safe for the ingress to import."""

from __future__ import annotations

PAYMENT_INITIATION = "payment_initiation"  # PaymentRequested, from the ingress or any service
PAYMENT_ACTIONS = "payment_actions"  # PaymentAction: capture or cancel an authorization
REFUND_REQUEST = "refund_request"  # RefundRequested
GATEWAY_COMMANDS = "gateway_commands"  # GatewayCommand, payment agent -> executor
GATEWAY_RESULTS = "gateway_results"  # GatewayResult, executor -> payment agent
GATEWAY_EVENTS = "gateway_events"  # GatewayEvent, verified webhooks from the ingress
PAYMENT_CHECKS = "payment_checks"  # PaymentCheck, the janitor's answers from the gateways
FRAUD_VERDICTS = "fraud_verdicts"  # FraudVerdict, the fraud rules' answer -> payment agent
FRAUD_CHECKS = "fraud_checks"  # FraudCheck keyed by user_id: the fraud rules' first stage
FRAUD_CARD_CHECKS = "fraud_card_checks"  # FraudCheck keyed by card: the second stage
PAYMENT_STATUS = "payment_status"  # PaymentStatus, one per transition, for consumers
REFUND_STATUS = "refund_status"  # RefundStatus, one per refund transition
PAYMENT_ANALYTICS = "payment_analytics"  # PaymentAttempt, one per gateway attempt outcome
# payment_analytics re-keyed by gateway|method|currency, for the metrics windows (internal)
ANALYTICS_BY_DIMS = "payment_analytics_by_dims"
PAYMENT_METRICS = "payment_metrics"  # PaymentMetrics, tumbling-window totals, for analytics
DEAD_LETTER = "dead_letter"  # undecodable or unprocessable records, with reason headers

# What the payment agent reads, all keyed by payment id.
PAYMENT_INPUTS = (
    PAYMENT_INITIATION,
    PAYMENT_ACTIONS,
    REFUND_REQUEST,
    GATEWAY_RESULTS,
    GATEWAY_EVENTS,
    PAYMENT_CHECKS,
    FRAUD_VERDICTS,
)

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
    FRAUD_VERDICTS,
)
# Keyed by window and dimensions; the metrics table shares the partitions of the first.
METRICS_TOPICS = (ANALYTICS_BY_DIMS, PAYMENT_METRICS)
# Keyed by user id and by card: each fraud stage's table shares its topic's partitions.
FRAUD_TOPICS = (FRAUD_CHECKS, FRAUD_CARD_CHECKS)
ALL_TOPICS = (*KEYED_TOPICS, *METRICS_TOPICS, *FRAUD_TOPICS, DEAD_LETTER)

# payment_analytics_by_dims headers: where the attempt was read from, to recognise a redelivery
SOURCE_PARTITION = "source-partition"
SOURCE_OFFSET = "source-offset"

# Dead-letter headers
DLQ_SOURCE_TOPIC = "dlq-source-topic"
DLQ_SOURCE_PARTITION = "dlq-source-partition"
DLQ_SOURCE_OFFSET = "dlq-source-offset"
DLQ_ERROR_TYPE = "dlq-error-type"
DLQ_ERROR_MESSAGE = "dlq-error-message"
