"""Local receivers for `ecrm deliver` (the demo and the tests): a shop's webhook receiver that
verifies the signature and honours the idempotency key (it also answers the contacts and
coupon questions), and an SMTP server with STARTTLS (aiosmtpd) keeping what it receives.

    with ShopReceiver(secret=b"...") as shop, SmtpReceiver() as smtp:
        ...                       # point a delivery file at shop.url and smtp.port
        shop.delivered            # action id -> the JSON body, once each
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections import Counter, defaultdict
from email import message_from_bytes
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agents.delivery.signing import SIGNATURE_HEADER, BadSignature, verify_webhook


class ShopReceiver:
    """The shop's side of the webhook: POST /ecrm/actions, /ecrm/contacts, /ecrm/coupons."""

    def __init__(self, secret: bytes, host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.lock = threading.Lock()
        #: action id -> body, the first time each key came (a repeat is answered, not kept)
        self.delivered: dict[str, dict[str, Any]] = {}
        #: every POST of an action, repeats included
        self.posts: Counter[str] = Counter()
        self.bad_signatures = 0
        #: action id -> statuses to answer first (e.g. [500]), then 200
        self.script: dict[str, list[int]] = defaultdict(list)
        #: every customer id the contacts endpoint was asked about
        self.asked: list[tuple[str, str]] = []
        #: seconds to wait before answering an action (a slow shop)
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    verify_webhook(
                        receiver.secret,
                        body,
                        self.headers.get(SIGNATURE_HEADER, ""),
                        int(time.time()),
                    )
                except BadSignature as exc:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    return self._answer(401, {"error": str(exc)})
                data = json.loads(body)
                if self.path.endswith("/contacts"):
                    with receiver.lock:
                        receiver.asked.append((data["customer_id"], data["channel"]))
                    address = (
                        f"{data['customer_id']}@shop.example"
                        if data["channel"] == "email"
                        else f"1380000{abs(hash(data['customer_id'])) % 10000:04d}"
                    )
                    return self._answer(200, {"address": address})
                if self.path.endswith("/coupons"):
                    key = self.headers.get("Idempotency-Key", "")
                    code = "CPN" + hashlib.sha256(key.encode()).hexdigest()[:8].upper()
                    return self._answer(200, {"code": code})
                key = self.headers.get("Idempotency-Key", "")
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.posts[key] += 1
                    planned = receiver.script.get(key)
                    status = planned.pop(0) if planned else 200
                    if status == 200:
                        receiver.delivered.setdefault(key, data)
                self._answer(status, {"ok": status == 200})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = _Server((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ShopReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # `ecrm deliver` sends side by side: the default 5 refuses some


class SmtpReceiver:
    """An SMTP server requiring STARTTLS (a certificate of its own, from trustme), keeping
    every message; `ca_file` is what a client must trust."""

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        import trustme
        from aiosmtpd.controller import Controller

        ca = trustme.CA()
        cert = ca.issue_cert(host, "localhost")
        self.ca_file = folder / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.messages: list[EmailMessage] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.host = host
        self.port = _free_port(host)
        self.controller = Controller(
            Handler(), hostname=host, port=self.port, tls_context=context, require_starttls=True
        )

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
