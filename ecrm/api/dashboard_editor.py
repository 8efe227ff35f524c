"""The dashboard's rules editor: the rules text checked as it is typed (`ecrm rules check`'s
checker) and backtested over the last 30 days (`ecrm rules backtest`'s replay, with the same
warm-up, consent default and membership programme). Its script is static/dashboard/editor.js."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from agents.backtest.report import DEFAULT_WARM_UP
from agents.rules.check import check_rules
from ecrm.api.context import ApiContext, require_key
from ecrm.api.dashboard_page import esc, page
from ecrm.api.formats import local_time
from schemas.errors import EcrmError
from schemas.membership import load_programme

router = APIRouter(include_in_schema=False)


@router.get("/editor", response_class=HTMLResponse)
def editor(request: Request) -> HTMLResponse:
    require_key(request, "read")
    ctx: ApiContext = request.app.state.ctx
    text = Path(ctx.settings.rules_file).read_text(encoding="utf-8")
    warm = DEFAULT_WARM_UP.days
    body = f"""
<p>边写边检查（与 <code>ecrm rules check</code> 相同）；回测显示规则在近30天历史上会做什么
（预热 {warm} 天，与 <code>ecrm rules backtest --since 30d</code> 相同）。保存请提交到规则文件。
<span class="en">Checked as you type (the same checker as <code>ecrm rules check</code>); the
backtest shows what the rules would have done over the last 30 days of history, warmed up on
the {warm} days before (as <code>ecrm rules backtest FILE --since 30d</code>). Saving is
done by committing the rules file ({esc(ctx.settings.rules_file)}).</span></p>
<textarea id="rules" spellcheck="false">{esc(text)}</textarea>
<div id="check">…</div>
<button id="backtest-button">回测 <span class="en">Backtest, last 30 days</span></button>
<div id="backtest"></div><div id="backtest-chart" class="chart" style="display:none"></div>"""
    return page(
        "规则编辑", "Rules editor", "/editor", body, script_src="/static/dashboard/editor.js"
    )


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
    from streams.app import INPUT_TOPICS

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
                warm_up=DEFAULT_WARM_UP,
                source="editor",
                # as `ecrm rules backtest` runs it: the same consent default and programme
                consent_default=ctx.settings.consent_granted,
                programme=load_programme(ctx.settings.membership_file)
                if ctx.settings.membership_file
                else None,
                topics=tuple(ctx.settings.topic(n) for n in INPUT_TOPICS),
            )
        )
        zone = ruleset.policy.zone
        window = (
            f"回测 backtest {local_time(run.since, zone)} .. {local_time(run.until, zone)} "
            f"({zone.key}); 预热自 warmed up from {local_time(run.warm_from, zone)}; "
            f"{run.stats.events:,} events, {run.customers:,} customers"
        )
        return {**run.as_json(), "window_text": window}

    return JSONResponse(await run_in_threadpool(replay))
