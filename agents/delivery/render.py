"""Templates rendered per channel and locale in a Jinja2 sandbox: pure, the profile and the
click-link maker passed in.

A template sees the action's params by name (`{{ value }}`, `{{ threshold }}`), the coupon
code once minted (`{{ coupon_code }}`), the profile fields the delivery file names
(`profile_fields`, e.g. `{{ segment }}`, `{{ level }}`), `action_id`, `rule_id`, and
`link(url)`, which turns an address into a signed click link through `ecrm api` (GET /r/…).
The sandbox refuses attribute tricks; an unknown variable is an error, never an empty hole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from schemas.delivery import (
    SMS_PARAM_MAX_CHARS,
    Deliver,
    EmailTemplate,
    SmsTemplate,
    WebhookTemplate,
    WechatTemplate,
)
from schemas.outputs import Action

#: channels whose providers send only what a template says: no template, no send
NEEDS_TEMPLATE = frozenset({"sms", "email", "wechat", "miniprogram"})

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class RenderError(ValueError):
    """A template that cannot be rendered for this action (unknown variable, too long …)."""


@dataclass(frozen=True)
class Rendered:
    """What a channel sends: `fields` by channel (sms: template variables; email: subject,
    text, html; wechat: data), the template's provider-side id, and the locale used."""

    channel: str
    locale: str
    template_id: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""


def pick_locale(available: Mapping[str, Any], wanted: str, default: str) -> str | None:
    """The locale to render: the wanted one, one of its language, the file's default, any."""
    if not available:
        return None
    for candidate in (wanted, default):
        if candidate in available:
            return candidate
        language = candidate.split("-")[0]
        for name in available:
            if name.split("-")[0] == language:
                return name
    return next(iter(available))


def variables(
    action: Action,
    profile: Mapping[str, Any],
    profile_fields: list[str],
    coupon_code: str | None,
    link: Callable[[str], str],
) -> dict[str, Any]:
    """What a template of this action may read (the module docstring)."""
    names: dict[str, Any] = {k: v for k, v in action.params.items() if k != "unsubscribe_token"}
    names.update({f: profile.get(f) for f in profile_fields})
    names.update(
        action_id=action.action_id,
        rule_id=action.rule_id,
        kind=action.kind,
        channel=action.channel,
        coupon_code=coupon_code,
        link=link,
    )
    return names


def _text(source: str, names: Mapping[str, Any]) -> str:
    try:
        return str(_ENV.from_string(source).render(**names))
    except TemplateError as exc:
        raise RenderError(f"template {source!r}: {exc}") from exc


def render(
    deliver: Deliver,
    action: Action,
    channel: str,
    names: Mapping[str, Any],
    locale: str | None = None,
) -> Rendered | None:
    """The action's template for `channel` rendered; None when the channel has none (a
    webhook then carries the action alone). RenderError when it cannot be rendered."""
    name = action.params.get("template")
    by_locale = deliver.template(str(name) if name is not None else None, channel)
    chosen = pick_locale(by_locale, locale or deliver.locale, deliver.locale)
    if chosen is None:
        if channel in NEEDS_TEMPLATE:
            raise RenderError(f"no {channel} template {name!r} in the delivery file")
        return None
    spec = by_locale[chosen]
    if isinstance(spec, SmsTemplate):
        values = {k: _text(v, names) for k, v in spec.params.items()}
        for k, v in values.items():
            if len(v) > SMS_PARAM_MAX_CHARS:
                raise RenderError(
                    f"SMS variable {k} is {len(v)} characters, more than the "
                    f"{SMS_PARAM_MAX_CHARS} providers accept"
                )
        preview = spec.text or ""
        for k, v in values.items():
            preview = preview.replace("${" + k + "}", v)
        return Rendered(channel, chosen, spec.template_code, values, preview)
    if isinstance(spec, EmailTemplate):
        fields = {"subject": _text(spec.subject, names), "text": _text(spec.text, names)}
        if spec.html is not None:
            fields["html"] = _text(spec.html, names)
        return Rendered(channel, chosen, str(name), fields, fields["text"])
    if isinstance(spec, WechatTemplate):
        data = {k: _text(v, names) for k, v in spec.data.items()}
        if spec.page:
            data["__page__"] = spec.page
        return Rendered(channel, chosen, spec.template_id, data, "\n".join(data.values()))
    assert isinstance(spec, WebhookTemplate)
    text = _text(spec.text, names) if spec.text else ""
    return Rendered(channel, chosen, str(name), {"text": text} if text else {}, text)


#: stand-ins for what is only known at send time, when `ecrm rules check` tries a template
SAMPLE_PROFILE = {
    "segment": "important_value",
    "level": "gold",
    "frequency": 3,
    "monetary": "520.00",
}
SAMPLE_COUPON_CODE = "CPN8X2K9Q7"


def problems_of_rules(deliver: Deliver, rules: Any) -> list[str]:
    """What stops each enabled rule's action from being delivered under `deliver`: a channel
    no provider sends, a missing template, an SMS variable that does not fit (rendered with
    the rule's params and sample values)."""
    from datetime import UTC, datetime

    problems: list[str] = []
    for rule in rules.rules:
        spec = rule.action
        channel = spec.channel or ("webhook" if spec.kind == "webhook" else None)
        if channel is None:
            continue
        where = f'rule "{rule.id}": action.channel "{channel}"'
        if deliver.provider_for(channel) is None:
            problems.append(f"{where}: no provider in the delivery file's channels:")
            continue
        action = Action(
            action_id="check",
            rule_id=rule.id,
            customer_id="check",
            kind=spec.kind,
            channel=channel,
            params=dict(spec.params),
            fired_at=datetime.now(UTC),
        )
        names = variables(
            action,
            SAMPLE_PROFILE,
            deliver.profile_fields,
            SAMPLE_COUPON_CODE if spec.kind == "coupon" else None,
            lambda url: url,
        )
        name = spec.params.get("template")
        for locale in deliver.template(str(name) if name else None, channel) or [None]:
            try:
                render(deliver, action, channel, names, locale)
            except RenderError as exc:
                problems.append(
                    f"{where}, template {name!r}{f' ({locale})' if locale else ''}: {exc}"
                )
    return problems
