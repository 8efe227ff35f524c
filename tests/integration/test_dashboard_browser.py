"""The dashboard in a real headless Chromium (the system's `chromium` package, driven by
Selenium through `chromedriver`): each page renders with the shop's data, the rules editor
shows the checker's error for a bad rule and a backtest for a good one. Screenshots are
kept in test-artifacts/dashboard/ (or $ECRM_TEST_ARTIFACTS/dashboard/).

Skipped, saying why, on a machine without Chromium (`apt-get install chromium
chromium-driver`; `.ci/run` installs it where apt-get is available)."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.integration.api_server import READ_KEY, WRITE_KEY, serving
from tests.integration.conftest import consumed, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
ARTIFACTS = Path(os.environ.get("ECRM_TEST_ARTIFACTS", "test-artifacts")) / "dashboard"
RULES = """
rules:
  - id: thank-you
    when: {event: orders, where: {status: paid}}
    holdout: 20%
    action: {kind: message, channel: sms, params: {template: thanks}}
"""
BAD_RULE = """
rules:
  - id: spring-coupon
    when: {event: orders, where: {status: paid}}
    action: {kind: coupon, channel: sms, params: {value: 10}}
"""

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no Chromium on this machine: the dashboard's browser tests drive the system's "
        "chromium and chromedriver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture
def shop(settings, start_worker, tmp_path) -> Iterator[tuple[Any, Any]]:
    """A shop whose orders went through the API and the worker, history drained to chdb."""
    from tests.integration.test_pipeline import sink_all

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    s = settings.model_copy(update={"rules_file": rules})
    start_worker(s)
    now = datetime.now(UTC)
    batch = []
    for i in range(30):
        for n in range(1 + i % 3):
            batch.append(
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": f"c-{i}",
                    "messageId": f"o-{i}-{n}",
                    "timestamp": (now - timedelta(days=40 * (i % 2) + n)).isoformat(),
                    "properties": {"order_id": f"o-{i}-{n}", "total": 150 + 100 * (i % 5)},
                }
            )
    with serving(s) as url:
        answer = httpx.post(
            f"{url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""), timeout=30
        )
        assert answer.json()["accepted"] == len(batch)
    import redis

    client = redis.Redis.from_url(s.redis_url)
    wait_for(lambda: consumed(client) >= len(batch), what="the orders applied")
    client.close()
    ch = sink_all(s)
    try:
        yield s, ch
    finally:
        ch.close()


@pytest.fixture
def browser(tmp_path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    basic = base64.b64encode(f"{READ_KEY}:".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}}
    )
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver: Any, url: str, name: str, flag: str = "rendered", value: str = "yes") -> str:
    """Load `url`, wait until its script says it is done, keep a screenshot; the page text."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(f"return document.body.dataset.{flag}") == value
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    return str(driver.find_element("tag name", "body").text)


PERCENT = re.compile(r"^\d+\.\d%$")
YUAN = re.compile(r"^-?¥\d{1,3}(,\d{3})*\.\d\d$")
UPLIFT = re.compile(r"^[+-]\d+\.\d% \[[+-]\d+\.\d%, [+-]\d+\.\d%\]$")
LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")  # to the second, no zone
SHOP = ZoneInfo("Asia/Shanghai")


def cells(driver: Any, table: str, kind: str) -> list[str]:
    found = driver.find_elements("css selector", f"#{table} td[data-kind={kind}]")
    return [str(c.text) for c in found]


def headers(driver: Any, table: str) -> str:
    return " ".join(str(h.text) for h in driver.find_elements("css selector", f"#{table} th"))


def download(url: str, page: str, table: str) -> list[dict[str, str]]:
    """The table's CSV link, fetched with the read key."""
    separator = "&" if "?" in page else "?"
    answer = httpx.get(f"{url}{page}{separator}csv={table}", auth=(READ_KEY, ""), timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text)))


def test_each_page_renders_with_the_shops_data(shop, browser):
    s, ch = shop
    with serving(s, clickhouse=ch) as url:
        text = shown(browser, f"{url}/", "segments")
        assert "各分群客户数" in text and "Customers per RFM segment" in text
        assert "general_develop" in text and "一般发展客户" in text
        canvas = browser.find_elements("css selector", "#segments-chart canvas")
        assert canvas, "ECharts drew no chart"
        assert browser.find_elements("css selector", "#moves-chart canvas"), "no moves chart"
        assert "prospect" in browser.find_element("id", "moves").text

        text = shown(browser, f"{url}/rules", "rules")
        rows = browser.find_elements("css selector", "#performance tr")
        assert any("thank-you" in r.text for r in rows)
        assert browser.find_elements("css selector", "#funnel-chart canvas")
        feed = browser.find_element("id", "feed-table").text
        assert "thank-you" in feed and ("fired" in feed or "held_out" in feed)

        shown(browser, f"{url}/customers?id=c-4", "customer", flag="loaded")
        profile = browser.find_element("id", "profile").text
        assert "c-4" in profile and ("重要" in profile or "一般" in profile)
        assert "thank-you" in browser.find_element("id", "decisions").text


