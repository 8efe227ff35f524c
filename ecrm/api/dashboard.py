"""The marketers' dashboard, server-rendered, in Chinese and English: customers per RFM segment
and how they moved this week, rule performance with uplift, a live feed of decisions, a
customer lookup, and a rules editor that checks as you type and backtests before saving.

Every figure comes from the analysts' named queries (`ecrm sql`), the profile reads of
`ecrm profile` and the checker and backtest of `ecrm rules`; the charts are ECharts, served
from /static (no CDN). A read key is needed, as for the read API.
"""

from __future__ import annotations

import html
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from agents.profile.reads import read_profile
from agents.rules.check import check_rules
from ecrm.api.context import ApiContext, require_key
from ecrm.api.reading import customer_decisions, json_rows, recent_decisions
from schemas.errors import EcrmError
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
NAV = [
    ("/", "客户分群", "Segments"),
    ("/rules", "规则效果", "Rules"),
    ("/customers", "客户查询", "Customers"),
    ("/editor", "规则编辑", "Rules editor"),
]

_STYLE = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;color:#222}
header{background:#c62f2f;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none}header a.on{font-weight:bold;border-bottom:2px solid #fff}
main{padding:16px 24px}h2{font-size:18px;margin:24px 0 8px}.en{color:#888;font-weight:normal}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eee;padding:4px 10px;
text-align:right}th:first-child,td:first-child{text-align:left}.chart{width:100%;height:340px}
.ok{color:#17803d}.bad{color:#c62f2f;white-space:pre-wrap}textarea{width:100%;height:420px;
font-family:monospace;font-size:13px}pre{background:#f6f6f6;padding:8px;overflow:auto}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _data(rows: Any) -> str:
    """JSON for a <script type=application/json> block (no `</` can close the script)."""
    text = orjson.dumps(rows, default=str).decode()
    return text.replace("</", "<\\/")


def page(title_zh: str, title_en: str, path: str, body: str, script: str = "") -> HTMLResponse:
    nav = "".join(
        f'<a href="{href}" class="{"on" if href == path else ""}">{zh} '
        f'<span class="en">{en}</span></a>'
        for href, zh, en in NAV
    )
    return HTMLResponse(
        f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>ecrm · {_esc(title_zh)} {_esc(title_en)}</title><style>{_STYLE}</style>
<script src="/static/echarts/echarts.min.js"></script></head>
<body><header><b>ecrm</b>{nav}</header><main>
<h1>{_esc(title_zh)} <span class="en">{_esc(title_en)}</span></h1>{body}</main>
<script>{script}
document.body.dataset.loaded = 'yes';</script></body></html>"""
    )


def table(rows: list[dict[str, Any]], columns: list[str], element_id: str) -> str:
    if not rows:
        return f'<p id="{element_id}">暂无数据 <span class="en">no data yet</span></p>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f'<table id="{element_id}"><tr>{head}</tr>{body}</table>'


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return value


def _named(ch: ClickHouse, name: str, params: dict[str, str]) -> list[dict[str, Any]]:
    query = named_query(name)
    return ch.query(query.sql, query.bind(params, now=datetime.now(UTC)))


@router.get("/", response_class=HTMLResponse)
def segments(request: Request) -> HTMLResponse:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    now = datetime.now(UTC)
    week_ago = (now - timedelta(days=7)).isoformat()

    def read(ch: ClickHouse) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        dist = _named(ch, "rfm_distribution", {})
        moves = _named(ch, "segment_migration", {"date_a": week_ago, "date_b": now.isoformat()})
        return dist, moves

    dist, moves = ctx.analysis.run(read)
    for row in dist:
        row["名称"] = SEGMENT_NAMES.get(row["segment"], row["segment"])
    moved = [m for m in moves if m["segment_a"] != m["segment_b"]]
    moved.sort(key=lambda m: -m["customers"])
    chart = [
        {"name": f"{SEGMENT_NAMES.get(r['segment'], '')} {r['segment']}", "value": r["customers"]}
        for r in dist
    ]
    # a week ago on the left, now on the right (a Sankey needs the two sides told apart)
    flows = [
        {"source": f"{m['segment_a']} ·7d", "target": m["segment_b"], "value": m["customers"]}
        for m in moved
    ]
    body = f"""
<h2>各分群客户数 <span class="en">Customers per RFM segment</span></h2>
<div id="segments-chart" class="chart"></div>
{table(dist, ["segment", "名称", "customers", "share", "avg_days_since_last_order", "avg_frequency", "avg_monetary"], "segments")}
<h2>本周分群迁移 <span class="en">How customers moved this week</span></h2>
<div id="moves-chart" class="chart"></div>
{table(moved[:30], ["segment_a", "segment_b", "customers", "share_of_a"], "moves")}
<script type="application/json" id="segments-data">{_data(chart)}</script>
<script type="application/json" id="moves-data">{_data(flows)}</script>"""
    script = """
const d = JSON.parse(document.getElementById('segments-data').textContent);
const c = echarts.init(document.getElementById('segments-chart'));
c.setOption({animation:false, tooltip:{}, xAxis:{type:'category', data:d.map(x=>x.name),
  axisLabel:{interval:0, rotate:20}}, yAxis:{type:'value'},
  series:[{type:'bar', data:d.map(x=>x.value), itemStyle:{color:'#c62f2f'}}]});
const m = JSON.parse(document.getElementById('moves-data').textContent);
const names = [...new Set(m.flatMap(x => [x.source, x.target]))].map(n => ({name: n}));
if (m.length) echarts.init(document.getElementById('moves-chart')).setOption({
  animation:false, tooltip:{}, series:[{type:'sankey', data:names, links:m,
  emphasis:{focus:'adjacency'}, lineStyle:{color:'source', opacity:0.4}}]});
else document.getElementById('moves-chart').style.display = 'none';
document.body.dataset.rendered = 'yes';"""
    return page("客户分群", "Segments", "/", body, script)


@router.get("/rules", response_class=HTMLResponse)
def rules(request: Request) -> HTMLResponse:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    params = {"since": "-30d", "until": datetime.now(UTC).isoformat(), "window_hours": "72"}
    perf = ctx.analysis.run(lambda ch: _named(ch, "rule_performance", params))
    for row in perf:
        if row.get("uplift") is not None:
            row["uplift (95% CI)"] = (
                f"{float(row['uplift']):+.1%} [{float(row['uplift_ci_low']):+.1%}, "
                f"{float(row['uplift_ci_high']):+.1%}]"
            )
    funnel = [
        {"name": "决策 decided", "value": sum(int(r["decided"]) for r in perf)},
        {"name": "发送 sent", "value": sum(int(r["sent"]) for r in perf)},
        # what `ecrm deliver` and the receipts said (docs/delivery.md), once it runs
        {"name": "已投递 delivery sent", "value": sum(int(r["delivery_sent"]) for r in perf)},
        {"name": "送达 delivered", "value": sum(int(r["delivered"]) for r in perf)},
        {"name": "点击 clicked", "value": sum(int(r["clicked"]) for r in perf)},
        {"name": "转化 converted", "value": sum(int(r["converted"]) for r in perf)},
    ]
    if funnel[2]["value"] == 0:  # nothing delivered through ecrm: the funnel of before
        funnel = [funnel[0], funnel[1], funnel[-1]]
    body = f"""
<h2>规则效果（近30天） <span class="en">Rule performance, last 30 days (last touch, 72 h)</span></h2>
{table(perf, ["rule_id", "decided", "sent", "delivered", "clicked", "held_out", "converted", "treated_rate", "held_out_rate", "uplift (95% CI)", "coupon_cost", "incremental_gmv"], "performance")}
<h2>漏斗 <span class="en">Funnel</span></h2><div id="funnel-chart" class="chart"></div>
<h2>实时决策 <span class="en">Live decisions</span></h2><div id="feed">…</div>
<script type="application/json" id="funnel-data">{_data(funnel)}</script>"""
    script = """
const f = JSON.parse(document.getElementById('funnel-data').textContent);
echarts.init(document.getElementById('funnel-chart')).setOption({animation:false, tooltip:{},
  series:[{type:'funnel', sort:'none', data:f, label:{formatter:'{b}: {c}'}}]});
async function feed(){
  const r = await fetch('/dashboard/decisions.json');
  const rows = (await r.json()).decisions;
  const cols = ['decided_at','customer_id','rule_id','outcome','reason','channel','coupon_value'];
  const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
  document.getElementById('feed').innerHTML = rows.length ? '<table id="feed-table"><tr>' +
    cols.map(c=>'<th>'+c+'</th>').join('') + '</tr>' + rows.map(row => '<tr>' +
    cols.map(c=>'<td>'+esc(row[c])+'</td>').join('') + '</tr>').join('') + '</table>'
    : '暂无决策 <span class="en">no decisions yet</span>';
  document.body.dataset.rendered = 'yes';
}
feed(); setInterval(feed, 5000);"""
    return page("规则效果", "Rules", "/rules", body, script)


@router.get("/dashboard/decisions.json")
def decisions_feed(request: Request) -> JSONResponse:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    rows = ctx.analysis.run(lambda ch: recent_decisions(ch, 50))
    return JSONResponse({"decisions": json_rows(rows)})


@router.get("/customers", response_class=HTMLResponse)
def customers(request: Request, id: str | None = None) -> HTMLResponse:  # noqa: A002
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    form = f"""<form method="get" action="/customers"><input name="id" value="{_esc(id)}"
placeholder="customer_id"> <button>查询 <span class="en">Look up</span></button></form>"""
    if not id:
        return page("客户查询", "Customer lookup", "/customers", form)
    found = read_profile(ctx.settings, id)
    if found is None:
        body = (
            form
            + f'<p id="not-found">没有客户 {_esc(id)} <span class="en">no such customer</span></p>'
        )
        return page("客户查询", "Customer lookup", "/customers", body)
    view = found.public_view()
    decided = ctx.analysis.run(lambda ch: customer_decisions(ch, found.customer_id, 20))
    summary = {
        "customer_id": view["customer_id"],
        "segment": f"{view['segment']} {SEGMENT_NAMES.get(str(view['segment']), '')}",
        "recency_days": view["recency_days"],
        "frequency": view["frequency"],
        "monetary": view["monetary"],
        "cart": ", ".join(view["cart"]),  # type: ignore[arg-type]
        "favorites": ", ".join(view["favorites"]),  # type: ignore[arg-type]
    }
    body = f"""{form}
<h2>画像 <span class="en">Profile</span></h2>{table([summary], list(summary), "profile")}
<h2>最近决策 <span class="en">Recent decisions</span></h2>
{table(decided, ["decided_at", "rule_id", "outcome", "reason", "channel", "coupon_value"], "decisions")}
<h2>JSON <span class="en">as GET /v1/profiles/{_esc(found.customer_id)} returns it</span></h2>
<pre>{_esc(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())}</pre>"""
    return page("客户查询", "Customer lookup", "/customers", body)


@router.get("/editor", response_class=HTMLResponse)
def editor(request: Request) -> HTMLResponse:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    text = Path(ctx.settings.rules_file).read_text(encoding="utf-8")
    body = f"""
<p>边写边检查（与 <code>ecrm rules check</code> 相同）；回测显示规则在近30天历史上会做什么。保存请提交到规则文件。
<span class="en">Checked as you type (the same checker as <code>ecrm rules check</code>); the
backtest shows what the rules would have done over the last 30 days of history. Saving is
done by committing the rules file ({_esc(ctx.settings.rules_file)}).</span></p>
<textarea id="rules" spellcheck="false">{_esc(text)}</textarea>
<div id="check">…</div>
<button id="backtest-button">回测 <span class="en">Backtest, last 30 days</span></button>
<pre id="backtest"></pre>"""
    script = """
const area = document.getElementById('rules'), out = document.getElementById('check');
let timer = null;
async function check(){
  const r = await fetch('/dashboard/rules/check', {method:'POST', body: area.value});
  const a = await r.json();
  out.className = a.valid ? 'ok' : 'bad';
  out.textContent = a.message;
  document.body.dataset.checked = a.valid ? 'valid' : 'invalid';
}
area.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(check, 300); });
document.getElementById('backtest-button').addEventListener('click', async () => {
  const b = document.getElementById('backtest'); b.textContent = '…';
  const r = await fetch('/dashboard/rules/backtest', {method:'POST', body: area.value});
  b.textContent = JSON.stringify(await r.json(), null, 2);
  document.body.dataset.backtested = 'yes';
});
check();"""
    return page("规则编辑", "Rules editor", "/editor", body, script)


@router.post("/dashboard/rules/check")
async def check_text(request: Request) -> JSONResponse:
    """The rules text through `ecrm rules check`'s checker."""
    require_key(request, "read")
    text = (await request.body()).decode("utf-8", errors="replace")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rules.yaml"
        path.write_text(text, encoding="utf-8")
        code, message = await run_in_threadpool(check_rules, path)
    return JSONResponse({"valid": code == 0, "message": message.replace(str(path), "rules")})


@router.post("/dashboard/rules/backtest")
async def backtest_text(request: Request) -> JSONResponse:
    """What the rules text would have done over the last 30 days (`ecrm rules backtest`)."""
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    from agents.backtest.run import run_backtest
    from agents.profile.policy import rfm_policy
    from schemas.rules import parse_rules

    text = (await request.body()).decode("utf-8", errors="replace")
    try:
        ruleset = parse_rules(text, "rules")
    except EcrmError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    until = datetime.now(UTC)

    def replay() -> dict[str, Any]:
        run, _ = ctx.analysis.run(
            lambda ch: run_backtest(
                ch,
                ruleset,
                rfm_policy(ctx.settings),
                since=until - timedelta(days=30),
                until=until,
                warm_up=timedelta(days=90),
                source="editor",
            )
        )
        return run.as_json()

    return JSONResponse(await run_in_threadpool(replay))
