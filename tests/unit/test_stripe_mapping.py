import typing

import stripe

from domain.status import PaymentStatus
from gateways.stripe import STATUS_MAP


def test_every_stripe_payment_intent_status_is_mapped() -> None:
    annotation = stripe.PaymentIntent.__annotations__["status"]
    literal = next(a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal)
    provider_values = set(typing.get_args(literal))
    assert provider_values, "could not read PaymentIntent statuses from the SDK"
    assert provider_values == set(STATUS_MAP)
    assert all(isinstance(v, PaymentStatus) for v in STATUS_MAP.values())
