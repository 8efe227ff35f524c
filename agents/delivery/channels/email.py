"""E-mail over SMTP with STARTTLS (aiosmtplib), with the one-click unsubscribe headers of
RFC 8058 carrying the action's unsubscribe token (schemas/privacy.py). The Message-ID is made
from the action id, so a receiving system can drop a copy sent again after a crash."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from agents.delivery.channels.base import Message, Outcome, read_secret
from schemas.delivery import EmailProvider


def email_of(provider: EmailProvider, message: Message) -> EmailMessage:
    """The e-mail of a rendered message (pure)."""
    assert message.rendered is not None and message.address is not None
    fields = message.rendered.fields
    mail = EmailMessage()
    mail["From"] = provider.sender
    mail["To"] = message.address
    mail["Subject"] = fields["subject"]
    mail["Date"] = formatdate(localtime=False)
    domain = provider.sender.rsplit("@", 1)[-1].strip("> ") or "ecrm"
    mail["Message-ID"] = f"<{message.action.action_id}@{domain}>"
    token = message.action.params.get("unsubscribe_token")
    if token:
        mail["List-Unsubscribe"] = f"<{provider.unsubscribe_url.replace('{token}', str(token))}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(fields["text"])
    if "html" in fields:
        mail.add_alternative(fields["html"], subtype="html")
    return mail


def smtp_outcome(code: int, text: str) -> Outcome:
    """5xx: refused for good (bad address, policy); 4xx: try later (greylisting, busy)."""
    reason = f"SMTP {code}: {text[:300]}"
    return Outcome("failed" if 500 <= code < 600 else "retry", reason=reason)


class EmailChannel:
    def __init__(self, name: str, provider: EmailProvider) -> None:
        self.name = name
        self.provider = provider
        self.password = read_secret(provider.password) if provider.password else None
        self.context = ssl.create_default_context(
            cafile=str(provider.ca_file) if provider.ca_file else None
        )

    async def send(self, message: Message) -> Outcome:
        if message.address is None:
            return Outcome("failed", reason="no e-mail address for the customer")
        mail = email_of(self.provider, message)
        p = self.provider
        try:
            await aiosmtplib.send(
                mail,
                hostname=p.host,
                port=p.port,
                username=p.username,
                password=self.password,
                start_tls=p.tls == "starttls",
                use_tls=p.tls == "implicit",
                tls_context=self.context if p.tls != "none" else None,
                timeout=p.timeout.total_seconds(),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return smtp_outcome(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:
            return smtp_outcome(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Outcome("retry", reason=f"SMTP {p.host}:{p.port}: {exc}")
        return Outcome("sent", str(mail["Message-ID"]))

    async def close(self) -> None:
        return None
