"""The delivery file (ECRM_DELIVERY_FILE, `deliver:`): which provider sends each channel, the
providers' addresses and where their credentials are, the retry policy and the templates per
channel and locale — and the receipts `ecrm deliver` writes (`ecrm.deliveries`,
`ecrm.delivery-failures`). Credentials never appear in the file: a provider names the
environment variable (`*_env`) or the secret file (`*_file`) that holds each one.

    deliver:
      channels: {sms: aliyun, email: smtp, inbox: shop}
      providers:
        shop: {type: webhook, url: "https://shop.example/ecrm", secret_env: SHOP_HOOK_SECRET}
      templates:
        cart_coupon:
          sms: {zh-CN: {template_code: SMS_1, params: {code: "{{ coupon_code }}"}}}
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from schemas.errors import DeliveryError
from schemas.rule_values import Duration, Strict
from schemas.rules_yaml import explain, read_text_file, read_yaml

#: What a delivery step can say about an action (CONTRACT.md, `ecrm.deliveries`).
DeliveryStatus = Literal["sent", "failed", "delivered", "bounced", "opened", "clicked"]
DELIVERY_STATUSES: tuple[str, ...] = (
    "sent",
    "failed",
    "delivered",
    "bounced",
    "opened",
    "clicked",
)

ProviderType = Literal["webhook", "email", "aliyun_sms", "tencent_sms", "wechat"]
#: what each provider type sends: a channel is served only by a provider of its kind
#: (a webhook serves any channel: the shop's own system sends it on)
SERVES: dict[str, frozenset[str]] = {
    "email": frozenset({"email"}),
    "aliyun_sms": frozenset({"sms"}),
    "tencent_sms": frozenset({"sms"}),
    "wechat": frozenset({"wechat", "miniprogram"}),
}
#: Longest SMS text of one template variable, in characters (Aliyun: 35 for a code-like
#: variable is the documented strict limit; both providers refuse longer parameters).
SMS_PARAM_MAX_CHARS = 35


class Secret(Strict):
    """Where one credential is: an environment variable, or a file (Docker/Kubernetes
    secrets). Never the value."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("name exactly one of env: (a variable) or file: (a secret file)")
        return self


class RateLimit(Strict):
    """Sends a second for one provider, shared by every `ecrm deliver` process (Redis)."""

    per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1)


class ProviderBase(Strict):
    timeout: Duration = timedelta(seconds=10)
    rate: RateLimit | None = None
    #: the `?token=` a provider's status callback carries (POST /v1/receipts/{name}), for
    #: providers whose callbacks are not signed (SMS, WeChat); a webhook's are signed instead
    receipt_token: Secret | None = None


class WebhookProvider(ProviderBase):
    """HTTP POST of the action as JSON, signed with the secret (docs/delivery.md)."""

    type: Literal["webhook"]
    url: str
    secret: Secret


