"""The marketers' dashboard, server-rendered, in Chinese and English: customers per RFM segment
and how they moved this week, rule performance with uplift, a live feed of decisions, a
customer lookup, and a rules editor that checks as you type and backtests before saving.

Every figure comes from the analysts' named queries (`ecrm sql`), the profile reads of
`ecrm profile` and the checker and backtest of `ecrm rules`; the charts are ECharts, served
from /static (no CDN). A read key is needed, as for the read API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from agents.membership.view import member_view
from agents.profile.reads import read_profile
from ecrm.api.context import ApiContext, require_key
from ecrm.api.dashboard_editor import router as editor_router
from ecrm.api.dashboard_page import Table, as_of_line, data, date_range, esc, page
from ecrm.api.formats import COLUMNS, local_time, money, show, uplift_text
from ecrm.api.reading import customer_decisions, recent_decisions
from schemas.membership import load_programme
from schemas.rules import load_rules
from streams.clickhouse import ClickHouse
from streams.named_queries import named_query

router = APIRouter(include_in_schema=False)

#: PRODUCT.md's names of the eight segments
SEGMENT_NAMES = {
    "important_value": "重要价值客户",
    "important_develop": "重要发展客户",
    "important_keep": "重要保持客户",
    "important_retain": "重要挽留客户",
    "general_value": "一般价值客户",
    "general_develop": "一般发展客户",
    "general_keep": "一般保持客户",
    "general_retain": "一般挽留客户",
    "prospect": "潜在客户",
}
#: the rules page's period unless the form says otherwise
RULES_DAYS = 30
FEED_COLUMNS = [
    "decided_at",
    "customer_id",
    "rule_id",
    "outcome",
    "reason",
    "channel",
    "coupon_value",
]


def _named(ch: ClickHouse, name: str, params: dict[str, str]) -> list[dict[str, Any]]:
    query = named_query(name)
    return ch.query(query.sql, query.bind(params, now=datetime.now(UTC)))


def _latest_event(ch: ClickHouse) -> datetime | None:
    """The event time the data reaches: the latest event ClickHouse holds."""
    rows = ch.query("SELECT max(ts) AS at, count() AS n FROM events")
    return rows[0]["at"] if rows and rows[0]["n"] else None


def shop_zone(ctx: ApiContext) -> ZoneInfo:
    """The shop's zone (the rules file's `policy.timezone`): every time is shown in it."""
    return load_rules(ctx.settings.rules_file).policy.zone


def _csv_or_page(request: Request, tables: list[Table], name: str) -> Response | None:
    wanted = request.query_params.get("csv")
    if wanted is None:
        return None
    table = next((t for t in tables if t.id == wanted), None)
    if table is None:
        return JSONResponse({"error": f"no table {wanted!r} on this page"}, status_code=404)
    return table.csv(name)


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k != "csv"}


@router.get("/", response_class=HTMLResponse)
def segments(
    request: Request, since: str | None = None, until: str | None = None, days: int | None = None
) -> Response:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    zone = shop_zone(ctx)
    period = date_range(since, until, days, 7, zone)

    def read(ch: ClickHouse) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
        dist = _named(ch, "rfm_distribution", {})
        moves = _named(
            ch,
            "segment_migration",
            {"date_a": period.start.isoformat(), "date_b": period.end.isoformat()},
        )
        return dist, moves, _latest_event(ch)

    dist, moves, latest = ctx.analysis.run(read)
    for row in dist:
        row["segment_name"] = SEGMENT_NAMES.get(row["segment"], row["segment"])
    moved = [m for m in moves if m["segment_a"] != m["segment_b"]]
    moved.sort(key=lambda m: -m["customers"])
    tables = [
        Table(
            "segments",
            dist,
            ["segment_name", "segment", "customers", "share", "avg_days_since_last_order",
             "avg_frequency", "avg_monetary", "total_monetary"],
        ),
        Table("moves", moved[:30], ["segment_a", "segment_b", "customers", "share_of_a"]),
    ]  # fmt: skip
    if (csv := _csv_or_page(request, tables, "segments")) is not None:
        return csv
    chart = [{"name": SEGMENT_NAMES.get(r["segment"], r["segment"]), "value": r["customers"]}
             for r in dist]  # fmt: skip
    # the period's start on the left, its end on the right (a Sankey needs two sides)
    flows = [
        {"source": f"{SEGMENT_NAMES.get(m['segment_a'], m['segment_a'])} ·{period.since:%m-%d}",
         "target": SEGMENT_NAMES.get(m["segment_b"], m["segment_b"]), "value": m["customers"]}
        for m in moved
    ]  # fmt: skip
    total = sum(int(r["customers"]) for r in dist)
    q = _query(request)
    body = f"""
