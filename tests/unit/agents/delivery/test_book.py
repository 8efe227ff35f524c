"""The delivery file in a running `ecrm deliver`: re-read when it changes, a bad one refused
with the one in force kept, a missing credential named (never its value)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.delivery.book import DeliveryBook
from schemas.errors import DeliveryError

FILE = """
deliver:
  channels: {{inbox: shop}}
  providers:
    shop: {{type: webhook, url: "https://shop.example/hook", secret: {{env: BOOK_SECRET}}}}
  templates:
    hello: {{inbox: {{zh-CN: {{text: "{text}"}}}}}}
"""


def test_a_changed_file_takes_effect_and_a_bad_one_leaves_the_old_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOK_SECRET", "s3cret-value")
    path = tmp_path / "delivery.yaml"
    path.write_text(FILE.format(text="你好"), encoding="utf-8")
    book = DeliveryBook(path)
    assert book.deliver.templates["hello"].inbox["zh-CN"].text == "你好"
    assert book.reload_if_changed() is False  # unchanged
    path.write_text(FILE.format(text="欢迎回来"), encoding="utf-8")
    assert book.reload_if_changed() is True
    assert book.deliver.templates["hello"].inbox["zh-CN"].text == "欢迎回来"
    path.write_text(FILE.format(text="x").replace("webhook", "pigeon"), encoding="utf-8")
    assert book.reload_if_changed() is False
    assert book.deliver.templates["hello"].inbox["zh-CN"].text == "欢迎回来"
    asyncio.run(book.close())


def test_a_missing_credential_is_named_and_its_value_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOOK_SECRET", raising=False)
    path = tmp_path / "delivery.yaml"
    path.write_text(FILE.format(text="你好"), encoding="utf-8")
    with pytest.raises(DeliveryError, match="BOOK_SECRET is not set"):
        DeliveryBook(path)
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n", encoding="utf-8")
    path.write_text(
        FILE.format(text="你好").replace("{env: BOOK_SECRET}", f"{{file: {secret_file}}}"),
        encoding="utf-8",
    )
    book = DeliveryBook(path)
    assert book.channel("shop").secret == b"from-a-file"  # type: ignore[attr-defined]
    asyncio.run(book.close())
