"""Whole files through `ecrm import orders --dry-run`: a generated Taobao export with every
quirk, a generic CSV with a YAML mapping, JSON Lines; counts, rejects, and the secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from agents.order_import.jsonl import jsonl_outcome, masked_jsonl
from agents.order_import.rows import Imported, ImportPolicy, Rejected, RowReader, Skipped
from ecrm.cli import main
from ecrm.commands.imports import import_orders
from schemas.errors import ConfigError
from schemas.events import OrderEvent
from schemas.order_mapping import OrderFileError, load_mapping
from schemas.pii import customer_id_for
from streams.settings import Settings
from tests.fixtures.taobao_export import write_export

SECRET = "0123456789abcdef-test"
NOW = datetime.now(UTC)


@pytest.fixture
def settings() -> Settings:
    return Settings(pii_secret=SECRET, topic_prefix="unit.")


@pytest.mark.parametrize("encoding", ["gbk", "utf-8-sig"])
def test_a_generated_export_reads_as_its_truth_and_rejects_show_nothing_personal(
    settings: Settings, tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "ExportOrderList.csv"
    truth = write_export(path, 3000, encoding=encoding, seed=5)
    report = import_orders(settings, path, dry_run=True)
    assert (report.rows, report.imported, report.rejected) == (
        truth.rows,
        truth.imported,
        truth.rejected,
    )
    assert report.skipped == truth.skipped
    assert (report.paid, report.refunds) == (truth.paid_events, truth.refund_events)
    assert truth.rejected > 20 and set(truth.skipped) == {
        "awaiting_payment",
        "closed_unpaid",
        "older_than_rfm_window",
        "blank_row",
    }
    rejects = report.rejects_path
    assert rejects == tmp_path / "ExportOrderList.csv.rejects.jsonl"
    lines = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert len(lines) == truth.rejected
    assert all(line["line"] > 1 and line["reason"] and line["raw"] for line in lines)
    text = rejects.read_text(encoding="utf-8")
    assert not [v for v in truth.personal_values() if v in text]


def test_the_rejects_file_of_an_earlier_import_goes_when_nothing_is_rejected(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text("")
    stale = tmp_path / "orders.jsonl.rejects.jsonl"
    stale.write_text('{"line": 1}\n')
    assert import_orders(settings, path, dry_run=True).rows == 0
    assert not stale.exists()


def test_a_csv_that_is_no_taobao_export_needs_a_mapping(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("order,customer,total\n1,c1,10\n")
    with pytest.raises(OrderFileError, match="lacks 订单编号, 买家会员名.*--mapping"):
        import_orders(settings, path, dry_run=True)
    with pytest.raises(OrderFileError, match="needs --mapping"):
        import_orders(settings, path, fmt="csv", dry_run=True)
    with pytest.raises(OrderFileError, match="lacks 订单编号"):
        import_orders(settings, path, fmt="taobao", dry_run=True)


MAPPING = """
source: myshop
timezone: Europe/Berlin
currency: EUR
delimiter: ";"
columns:
  order_id: Order No
  customer_id: Customer
  status: State
  paid_at: Paid
  amount: Total
  refund: Refunded
  phone: Phone
statuses:
  completed: paid
  shipped: paid
  cancelled: closed
  pending: skip:awaiting_payment
  draft: skip
keep:
  channel: Channel