<h2>各分群客户数 <span class="en">Customers per RFM segment</span></h2>
<p>共 {total:,} 位客户，按每位客户的最新画像计（与 <code>ecrm sql rfm_distribution</code> 相同）
<span class="en">{total:,} customers, each by their latest profile (as
<code>ecrm sql rfm_distribution</code> counts them)</span></p>
<div id="segments-chart" class="chart"></div>
{tables[0].html(zone, q)}
<h2>分群迁移 <span class="en">How customers moved</span></h2>
{period.form("/")}
<div id="moves-chart" class="chart"></div>
{tables[1].html(zone, q)}
<script type="application/json" id="segments-data">{data(chart)}</script>
<script type="application/json" id="moves-data">{data(flows)}</script>"""
    script = """
const d = JSON.parse(document.getElementById('segments-data').textContent);
const c = echarts.init(document.getElementById('segments-chart'));
c.setOption({animation:false, tooltip:{}, xAxis:{type:'category', data:d.map(x=>x.name),
  axisLabel:{interval:0, rotate:20}}, yAxis:{type:'value', name:'客户数 customers'},
  series:[{type:'bar', data:d.map(x=>x.value), itemStyle:{color:'#c62f2f'},
  label:{show:true, position:'top', formatter: p => p.value.toLocaleString('en-US')}}]});
const m = JSON.parse(document.getElementById('moves-data').textContent);
const names = [...new Set(m.flatMap(x => [x.source, x.target]))].map(n => ({name: n}));
if (m.length) echarts.init(document.getElementById('moves-chart')).setOption({
  animation:false, tooltip:{}, series:[{type:'sankey', data:names, links:m,
  emphasis:{focus:'adjacency'}, lineStyle:{color:'source', opacity:0.4}}]});
