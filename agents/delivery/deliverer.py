"""One action, from `ecrm.actions` (or the retry queue) to its channel: claim it, check consent
and erasure again, mint its coupon, find the address, render, wait for the provider's rate
limit, send, and write what came of it (agents/delivery/records.py says how that is once).

    deliverer = Deliverer(settings, book, redis_client)
    await deliverer.handle(raw_action_bytes)          # from Kafka
    await deliverer.retry_due(partition)              # from the retry queue
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from agents.delivery.book import DeliveryBook
from agents.delivery.channels.base import Channel, Message, Outcome
from agents.delivery.records import Claimed, DeliveryRecords
from agents.delivery.render import RenderError, render, variables
from agents.delivery.retry import GiveUp, after_failure
from agents.delivery.shop import ShopAnswer
from agents.delivery.signing import click_token
from agents.rules.contact_policy import consent_of
from schemas.delivery import DeliveryFailure, Receipt, WebhookProvider
from schemas.outputs import Action
from schemas.privacy import erasure_token
from schemas.profile import Profile
from streams import keyspace
from streams.redis_client import AsyncRedis
from streams.settings import Settings

log = logging.getLogger(__name__)

#: what `handle` came to, counted per channel for operators and the demo
Result = str


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        book: DeliveryBook,
        client: AsyncRedis,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dice: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.book = book
        self.client = client
        self.records = DeliveryRecords(client, settings.partitions, settings.topic_prefix)
        self.clock = clock
        self.dice = dice
        self.privacy_key = settings.privacy_key()
        #: (channel, result) -> actions: sent, failed, retry, done (already), busy, later, skipped
        self.counts: Counter[tuple[str, str]] = Counter()
        #: the last message rendered per channel (the demo prints one)
        self.last_rendered: dict[str, str] = {}

    # -- one action ------------------------------------------------------------------------------

    async def handle(self, raw: bytes, *, retry: bool = False) -> Result:
        try:
            action = Action.model_validate_json(raw)
        except ValidationError as exc:
            log.error(
                "an action on %s cannot be read, skipped: %s", self.settings.topic("actions"), exc
            )
            self.counts[("?", "unreadable")] += 1
            return "unreadable"
        channel = action.channel or ("webhook" if action.kind == "webhook" else None)
        if channel is None:  # points or a tag the worker applied itself: nobody to tell
            self.counts[("-", "skipped")] += 1
            return "skipped"
        deliver = self.book.deliver
        found = deliver.provider_for(channel)
        provider_name, provider = found if found is not None else ("", None)
        timeout = provider.timeout if provider is not None else timedelta(seconds=10)
        now = self.clock()
        claimed = await self.records.claim(
            action.action_id, raw, _ms(now), _lease_ms(timeout), retry
        )
        if claimed.verdict != "send":
            self.counts[(channel, claimed.verdict)] += 1
            return claimed.verdict
        if provider is None:
            outcome = Outcome(
                "failed", reason=f"no provider for channel {channel!r} in the delivery file"
            )
        else:
            try:
                outcome = await self._attempt(action, channel, provider_name, provider, claimed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug or bad data: retried, then failed
                log.exception("delivering action %s raised", action.action_id)
                outcome = Outcome("retry", reason=f"{type(exc).__name__}: {exc}")
        return await self._record(action, channel, provider_name, claimed, outcome)

    async def _attempt(
        self, action: Action, channel: str, provider_name: str, provider: Any, claimed: Claimed
    ) -> Outcome:
        erased, profile = await self._erased_and_profile(action.customer_id)
        if erased:
            return Outcome("failed", reason="erased")
        if profile is not None:
            consent = consent_of(profile, self.settings.consent_granted)
        else:
            consent = consent_of(
                Profile(customer_id=action.customer_id), self.settings.consent_granted
            )
        if not consent.allows(action.channel):
            return Outcome("failed", reason="no_consent")
        shop = self.book.shop
        try:
            code = claimed.coupon_code or None
            if action.kind == "coupon" and code is None:
                code = await shop.coupon_code(action)
                await self.records.remember_coupon(action.action_id, code)
            address = None
            if not isinstance(provider, WebhookProvider):
                address = await shop.address(action, channel)
        except ShopAnswer as exc:
            return exc.outcome
        fields = profile.model_dump(mode="json") if profile is not None else {}
        names = variables(
            action, fields, self.book.deliver.profile_fields, code, self._link(action)
        )
        try:
            rendered = render(self.book.deliver, action, channel, names)
        except RenderError as exc:
            return Outcome("failed", reason=str(exc))
        if rendered is not None and rendered.text:
            self.last_rendered[channel] = rendered.text
        await self._wait_for_rate(provider_name, provider)
        adapter: Channel = self.book.channel(provider_name)
        return await adapter.send(Message(action, address, rendered, code))

    async def _record(
        self, action: Action, channel: str, provider: str, claimed: Claimed, outcome: Outcome
    ) -> Result:
        now = self.clock()
        erased = outcome.reason == "erased"
        receipt = Receipt(
            action_id=action.action_id,
            rule_id=action.rule_id,
            customer_id="" if erased else action.customer_id,  # erased: named nowhere again
            channel=channel,
            provider=provider,
            status="sent" if outcome.status == "sent" else "failed",
            provider_id=outcome.provider_id,
            reason=outcome.reason,
            attempts=claimed.attempts,
            at=now,
        )
        result: Result = outcome.status
        if outcome.status == "retry":
            first = datetime.fromtimestamp(claimed.first_try_ms / 1000, UTC)
            then = after_failure(
                claimed.attempts, first, now, outcome.reason, self.book.deliver.retry, self.dice()
            )
            if isinstance(then, GiveUp):
                receipt = receipt.model_copy(update={"reason": then.reason})
                result = "failed"
            else:
                await self.records.finish(receipt, retry_at_ms=_ms(then.at))
                log.info("action %s: %s; retry at %s", action.action_id, outcome.reason, then.at)
                self.counts[(channel, "retry")] += 1
                return "retry"
        failure = None
        if receipt.status == "failed":
            failure = DeliveryFailure(
                action_id=action.action_id,
                rule_id=action.rule_id,
                customer_id=receipt.customer_id,
                channel=channel,
                provider=provider,
                reason=receipt.reason,
                attempts=claimed.attempts,
                at=now,
                action=None if erased else action.model_dump(mode="json"),
            )
            log.warning("action %s not delivered: %s", action.action_id, receipt.reason)
        await self.records.finish(receipt, failure=failure)
        self.counts[(channel, result)] += 1
        return result

    # -- reads at send time ----------------------------------------------------------------------

    async def _erased_and_profile(self, customer_id: str) -> tuple[bool, Profile | None]:
        """Whether the customer is erased, and their live profile: one round trip (both keys
        carry the customer's home partition's tag, so one slot on a cluster)."""
        token = erasure_token(customer_id, self.privacy_key)
        home = keyspace.home(customer_id, self.settings.partitions)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(keyspace.erased(token, home))
            pipe.get(keyspace.profile(customer_id, self.settings.partitions))
            erased, raw = await pipe.execute()
        return bool(erased), None if raw is None else Profile.model_validate_json(raw)

    def _link(self, action: Action) -> Callable[[str], str]:
        base = self.book.deliver.click_base

        def link(url: str) -> str:
            if not base:
                return url
            return f"{base.rstrip('/')}/r/{click_token(action.action_id, url, self.privacy_key)}"

        return link

    async def _wait_for_rate(self, name: str, provider: Any) -> None:
        rate = getattr(provider, "rate", None)
        if rate is None:
            return
        burst = rate.burst or max(1, int(rate.per_second))
        while (
            wait := await self.records.take_token(name, rate.per_second, burst, _ms(self.clock()))
        ) > 0:
            await asyncio.sleep(wait / 1000)

    # -- the retry queue -------------------------------------------------------------------------

    async def retry_due(self, partition: int) -> int:
        """Try again every action of the partition whose time has come; how many."""
        ids = await self.records.due(partition, _ms(self.clock()))
        for action_id in ids:
            raw = await self.records.action_json(action_id)
            if raw is None:  # the record expired: nothing left to send
                await self.client.zrem(keyspace.delivery_retries(partition), action_id)
                continue
            await self.handle(raw, retry=True)
        return len(ids)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _lease_ms(timeout: timedelta) -> int:
    """How long a sender holds an action: twice the provider's timeout and five seconds (a
    sender still at it after that is taken over, and the idempotency key covers the overlap)."""
    return int(timeout.total_seconds() * 2000) + 5000


def wall_ms() -> int:
    return int(time.time() * 1000)
