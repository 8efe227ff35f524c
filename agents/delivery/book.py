"""The delivery file in force in a running `ecrm deliver`, with the channel adapters built from
it; re-read when it changes (agents/reloading_file.py). A new file whose credentials cannot be
found is refused like an invalid one: the file in force stays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.delivery.channels.base import Channel
from agents.delivery.shop import Shop
from agents.reloading_file import ReloadingFile
from schemas.delivery import Deliver, load_delivery
from schemas.errors import ConfigError, DeliveryError


def build_channel(name: str, provider: Any) -> Channel:
    """The adapter of one provider of the file."""
    if provider.type == "webhook":
        from agents.delivery.channels.webhook import WebhookChannel

        return WebhookChannel(name, provider)
    if provider.type == "email":
        from agents.delivery.channels.email import EmailChannel

        return EmailChannel(name, provider)
    if provider.type == "aliyun_sms":
        from agents.delivery.channels.sms import AliyunSmsChannel

        return AliyunSmsChannel(name, provider)
    if provider.type == "tencent_sms":
        from agents.delivery.channels.sms import TencentSmsChannel

        return TencentSmsChannel(name, provider)
    from agents.delivery.channels.wechat import WechatChannel

    return WechatChannel(name, provider)


class DeliveryBook(ReloadingFile):
    what = "delivery file"
    deliver: Deliver
    channels: dict[str, Channel]
    shop: Shop

    def __init__(self, path: Path, *, redis: Any = None) -> None:
        self.redis = redis  # the adapters that cache tokens share them through Redis
        self.retired: list[Channel | Shop] = []
        super().__init__(path)

    def _load(self, *, reloading: bool) -> None:
        deliver = load_delivery(self.path)
        try:
            channels = {
                name: build_channel(name, provider) for name, provider in deliver.providers.items()
            }
            shop = Shop(deliver.contacts, deliver.coupons)
        except ConfigError as exc:
            raise DeliveryError(f"{self.path}: {exc}") from exc
        for channel in channels.values():
            if hasattr(channel, "use_redis"):
                channel.use_redis(self.redis)
        if reloading:
            self.retired += [*self.channels.values(), self.shop]
        self.deliver, self.channels, self.shop = deliver, channels, shop

    def _loaded(self) -> str:
        return f": {len(self.deliver.providers)} providers, {len(self.deliver.templates)} templates"

    def channel(self, provider: str) -> Channel:
        return self.channels[provider]

    async def close(self) -> None:
        for item in [*self.channels.values(), self.shop, *self.retired]:
            await item.close()
