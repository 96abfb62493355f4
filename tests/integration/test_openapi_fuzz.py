"""Schemathesis against the ingress's own OpenAPI document: bounded examples per operation,
with an admin key; no 5xx, and every answer as the document says (status, content type,
body schema). The schema is loaded from `build_openapi()`, the same code `/openapi.json`
serves, so collection needs no server; the calls go to a real stack."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from ingress.openapi import build_openapi
from payments.devstack import DevStack
from tests.integration.helpers import auth

pytestmark = pytest.mark.stack
schema = schemathesis.openapi.from_dict(build_openapi())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_ingress_keeps_its_openapi_promises(case: Any, stack: DevStack) -> None:
    # Not the two heuristics about requests: a request the schema allows may still break a
    # business rule (an unsupported currency, an unknown cursor) and get a documented 4xx.
    case.call_and_validate(
        base_url=stack.endpoints["ingress_url"],
        headers=auth(stack.endpoints),
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