def test_figures_read_as_a_marketer_reads_them(shop, browser):
    """Labels in Chinese and English, shares and rates as percentages, money as ¥ with
    thousands separators, times to the second in the shop's zone, an "as of" on every page."""
    s, ch = shop
    with serving(s, clickhouse=ch) as url:
        shown(browser, f"{url}/", "segments")
        as_of = browser.find_element("id", "as-of").text
        assert "Asia/Shanghai" in as_of and "latest event time" in as_of
        head = headers(browser, "segments")
        assert "客户数" in head and "Customers" in head and "平均消费" in head
        assert "avg_monetary" not in head and "share" not in head  # no raw column names
        assert all(PERCENT.match(c) for c in cells(browser, "segments", "share"))
        spend = cells(browser, "segments", "yuan")
        assert spend and all(YUAN.match(c) for c in spend), spend
        assert any("," in c for c in spend)  # a segment's total spend is in the thousands
        table_text = browser.find_element("id", "segments").text
        assert not re.search(r"\de[+-]\d", table_text)  # no scientific notation

        shown(browser, f"{url}/rules", "rules")
        rates = cells(browser, "performance", "rate")
        assert rates and all(PERCENT.match(c) or c == "–" for c in rates), rates
        uplift = [c for c in cells(browser, "performance", "text") if "[" in c]
        assert uplift and all(UPLIFT.match(c) for c in uplift), uplift
        assert all(YUAN.match(c) for c in cells(browser, "performance", "yuan") if c != "–")
        times = cells(browser, "feed-table", "time")
        assert times and all(LOCAL_TIME.match(t) for t in times), times
        latest = ch.query("SELECT max(decided_at) AS at FROM rule_decisions")[0]["at"]
        moment = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
        assert moment.astimezone(SHOP).strftime("%Y-%m-%d %H:%M:%S") in times  # shop time

        # a date range with nothing in it, and back
        shown(browser, f"{url}/rules?since=2001-01-01&until=2001-01-31", "rules-empty")
        assert "暂无数据" in browser.find_element("id", "performance").text
        form = browser.find_element("id", "range")
        assert form.find_element("name", "since").get_attribute("value") == "2001-01-01"

        shown(browser, f"{url}/customers?id=c-4", "customer-member", flag="loaded")
        member = browser.find_element("id", "member").text
        assert "等级 Level" in member and "可用积分 Points balance" in member
        assert "标签 Tags" in member and "权益 Benefits" in member
        spend = cells(browser, "profile", "text")
        assert any(YUAN.match(c) for c in spend), spend

        # every table downloads as CSV with raw values
        segments = download(url, "/", "segments")
        assert {r["segment"] for r in segments} >= {"general_develop"}
        assert all(0 <= float(r["share"]) <= 1 for r in segments)
        performance = download(url, "/rules", "performance")
        assert "thank-you" in {r["rule_id"] for r in performance}
        assert "coupon_cost" in performance[0]
        assert download(url, "/", "moves") is not None
        assert download(url, "/customers?id=c-4", "member")
        decisions = download(url, "/customers?id=c-4", "decisions")
        assert decisions and datetime.fromisoformat(decisions[0]["decided_at"]).tzinfo is not None
        feed = httpx.get(f"{url}/dashboard/decisions.csv", auth=(READ_KEY, ""), timeout=30)
        assert "thank-you" in feed.text


def test_the_rules_editor_checks_as_you_type_and_backtests(shop, browser):
    s, ch = shop
    with serving(s, clickhouse=ch) as url:
        shown(browser, f"{url}/editor", "editor-valid", flag="checked", value="valid")
        assert "valid" in browser.find_element("id", "check").text
        browser.find_element("id", "backtest-button").click()
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return document.body.dataset.backtested") == "yes"
        )
        result = browser.find_element("id", "backtest-table").text
        assert "thank-you" in result and "会触发" in result and "Would fire" in result
        assert "¥0.00" in result  # coupon cost, a message rule's
        window = browser.find_element("id", "backtest-window").text
        assert "warmed up from" in window and "Asia/Shanghai" in window
        assert browser.find_elements("css selector", "#backtest-chart canvas")
        link = browser.find_element("id", "backtest-csv")
        assert link.get_attribute("download") == "backtest.csv"
        browser.save_screenshot(str(ARTIFACTS / "editor-backtest.png"))

        area = browser.find_element("id", "rules")
        browser.execute_script("arguments[0].value = '';", area)
        area.send_keys(BAD_RULE)
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.body.dataset.checked") == "invalid"
        )
        browser.save_screenshot(str(ARTIFACTS / "editor-invalid.png"))
        error = browser.find_element("id", "check").text
        assert "spring-coupon" in error and "valid_for" in error
