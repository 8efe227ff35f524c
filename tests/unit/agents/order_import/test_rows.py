"""A Taobao export row becomes the contract's order events, skipped, or rejected with a reason;
no personal value reaches an event or a reject in clear."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agents.order_import.rows import Imported, ImportPolicy, Rejected, RowReader, Skipped, region_of
from schemas.events import OrderEvent
from schemas.order_mapping import OrderFileError
from schemas.pii import customer_id_for
from schemas.taobao import TAOBAO

SECRET = b"0123456789abcdef-test"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
POLICY = ImportPolicy(now=NOW, secret=SECRET, not_before=NOW - timedelta(days=365))
HEADER = [
    "订单编号",
    "买家会员名",
    "买家支付宝账号",
    "买家应付货款",
    "买家实际支付金额",
    "订单状态",
    "买家留言",
    "收货人姓名",
    "收货地址 ",
    "联系手机",
    "订单创建时间",
    "订单付款时间 ",
    "宝贝标题 ",
    "宝贝种类",
    "退款金额",
    "商家备注",
    "",
]
BUYER, PHONE, RECEIVER, ADDRESS = (
    "小鱼儿_00064",
    "13812345678",
    "马志强",
    "浙江省 杭州市 西湖区 文三路508号",
)
ROW = {
    "订单编号": '="3100000000000007919"',
    "买家会员名": BUYER + "\t",
    "买家支付宝账号": PHONE,
    "买家应付货款": "230.00",
    "买家实际支付金额": " 224.17",
    "订单状态": "交易成功",
    "买家留言": f"请周末送货\n电话{PHONE}",
    "收货人姓名": RECEIVER,
    "收货地址 ": ADDRESS,
    "联系手机": f'="{PHONE}"',
    "订单创建时间": "2026/3/3 08:09",
    "订单付款时间 ": "2026-03-03 08:10:00",
    "宝贝标题 ": "西湖龙井 明前特级 250g, 礼盒装",
    "宝贝种类": "2",
    "退款金额": "0",
    "商家备注": f"客户来电{PHONE}改地址",
}
PERSONAL = (BUYER, PHONE, RECEIVER, ADDRESS, "文三路508号")


def row(**changes: str) -> list[str]:
    values = {**ROW, **{k.replace("_", " "): v for k, v in changes.items()}}
    return [values.get(h, "") for h in HEADER] + ["", ""]  # empty trailing columns


def changed(header: str, value: str) -> list[str]:
    return row(**{header.replace(" ", "_"): value})


@pytest.fixture
def reader() -> RowReader:
    return RowReader(TAOBAO, HEADER, POLICY)


def events_of(reader: RowReader, fields: list[str]) -> list[dict[str, object]]:
    outcome = reader.read(fields)
    assert isinstance(outcome, Imported), outcome
    for event in outcome.events:
        OrderEvent.model_validate(event)  # what the worker will accept
        text = orjson.dumps(event).decode()
        assert not [p for p in PERSONAL if p in text], text
    return list(outcome.events)


def test_a_paid_order_is_one_paid_event_of_the_hashed_buyer_at_its_payment_time(reader) -> None:
    [event] = events_of(reader, row())
    assert event["event_id"] == "taobao:3100000000000007919:paid"
    assert event["order_id"] == "3100000000000007919"
    assert event["customer_id"] == customer_id_for(BUYER, SECRET)
    assert event["status"] == "paid"
    assert event["amount"] == "224.17"
    assert event["currency"] == "CNY"
    assert event["ts"] == "2026-03-03T08:10:00+08:00"
    assert OrderEvent.model_validate(event).ts == datetime(2026, 3, 3, 0, 10, tzinfo=UTC)
    assert event["shop_id"] == "default"
    assert event["source"] == "taobao"
    assert event["buyer_masked"] == "小*******4"
    assert event["phone_masked"] == "138****5678"
    assert event["region"] == "浙江"
    assert event["title"] == "西湖龙井 明前特级 250g, 礼盒装"
    assert event["goods_amount"] == "230.00" and event["item_kinds"] == "2"
    assert OrderEvent.model_validate(event).imported  # history: builds profiles, never markets


def test_the_same_row_read_twice_gives_the_same_events(reader) -> None:
    assert events_of(reader, row()) == events_of(reader, row())


def test_without_a_payment_time_the_creation_time_counts(reader) -> None:
    [event] = events_of(reader, changed("订单付款时间 ", ""))
    assert event["ts"] == "2026-03-03T08:09:00+08:00"


@pytest.mark.parametrize(
    "status",
    ["买家已付款，等待卖家发货", " 卖家已发货，等待买家确认\t", "买家已付款, 等待卖家发货"],
)
def test_paid_but_not_yet_finished_orders_are_paid(reader, status: str) -> None:
    [event] = events_of(reader, changed("订单状态", status))
    assert event["status"] == "paid"


def test_a_refund_on_a_finished_order_is_a_second_event_for_the_refunded_amount(reader) -> None:
    paid, refund = events_of(reader, changed("退款金额", "100.00"))
    assert paid["amount"] == "224.17"
    assert refund["event_id"] == "taobao:3100000000000007919:refund"
    assert (refund["status"], refund["amount"], refund["order_id"]) == (
        "refunded",
        "100.00",
        "3100000000000007919",
    )
    assert refund["customer_id"] == paid["customer_id"]
    assert paid["origin"] == refund["origin"] == "import"


def test_an_order_closed_after_payment_is_paid_then_refunded_in_full(reader) -> None:
    paid, refund = events_of(reader, row(订单状态="交易关闭", 退款金额=""))
    assert (paid["amount"], refund["amount"]) == ("224.17", "224.17")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"订单状态": "等待买家付款", "订单付款时间 ": "", "买家实际支付金额": "0.00"},
            "awaiting_payment",
        ),
        (
            {"订单状态": "交易关闭", "订单付款时间 ": "", "买家实际支付金额": "0.00"},
            "closed_unpaid",
        ),
        ({"订单状态": "交易关闭", "订单付款时间 ": ""}, "closed_unpaid"),
        ({"订单付款时间 ": "2025-01-01 10:00:00"}, "older_than_rfm_window"),
    ],
)
def test_rows_that_are_no_order_to_count_are_skipped_with_a_reason(
    reader, changes: dict[str, str], reason: str
) -> None:
    fields = row(**{k.replace(" ", "_"): v for k, v in changes.items()})
    assert reader.read(fields) == Skipped(reason)


def test_a_blank_row_is_skipped(reader) -> None:
    assert reader.read([]) == Skipped("blank_row")
    assert reader.read([" ", "\t", ""]) == Skipped("blank_row")


def test_with_all_history_old_orders_are_imported() -> None:
    reader = RowReader(TAOBAO, HEADER, ImportPolicy(now=NOW, secret=SECRET))
    [event] = events_of(reader, changed("订单付款时间 ", "2020-01-01 10:00:00"))
    assert event["ts"] == "2020-01-01T10:00:00+08:00"


@pytest.mark.parametrize(
    ("header", "value", "why"),
    [
        ("订单编号", "3.10000E+18", "rounded by a spreadsheet"),
        ("订单编号", "", "no order number"),
        ("买家会员名", " ", "no 买家会员名"),
        ("买家会员名", "小鱼\ufffd儿", "买家会员名 has bytes that do not decode"),
        ("买家会员名", "t**8", "买家会员名 is masked by the platform"),
        ("订单状态", "交易异常", "unknown status '交易异常'"),
        ("订单状态", "", "no status"),
        ("买家实际支付金额", "12.345", "买家实际支付金额 12.345 has more than two decimals"),
        ("买家实际支付金额", "", "no 买家实际支付金额"),
        ("退款金额", "300.00", "refund 300.00 is more than the payment 224.17"),
        ("订单付款时间 ", "2026-13-45 10:00", "订单付款时间 '2026-13-45 10:00' is not a date"),
        ("订单付款时间 ", "2099-01-01 00:00:00", "in the future"),
    ],
)
def test_a_bad_row_is_rejected_with_a_reason_a_seller_can_act_on(
    reader, header: str, value: str, why: str
) -> None:
    outcome = reader.read(changed(header, value))
    assert isinstance(outcome, Rejected)
    assert why in outcome.reason


def test_a_row_of_the_wrong_width_is_rejected(reader) -> None:
    assert reader.read(row()[:10]) == Rejected("10 fields where the header has 16")
    assert isinstance(reader.read([*row()[:16], "", "stray"]), Rejected)


def test_a_rejected_row_shows_order_columns_and_masks_everything_personal(reader) -> None:
    fields = changed("订单状态", "交易异常")
    shown = ",".join(reader.masked(fields))
    assert not [p for p in PERSONAL if p in shown], shown
    assert "3100000000000007919" in shown and "交易异常" in shown and "224.17" in shown
    assert "138****5678" in shown
    cut = ",".join(reader.masked(fields[:10]))  # columns unknown: everything masked
    assert not [p for p in PERSONAL if p in cut] and "交易异常" not in cut


def test_a_header_without_a_needed_column_is_refused_naming_it() -> None:
    with pytest.raises(OrderFileError, match="lacks 买家实际支付金额"):
        RowReader(TAOBAO, [h for h in HEADER if h != "买家实际支付金额"], POLICY)


def test_optional_columns_may_be_missing() -> None:
    header = [h for h in HEADER if h.strip() not in ("订单付款时间", "退款金额", "联系手机")]
    fields = [dict(zip(HEADER, row(), strict=False))[h] for h in header]
    [event] = events_of(RowReader(TAOBAO, header, POLICY), fields)
    assert event["ts"] == "2026-03-03T08:09:00+08:00" and "phone_masked" not in event


def test_hashing_buyers_needs_the_secret() -> None:
    with pytest.raises(OrderFileError, match="ECRM_PII_SECRET"):
        RowReader(TAOBAO, HEADER, ImportPolicy(now=NOW))


def test_the_shop_id_option_wins() -> None:
    reader = RowReader(TAOBAO, HEADER, ImportPolicy(now=NOW, secret=SECRET, shop_id="tmall-1"))
    [event] = events_of(reader, row())
    assert event["shop_id"] == "tmall-1"


@pytest.mark.parametrize(
    ("address", "region"),
    [
        ("浙江省 杭州市 西湖区 文三路508号", "浙江"),
        ("北京 北京市 朝阳区 建国路1号", "北京"),
        ("广西壮族自治区南宁市青秀区", "广西"),
        ("王芳 13812345678 杭州", ""),
        ("", ""),
    ],
)
def test_of_an_address_only_the_province_is_kept(address: str, region: str) -> None:
    assert region_of(address) == region
