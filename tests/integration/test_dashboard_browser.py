"""The dashboard in a real headless Chromium (the system's `chromium` package, driven by
Selenium through `chromedriver`): each page renders with the shop's data, the rules editor
shows the checker's error for a bad rule and a backtest for a good one. Screenshots are
kept in test-artifacts/dashboard/ (or $ECRM_TEST_ARTIFACTS/dashboard/).

Skipped, saying why, on a machine without Chromium (`apt-get install chromium
chromium-driver`; `.ci/run` installs it where apt-get is available)."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
        assert '"rule_id": "thank-you"' in browser.find_element("id", "backtest").text

        area = browser.find_element("id", "rules")
        browser.execute_script("arguments[0].value = '';", area)
        area.send_keys(BAD_RULE)
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script("return document.body.dataset.checked") == "invalid"
        )
        browser.save_screenshot(str(ARTIFACTS / "editor-invalid.png"))
        error = browser.find_element("id", "check").text
        assert "spring-coupon" in error and "valid_for" in error