else document.getElementById('moves-chart').style.display = 'none';
document.body.dataset.rendered = 'yes';"""
    return page("客户分群", "Segments", "/", body, script, as_of_line(zone, latest))


@router.get("/rules", response_class=HTMLResponse)
def rules(
    request: Request, since: str | None = None, until: str | None = None, days: int | None = None
) -> Response:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    ruleset = load_rules(ctx.settings.rules_file)
    zone = ruleset.policy.zone
    period = date_range(since, until, days, RULES_DAYS, zone)
    hours = max(1, int(ruleset.policy.attribution_window.total_seconds() // 3600))
    params = {
        "since": period.start.isoformat(),
        "until": min(period.end, datetime.now(UTC)).isoformat(),  # rule_performance: not ahead
        "window_hours": str(hours),
    }
    perf, latest = ctx.analysis.run(
        lambda ch: (_named(ch, "rule_performance", params), _latest_event(ch))
    )
    for row in perf:
        row["uplift_ci"] = uplift_text(row)
    tables = [
        Table(
            "performance",
            perf,
            ["rule_id", "decided", "sent", "delivered", "clicked", "held_out", "converted",
             "treated_rate", "held_out_rate", "uplift_ci", "coupon_cost", "incremental_gmv"],
            ["rule_id", "decided", "held_out", "suppressed", "sent", "delivery_sent",
             "delivered", "clicked", "delivery_failed", "converted",
             "treated_customers", "treated_converted", "treated_rate", "held_out_customers",
             "held_out_converted", "held_out_rate", "uplift", "uplift_ci_low", "uplift_ci_high",
             "treated_gmv", "held_out_gmv", "incremental_gmv", "coupon_cost",
             "coupon_value_converted"],
        )
    ]  # fmt: skip
    if (csv := _csv_or_page(request, tables, "rules")) is not None:
        return csv
    funnel = [
        {"name": "决策 decided", "value": sum(int(r["decided"]) for r in perf)},
        {"name": "发送 sent", "value": sum(int(r["sent"]) for r in perf)},
        # what `ecrm deliver` and the receipts said (docs/delivery.md), once it runs
        {"name": "已投递 delivery sent", "value": sum(int(r["delivery_sent"] or 0) for r in perf)},
        {"name": "送达 delivered", "value": sum(int(r["delivered"] or 0) for r in perf)},
        {"name": "点击 clicked", "value": sum(int(r["clicked"] or 0) for r in perf)},
        {"name": "转化 converted", "value": sum(int(r["converted"] or 0) for r in perf)},
    ]
    if funnel[2]["value"] == 0:  # nothing delivered through ecrm: the funnel of before
        funnel = [funnel[0], funnel[1], funnel[-1]]
    uplift = [
        {"rule": r["rule_id"], "uplift": r["uplift"], "low": r["uplift_ci_low"],
         "high": r["uplift_ci_high"]}
        for r in perf if r.get("uplift") is not None
    ]  # fmt: skip
    body = f"""
{period.form("/rules")}
<h2>规则效果 <span class="en">Rule performance</span></h2>
<p>最后触达归因，{hours} 小时内的付款订单算作转化；提升 = 实验组转化率 − 对照组转化率（按客户），
95% 区间不含 0 才说明有效；券成本 = 发出的券数 × 面额（与回测相同）。
<span class="en">Last-touch attribution: a paid order within {hours} h of an action converts it;
uplift = treated minus held-out conversion (per customer), an effect only when its 95% interval
excludes 0; coupon cost = coupons sent × value (as in the backtest).</span></p>
{tables[0].html(zone, _query(request))}
<h2>提升及 95% 区间 <span class="en">Uplift with its 95% interval</span></h2>
<div id="uplift-chart" class="chart"></div>
<h2>漏斗 <span class="en">Funnel</span></h2><div id="funnel-chart" class="chart"></div>
<h2>实时决策 <span class="en">Live decisions</span>
<a class="csv" id="feed-csv" href="/dashboard/decisions.csv">下载 CSV <span class="en">download
CSV</span></a></h2><div id="feed">…</div>
<script type="application/json" id="funnel-data">{data(funnel)}</script>
<script type="application/json" id="uplift-data">{data(uplift)}</script>"""
    script = """
const f = JSON.parse(document.getElementById('funnel-data').textContent);
const fmt = v => Number(v).toLocaleString('en-US');
echarts.init(document.getElementById('funnel-chart')).setOption({animation:false, tooltip:{},
  series:[{type:'funnel', sort:'none', data:f, label:{formatter: p => p.name + ': ' + fmt(p.value)}}]});
