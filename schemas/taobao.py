"""The Taobao/Tmall seller backend's order export (已卖出的宝贝 → 批量导出 → 订单报表).

What the export holds, as an `OrderMapping`: headers in Chinese, the buyer by nickname
(买家会员名, hashed), times in Asia/Shanghai without an offset, and statuses whose wording
the platform chose. Columns not named here (支付宝账号, 买家留言, 商家备注, 收货人姓名 …)
are never read into an event.
"""

from __future__ import annotations

from schemas.order_mapping import Columns, OrderMapping

#: the columns an export must have to be recognised as one (`--format auto`)
SIGNATURE = ("订单编号", "买家会员名", "买家实际支付金额", "订单状态")

TAOBAO = OrderMapping(
    source="taobao",
    encoding="auto",
    timezone="Asia/Shanghai",
    currency="CNY",
    columns=Columns(
        order_id="订单编号",
        buyer="买家会员名",
        amount="买家实际支付金额",
        paid_at="订单付款时间",
        created_at="订单创建时间",
        status="订单状态",
        refund="退款金额",
        title="宝贝标题",
        phone="联系手机",
        address="收货地址",
    ),
    statuses={
        "交易成功": "paid",
        "买家已付款，等待卖家发货": "paid",
        "卖家已发货，等待买家确认": "paid",
        "卖家部分发货": "paid",
        "交易关闭": "closed",
        "等待买家付款": "skip:awaiting_payment",
        "等待买家付尾款": "skip:awaiting_payment",
        "付款确认中": "skip:awaiting_payment",
    },
    keep={"goods_amount": "买家应付货款", "item_kinds": "宝贝种类"},
    # older or trimmed exports lack these; an export without them still imports
    optional=[
        "订单付款时间",
        "退款金额",
        "宝贝标题",
        "联系手机",
        "收货地址",
        "买家应付货款",
        "宝贝种类",
    ],
)