"""
CSV = (
    "Order No;Customer;State;Paid;Total;Refunded;Phone;Channel\n"
    "A-1;cust-7;completed;2026-03-01 12:00;49.90;;+49 170 1234567;web\n"
    "A-2;cust-7;cancelled;2026-03-02 12:00;10.00;;;app\n"
    "A-3;cust-8;pending;;20.00;;;web\n"
    "A-4;cust-8;draft;;20.00;;;web\n"
    "A-5;cust-9;lost;2026-03-02 12:00;20.00;;;web\n"
    "A-6;kiki@example.com;completed;2026-03-02 12:00;20.00;;;web\n"
)


def test_a_generic_csv_imports_through_its_yaml_mapping(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(MAPPING)
    path = tmp_path / "export.csv"
    path.write_text(CSV)
    mapping = load_mapping(tmp_path / "map.yaml")
    reader = RowReader(mapping, CSV.splitlines()[0].split(";"), ImportPolicy(now=NOW))
    first = reader.read(CSV.splitlines()[1].split(";"))
    assert isinstance(first, Imported)
    [event] = first.events
    assert event["event_id"] == "myshop:A-1:paid" and event["customer_id"] == "cust-7"
    assert event["ts"] == "2026-03-01T12:00:00+01:00" and event["currency"] == "EUR"
    assert event["channel"] == "web" and "1234567" not in orjson.dumps(event).decode()
    assert event["origin"] == "import"
    closed = reader.read(CSV.splitlines()[2].split(";"))
    assert isinstance(closed, Imported) and closed.events[1]["amount"] == "10.00"
    assert reader.read(CSV.splitlines()[4].split(";")) == Skipped("draft")

    report = import_orders(settings, path, mapping_path=tmp_path / "map.yaml", dry_run=True)
    assert (report.imported, report.rejected, report.events) == (2, 2, 3)
    rejects = report.rejects_path.read_text(encoding="utf-8")
    assert "Customer looks like a phone or e-mail" in rejects and "kiki@" not in rejects
    assert report.skipped == {"awaiting_payment": 1, "draft": 1}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("columns: {order_id: a, amount: b, paid_at: c}", "exactly one of columns.buyer"),
        ("columns: {order_id: a, buyer: x, amount: b}", "paid_at or columns.created_at"),
        (MAPPING.replace("skip:awaiting_payment", "later"), "'later' is not paid, closed or skip"),
        (MAPPING.replace("channel:", "amount:"), "not a free lowercase field name"),
        (MAPPING.replace("channel:", "origin:"), "not a free lowercase field name"),
        (MAPPING.replace("source: myshop", "source: My Shop"), "short lowercase slug"),
        (MAPPING + "extra: 1\n", "extra: Extra inputs are not permitted"),
        ("- a list", "a YAML mapping with `columns:`"),
        ("columns: [", "not YAML"),
    ],
)
def test_a_wrong_mapping_file_is_refused_saying_what_is_wrong(
    tmp_path: Path, text: str, why: str
) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(OrderFileError, match=why.replace("(", r"\(").replace("[", r"\[")):
        load_mapping(path)


POLICY = ImportPolicy(now=NOW, secret=SECRET.encode(), not_before=NOW - timedelta(days=365))
EVENT = {
    "event_id": "web:1:paid",
    "customer_id": "c1",
    "ts": (NOW - timedelta(days=3)).isoformat(),
    "order_id": "1",
    "status": "paid",
    "amount": "12.50",
    "note": "call 13812345678",
}


def line(**changes: object) -> bytes:
    return orjson.dumps({k: v for k, v in {**EVENT, **changes}.items() if v is not None})


def test_a_json_line_in_the_contract_format_is_produced_as_written_less_phones() -> None:
    outcome = jsonl_outcome(line(), POLICY)
    assert outcome == Imported(({**EVENT, "note": "call 138****5678", "origin": "import"},))


def test_a_json_line_is_history_whatever_origin_it_claimed() -> None:
    outcome = jsonl_outcome(line(origin="pos"), POLICY)
    assert isinstance(outcome, Imported)
    [event] = outcome.events
    assert OrderEvent.model_validate(event).imported


def test_a_json_line_may_name_the_buyer_who_is_then_hashed() -> None:
    outcome = jsonl_outcome(line(customer_id=None, buyer="小鱼儿"), POLICY)
    assert isinstance(outcome, Imported)
    [event] = outcome.events
    assert event["customer_id"] == customer_id_for("小鱼儿", SECRET.encode())
    assert "buyer" not in event and event["buyer_masked"] == "小*儿"
    no_secret = ImportPolicy(now=NOW)
    assert "ECRM_PII_SECRET" in str(jsonl_outcome(line(customer_id=None, buyer="x"), no_secret))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (line(amount="1.234"), "amount"),
        (line(status="shipped"), "status"),
        (line(ts="2026-01-01T10:00:00"), "no UTC offset"),
        (line(buyer="x"), "both buyer and customer_id"),
        (line(customer_id="13812345678"), "looks like a phone"),
        (line(ts=(NOW + timedelta(days=30)).isoformat()), "in the future"),
    ],
)
def test_a_bad_json_line_is_rejected_with_the_field(raw: bytes, why: str) -> None:
    outcome = jsonl_outcome(raw, POLICY)
    assert isinstance(outcome, Rejected) and why in outcome.reason, outcome


def test_old_and_blank_json_lines_are_skipped() -> None:
    old = line(ts=(NOW - timedelta(days=400)).isoformat())
    assert jsonl_outcome(old, POLICY) == Skipped("older_than_rfm_window")
    assert jsonl_outcome(b"\n", POLICY) == Skipped("blank_row")


def test_a_rejected_json_line_shows_the_order_and_masks_everything_else() -> None:
    shown = orjson.loads(masked_jsonl(line(buyer="小鱼儿_00064", receiver="王芳", amount="x")))
    assert shown["buyer"] == "小*******4" and shown["receiver"] == "王*"
    assert (shown["order_id"], shown["status"], shown["amount"]) == ("1", "paid", "x")
    assert shown["customer_id"] == "c*" and "13812345678" not in shown["note"]
    broken = masked_jsonl(b'{"buyer": "\xe7\x8e\x8b\xe8\x8a\xb3", 13812345678')
    assert "王芳" not in broken and "13812345678" not in broken


def test_without_a_secret_a_taobao_import_stops_before_reading_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("ECRM_PII_SECRET", raising=False)
    write_export(tmp_path / "orders.csv", 10)
    assert main(["import", "orders", "orders.csv", "--dry-run"]) == 2
    assert "ECRM_PII_SECRET is not set" in capsys.readouterr().err
    assert not (tmp_path / "orders.csv.rejects.jsonl").exists()
    monkeypatch.setenv("ECRM_PII_SECRET", "short")
    assert main(["profile", "--buyer", "小鱼儿"]) == 2
    assert "shorter than 16" in capsys.readouterr().err


def test_the_secret_is_never_handed_on_to_other_processes(settings: Settings) -> None:
    assert SECRET not in str(settings.as_env()) and SECRET not in repr(settings)
    assert settings.pii_key() == SECRET.encode()
    with pytest.raises(ConfigError, match="not set"):
        Settings(pii_secret=None).pii_key()
