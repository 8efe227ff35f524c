"""The official server-side libraries no one here wrote — Segment's `segment-analytics-python`
and RudderStack's `rudder-sdk-python` — pointed at a real `ecrm api`, with and without gzip
(RudderStack's default): every event lands once in the profiles, nothing reported as failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.api_server import READ_KEY, WRITE_KEY, serving
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

segment_client = pytest.importorskip("segment.analytics.client", reason="pip install '.[test]'")
rudder_client = pytest.importorskip("rudderstack.analytics.client", reason="pip install '.[test]'")

CLIENTS = {"segment": segment_client.Client, "rudderstack": rudder_client.Client}


def send_a_shoppers_day(client: Any, user: str) -> None:
    """An anonymous visit, a login, a purchase, the same cart add twice (one retried by the
    library with its messageId), member traits — as a storefront's backend would send them."""
    anon = f"{user}-anon"
    now = datetime.now(UTC)
    client.track(
        anonymous_id=anon,
        event="Product Viewed",
        properties={"sku": "tea-1", "category": "tea"},
        timestamp=now - timedelta(minutes=9),
    )
    client.track(
        anonymous_id=anon,
        event="Product Added",
        properties={"sku": "tea-1", "price": 30, "quantity": 1},
        timestamp=now - timedelta(minutes=8),
        message_id=f"{user}-add-1",
    )
    client.track(  # the same message again (a library retry repeats its messageId)
        anonymous_id=anon,
        event="Product Added",
        properties={"sku": "tea-1", "price": 30, "quantity": 1},
        timestamp=now - timedelta(minutes=8),
        message_id=f"{user}-add-1",
    )
    client.identify(user_id=user, anonymous_id=anon, traits={"email": f"{user}@example.com"})
    client.identify(
        user_id=user,
        traits={"birthday": "1988-11-02", "consent": {"sms": True}},
        timestamp=now - timedelta(minutes=7),
    )
    client.identify(user_id=user)  # nothing to record: accepted, not an error
    client.track(
        user_id=user,
        event="Order Completed",
        properties={
            "order_id": f"{user}-o1",
            "total": 88,
            "currency": "cny",
            "products": [{"product_id": "pot-1", "quantity": 1, "price": 88}],
        },
        timestamp=now - timedelta(minutes=6),
    )
    client.page(user_id=user, name="Home", properties={"url": "https://shop.example/"})


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("library", sorted(CLIENTS))
def test_an_official_library_lands_every_event_once_in_the_profile(
    settings, start_worker, library, gzip
):
    start_worker()
    user = f"{library}-{'gz' if gzip else 'plain'}"
    errors: list[Any] = []
    with serving(settings) as url:
        client = CLIENTS[library](
            write_key=WRITE_KEY,
            host=url,
            gzip=gzip,
            on_error=lambda exc, batch: errors.append((exc, batch)),
            max_retries=1,
        )
        send_a_shoppers_day(client, user)
        client.flush()
        client.join()
        assert errors == []

        def profile() -> dict[str, Any] | None:
            got = httpx.get(f"{url}/v1/profiles/{user}", auth=(READ_KEY, ""), timeout=10)
            return got.json() if got.status_code == 200 else None

        seen = wait_for(
            lambda: (
                (p := profile()) and p["frequency"] == 1 and p["cart"] and p.get("birthday") and p
            ),
            what=f"{user}'s purchase, merged cart and traits",
        )
        # the visit before login moved to the customer; the retried add counted once
        assert seen["customer_id"] == user
        assert seen["cart"]["tea-1"]["qty"] == 1 and seen["views"]["tea-1"]["count"] == 1
        assert Decimal(seen["monetary"]) == 88 and seen["birthday"] == "11-02"
        assert seen["consent"]["sms"]["granted"] is True
        anon = httpx.get(f"{url}/v1/profiles/{user}-anon", auth=(READ_KEY, ""), timeout=10)
        assert anon.json()["customer_id"] == user  # the anonymous id redirects