const u = JSON.parse(document.getElementById('uplift-data').textContent);
const pct = v => (v >= 0 ? '+' : '') + (v * 100).toFixed(1) + '%';
if (u.length) echarts.init(document.getElementById('uplift-chart')).setOption({animation:false,
  tooltip:{formatter: p => { const r = u[p.dataIndex]; return r.rule + ': ' + pct(r.uplift) +
    ' [' + pct(r.low) + ', ' + pct(r.high) + ']'; }},
  xAxis:{type:'category', data:u.map(r => r.rule)},
  yAxis:{type:'value', axisLabel:{formatter: pct}},
  series:[{type:'bar', data:u.map(r => r.uplift), itemStyle:{color:'#c62f2f'},
    label:{show:true, position:'top', formatter: p => pct(p.value)}},
    {type:'custom', data:u.map((r, i) => [i, r.low, r.high]), renderItem:(params, api) => {
      const lo = api.coord([api.value(0), api.value(1)]), hi = api.coord([api.value(0), api.value(2)]);
      return {type:'group', children:[
        {type:'line', shape:{x1:lo[0], y1:lo[1], x2:hi[0], y2:hi[1]}, style:{stroke:'#222', lineWidth:2}},
        {type:'line', shape:{x1:lo[0]-6, y1:lo[1], x2:lo[0]+6, y2:lo[1]}, style:{stroke:'#222', lineWidth:2}},
        {type:'line', shape:{x1:hi[0]-6, y1:hi[1], x2:hi[0]+6, y2:hi[1]}, style:{stroke:'#222', lineWidth:2}}]};
    }}]});
