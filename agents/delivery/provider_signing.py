"""The SMS providers' request signatures, pure (docs/delivery.md links each provider's page):

- Aliyun (dysmsapi, RPC style, signature version 1.0): the parameters sorted by name, each
  name and value percent-encoded (RFC 3986: space %20, `*` %2A, `~` kept), joined with `&`;
  StringToSign = METHOD & %2F & percent(that); Signature = base64(HMAC-SHA1(secret + "&", it)).
- Tencent Cloud (API 3.0, TC3-HMAC-SHA256): a canonical request over the method, path, the
  signed headers (content-type;host) and the body's SHA-256; the key derived
  TC3<secret> -> date -> service -> "tc3_request"; sent in the Authorization header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote


def percent(text: str) -> str:
    """Aliyun's percent-encoding (RFC 3986 unreserved characters kept, UTF-8)."""
    return quote(text, safe="~")


def aliyun_string_to_sign(method: str, params: dict[str, str]) -> str:
    canonical = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))
    return f"{method}&{percent('/')}&{percent(canonical)}"


def aliyun_signature(secret: str, method: str, params: dict[str, str]) -> str:
    mac = hmac.new(
        f"{secret}&".encode(), aliyun_string_to_sign(method, params).encode(), hashlib.sha1
    )
    return base64.b64encode(mac.digest()).decode()


def aliyun_timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    body: bytes,
    timestamp: int,
    content_type: str = "application/json; charset=utf-8",
) -> str:
    """The Authorization header of a Tencent Cloud API 3.0 POST (TC3-HMAC-SHA256)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signed_headers = "content-type;host"
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",
            f"content-type:{content_type}\nhost:{host}\n",
            signed_headers,
            _sha256_hex(body),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, _sha256_hex(canonical_request.encode())]
    )

    def mac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = mac(mac(mac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