class EmailProvider(ProviderBase):
    """SMTP with STARTTLS (or implicit TLS on 465)."""

    type: Literal["email"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    #: a CA file to trust beyond the system's (a private relay; the tests' own server)
    ca_file: Path | None = None
    username: str | None = None
    password: Secret | None = None
    sender: str = Field(alias="from")
    #: the one-click unsubscribe address, `{token}` replaced by the action's unsubscribe token
    #: (RFC 8058): `ecrm api` serves POST /v1/unsubscribe?token=… (docs/privacy.md)
    unsubscribe_url: str


class AliyunSmsProvider(ProviderBase):
    type: Literal["aliyun_sms"]
    endpoint: str = "https://dysmsapi.aliyuncs.com/"
    access_key_id: Secret
    access_key_secret: Secret
    sign_name: str


class TencentSmsProvider(ProviderBase):
    type: Literal["tencent_sms"]
    endpoint: str = "https://sms.tencentcloudapi.com/"
    region: str = "ap-guangzhou"
    secret_id: Secret
    secret_key: Secret
    sdk_app_id: str
    sign_name: str


class WechatProvider(ProviderBase):
    """Official-account template messages (or mini-program subscribe messages)."""

    type: Literal["wechat"]
    api: str = "https://api.weixin.qq.com"
    kind: Literal["official_account", "mini_program"] = "official_account"
    app_id: str
    app_secret: Secret


Provider = Annotated[
    WebhookProvider | EmailProvider | AliyunSmsProvider | TencentSmsProvider | WechatProvider,
    Field(discriminator="type"),
]


class Contacts(Strict):
    """Where an address comes from: ecrm keeps no phone numbers, e-mail addresses or openids,
    so `ecrm deliver` asks the shop (a signed POST `{customer_id, channel}` answering
    `{"address": …}`) at send time and keeps nothing."""

    url: str
    secret: Secret
    timeout: Duration = timedelta(seconds=5)


class Coupons(Strict):
    """The shop's coupon endpoint: a signed POST of the coupon action, answering `{"code": …}`;
    called before the message of a `kind: coupon` action, with the action id as its
    idempotency key, so a retry gets the same code."""

    url: str
    secret: Secret
    timeout: Duration = timedelta(seconds=10)


class Retry(Strict):
    """Exponential backoff with full jitter: attempt n waits up to first * 2^(n-1), at most
    `max`; an action not sent `deadline` after its first attempt fails."""

    first: Duration = timedelta(seconds=2)
    max: Duration = timedelta(minutes=5)
    deadline: Duration = timedelta(hours=24)


class SmsTemplate(Strict):
    """A registered SMS template: its code at the provider and the values of its variables
    (each a Jinja2 expression); SMS text is never free."""

    template_code: str
    params: dict[str, str] = Field(default_factory=dict)
    #: the template's text as registered at the provider, with ${name} for each variable:
    #: what a preview (the demo, the logs of a webhook stand-in) shows; providers send their own
    text: str | None = None


class EmailTemplate(Strict):
    subject: str
    text: str
    html: str | None = None


class WechatTemplate(Strict):
    template_id: str
    #: field name -> value (Jinja2); sent as {"value": …} per field
    data: dict[str, str] = Field(default_factory=dict)
    page: str | None = None


class WebhookTemplate(Strict):
    """What a webhook channel carries beyond the action: a rendered text, optional."""

    text: str | None = None


class ChannelTemplates(Strict):
    """One template, per locale, for each channel it may be sent on."""

    sms: dict[str, SmsTemplate] = Field(default_factory=dict)
    email: dict[str, EmailTemplate] = Field(default_factory=dict)
    wechat: dict[str, WechatTemplate] = Field(default_factory=dict)
    miniprogram: dict[str, WechatTemplate] = Field(default_factory=dict)
    app: dict[str, WebhookTemplate] = Field(default_factory=dict)
    alibaba: dict[str, WebhookTemplate] = Field(default_factory=dict)
    push: dict[str, WebhookTemplate] = Field(default_factory=dict)
    inbox: dict[str, WebhookTemplate] = Field(default_factory=dict)
    webhook: dict[str, WebhookTemplate] = Field(default_factory=dict)

    def for_channel(self, channel: str) -> dict[str, Any]:
        found: dict[str, Any] = (
            getattr(self, channel, {}) if channel in type(self).model_fields else {}
        )
        return found


class Deliver(Strict):
    #: channel -> provider name; `webhook` is the channel of `kind: webhook` actions
    channels: dict[str, str] = Field(default_factory=dict)
    providers: dict[str, Provider] = Field(default_factory=dict)
    contacts: Contacts | None = None
    coupons: Coupons | None = None
    retry: Retry = Retry()
    #: the profile fields templates may read (beyond the action's params), by name
    profile_fields: list[str] = Field(default_factory=lambda: ["segment", "level"])
    locale: str = "zh-CN"
    #: where `ecrm api` is reachable from shoppers: click links are {click_base}/r/{token}
    click_base: str | None = None
    templates: dict[str, ChannelTemplates] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_providers(self) -> Deliver:
        for channel, name in self.channels.items():
            provider = self.providers.get(name)
            if provider is None:
                raise ValueError(
                    f'channel "{channel}" names provider "{name}", which providers: does not define'
                )
            serves = SERVES.get(provider.type)
            if serves is not None and channel not in serves:
                raise ValueError(
                    f'channel "{channel}" cannot be sent by provider "{name}" ({provider.type} '
                    f"sends {', '.join(sorted(serves))})"
                )
        return self

    def provider_for(self, channel: str) -> tuple[str, Any] | None:
        name = self.channels.get(channel)
        return None if name is None else (name, self.providers[name])

    def template(self, name: str | None, channel: str) -> dict[str, Any]:
        """locale -> the template `name` for `channel` ({} when there is none)."""
        if name is None or name not in self.templates:
            return {}
        return self.templates[name].for_channel(channel)


class DeliveryFile(Strict):
    deliver: Deliver


def load_delivery(path: Path) -> Deliver:
    """Read and check a delivery file; DeliveryError naming the field when it is wrong."""
    text = read_text_file(Path(path), DeliveryError)
    return parse_delivery(text, str(path))


def parse_delivery(text: str, source: str = "<delivery>") -> Deliver:
    try:
        data = read_yaml(text, source)
    except DeliveryError:
        raise
    except Exception as exc:  # the rules' YAML errors: the same words for this file
        raise DeliveryError(str(exc)) from exc
    if not isinstance(data, dict) or "deliver" not in data:
        raise DeliveryError(f"{source}: a delivery file has one section, deliver:")
    try:
        return DeliveryFile.model_validate(data).deliver
    except ValidationError as exc:
        lines = explain(exc, DeliveryFile)
        raise DeliveryError(f"{source}: " + "\n".join(lines)) from exc


# -- what `ecrm deliver` writes -----------------------------------------------------------------


class Receipt(BaseModel):
    """One delivery step of an action (`ecrm.deliveries`, the ClickHouse `deliveries` table)."""

    model_config = ConfigDict(frozen=True)

    action_id: str
    rule_id: str = ""
    customer_id: str = ""
    channel: str = ""
    provider: str = ""
    status: DeliveryStatus
    provider_id: str = ""
    reason: str = ""
    attempts: int = 0
    at: AwareDatetime

    def row(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


class DeliveryFailure(BaseModel):
    """An action that could not be delivered (`ecrm.delivery-failures`), with the reason."""

    model_config = ConfigDict(frozen=True)

    action_id: str
    rule_id: str = ""
    customer_id: str = ""
    channel: str = ""
    provider: str = ""
    reason: str
    attempts: int = 0
    at: AwareDatetime
    #: the action as it came (None for an erased customer's)
    action: dict[str, Any] | None = None