else document.getElementById('uplift-chart').style.display = 'none';
async function feed(){
  const r = await fetch('/dashboard/decisions.json');
  const a = await r.json();
  const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
  document.getElementById('feed').innerHTML = a.rows.length ? '<table id="feed-table"><tr>' +
    a.columns.map(c => '<th>' + esc(c.zh) + '<span class="en">' + esc(c.en) + '</span></th>').join('') +
    '</tr>' + a.rows.map(row => '<tr>' + row.map((v, i) => '<td data-kind="' + a.columns[i].kind +
    '">' + esc(v) + '</td>').join('') + '</tr>').join('') + '</table>'
    : '暂无决策 <span class="en">no decisions yet</span>';
  document.body.dataset.rendered = 'yes';
}
feed(); setInterval(feed, 5000);"""
    return page("规则效果", "Rules", "/rules", body, script, as_of_line(zone, latest))


@router.get("/dashboard/decisions.json")
def decisions_feed(request: Request) -> JSONResponse:
    """The latest decisions, formatted as the page shows them (times in the shop's zone)."""
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    zone = shop_zone(ctx)
    rows = ctx.analysis.run(lambda ch: recent_decisions(ch, 50))
    cols = [COLUMNS[k] for k in FEED_COLUMNS]
    return JSONResponse(
        {
            "columns": [{"key": c.key, "zh": c.zh, "en": c.en, "kind": c.kind} for c in cols],
            "rows": [[show(row.get(c.key), c.kind, zone) for c in cols] for row in rows],
        }
    )


@router.get("/dashboard/decisions.csv")
def decisions_csv(request: Request) -> Response:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    rows = ctx.analysis.run(lambda ch: recent_decisions(ch, 1000))
    return Table("decisions", rows, FEED_COLUMNS + ["action_id"]).csv("rules")


@router.get("/customers", response_class=HTMLResponse)
def customers(request: Request, id: str | None = None) -> Response:  # noqa: A002
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    zone = shop_zone(ctx)
    form = f"""<form method="get" action="/customers"><input name="id" value="{esc(id)}"
placeholder="customer_id"> <button>查询 <span class="en">Look up</span></button></form>"""
    if not id:
        return page("客户查询", "Customer lookup", "/customers", form)
    found = read_profile(ctx.settings, id)
    if found is None:
        body = (
            form
            + f'<p id="not-found">没有客户 {esc(id)} <span class="en">no such customer</span></p>'
        )
        return page("客户查询", "Customer lookup", "/customers", body)
    from agents.profile.reads import read_member

    view = found.public_view()
    now = datetime.now(UTC)
    _, member = read_member(ctx.settings, found.customer_id)
    programme = (
        load_programme(ctx.settings.membership_file) if ctx.settings.membership_file else None
    )
    mv = member_view(member, found, programme, now) if programme is not None else None
    decided = ctx.analysis.run(lambda ch: customer_decisions(ch, found.customer_id, 20))
    segment = str(view["segment"])
    summary = {
        "customer_id": found.customer_id,
        "segment": f"{SEGMENT_NAMES.get(segment, segment)} ({segment})",
        "recency_days": view["recency_days"],
        "frequency": view["frequency"],
        "monetary": view["monetary"],
        "cart": ", ".join(view["cart"]) or "–",  # type: ignore[arg-type]
        "favorites": ", ".join(view["favorites"]) or "–",  # type: ignore[arg-type]
    }
    profile_rows = [
        {"item": f"{COLUMNS[k].zh} {COLUMNS[k].en}", "value": show(v, COLUMNS[k].kind, zone),
         "key": k, "raw": v}
        for k, v in summary.items()
    ]  # fmt: skip
    tables = [
        Table("profile", profile_rows, ["item", "value"], ["key", "raw"]),
        Table("member", _member_rows(mv, zone) if mv else [], ["item", "value"], ["key", "raw"]),
        Table(
            "decisions",
            decided,
            ["decided_at", "rule_id", "outcome", "reason", "channel", "coupon_value"],
        ),
    ]
    if (csv := _csv_or_page(request, tables, f"customer-{found.customer_id}")) is not None:
        return csv
    q = _query(request)
    body = f"""{form}
<p>客户 <b id="customer-id">{esc(found.customer_id)}</b>，画像按此刻重算
<span class="en">customer {esc(found.customer_id)}, profile re-rated as of
{local_time(now, zone)}</span></p>
<div class="panel"><div><h2>画像 <span class="en">Profile</span></h2>{tables[0].html(zone, q)}</div>
<div><h2>会员 <span class="en">Membership</span></h2>{tables[1].html(zone, q)}</div></div>
<h2>最近决策 <span class="en">Recent decisions</span></h2>
{tables[2].html(zone, q)}
<details><summary>JSON <span class="en">as GET /v1/profiles/{esc(found.customer_id)} returns it</span></summary>
<pre>{esc(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())}</pre></details>"""
    return page("客户查询", "Customer lookup", "/customers", body)


def _member_rows(mv: dict[str, Any], zone: ZoneInfo) -> list[dict[str, Any]]:
    """The member view (`ecrm member show`) as label/value rows."""
    points = mv["points"]
    progress = mv["progress"]

    def when(at: str | None) -> str:
        return local_time(at, zone) if at else "–"

    level = (
        f"{mv['level_name'] or mv['level']} ({mv['level']})"
        if mv["level"]
        else "非会员 not a member yet"
    )
    spend = progress["metric"] == "spend"

    def amount(value: str | None) -> str:
        return (
            "–" if value is None else money(value) if spend else f"{value} ({progress['metric']})"
        )

    next_level = (
        f"{progress['next_level']}: 还差 {amount(progress['to_next_level'])} to go"
        if progress["next_level"]
        else "–"
    )
    rows = [
        ("level", "等级 Level", level + (" · 手动 pinned" if mv["pinned"] else "")),
        ("level_since", "升级于 Level since", when(mv["level_since"])),
        ("term_end", "等级有效期至 Term ends", when(mv["term_end"])),
        ("grace_until", "宽限期至 Grace until", when(mv["grace_until"])),
        ("next_level", "升级 To next level", next_level),
        ("to_keep", "保级还差 To keep the level", amount(progress["to_keep"])),
        ("points_balance", "可用积分 Points balance", f"{points['balance']:,}"),
        ("points_pending", "待生效积分 Pending", f"{points['pending']:,}"),
        (
            "points_expiring",
            "即将过期 Expiring",
            "; ".join(f"{e['points']:,} @ {local_time(e['at'], zone)[:10]}"
                      for e in points["expiring"]) or "–",
        ),
        ("benefits", "权益 Benefits",
         ", ".join(f"{k}={v}" for k, v in mv["benefits"].items()) or "–"),
        ("tags", "标签 Tags", ", ".join(mv["tags"]) or "–"),
    ]  # fmt: skip
    return [{"item": label, "value": value, "key": key, "raw": value} for key, label, value in rows]


router.include_router(editor_router)
