"""Segment's browser library, analytics.js (`@segment/analytics-next` from npm, unchanged), in
a real headless Chromium on a shop's page served locally, pointed at a real `ecrm api` by
`cdnURL` alone: it fetches its settings from ecrm, passes the CORS preflight for its origin,
posts text/plain with the write key to /v1/p, /v1/t, /v1/i (and /v1/b when batching), and the
events reach the customer's profile, the anonymous visit merged in at login.

The library is fetched with npm into a cache folder once (ECRM_TEST_CACHE, default
~/.cache/ecrm-tests), never kept in git. Skipped, saying why, without Chromium or npm."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecrm.api.keys import ApiKey, key_hash
from tests.integration.api_server import KEYS, READ_KEY, free_port, serving
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
#: the library's version, pinned so that a test failure is ecrm's, not a new release's
ANALYTICS_NEXT = "@segment/analytics-next@1.84.3"
BROWSER_KEY = "a" * 64
CACHE = Path(os.environ.get("ECRM_TEST_CACHE", Path.home() / ".cache" / "ecrm-tests"))

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tea shop</title>
<script src="/analytics-next/index.js"></script></head>
<body>
<script>
(async () => {
  const api = "%(api)s", writeKey = "%(key)s";
  const failed = [];
  const sent = (ctx) => { if (ctx.failedDelivery()) failed.push(String(ctx.failedDelivery().reason)); };
  try {
    // as a shop would load it: only the write key and where ecrm is
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load({ writeKey, cdnURL: api });
    sent(await analytics.page());
    sent(await analytics.track("Product Viewed", { sku: "tea-1", category: "tea" }));
    sent(await analytics.track("Product Added", { sku: "tea-1", price: 30, quantity: 1 }));
    sent(await analytics.identify("%(user)s", { email: "x@example.com", birthday: "1990-03-21",
                                               consent: { email: true } }));
    sent(await analytics.track("Order Completed", { order_id: "%(user)s-o1", total: 45,
        products: [{ product_id: "cup-1", quantity: 1, price: 45 }] }));
    // the batching delivery strategy posts to /v1/b
    const [batching] = await AnalyticsNext.AnalyticsBrowser.load({ writeKey, cdnURL: api }, {
      integrations: { "Segment.io": { deliveryStrategy: { strategy: "batching",
                                                          config: { size: 2, timeout: 100 } } } } });
    await Promise.all([
      batching.track("Product Viewed", { sku: "pot-1" }),
      batching.track("Product Added to Wishlist", { sku: "pot-2" }),
    ]);
  } catch (e) { failed.push(String(e)); }
  window.failed = failed;
  document.body.dataset.sent = "yes";
})();
</script></body></html>
"""


@pytest.fixture(scope="session")
def analytics_next() -> Path:
    """The library's browser builds (dist/umd), fetched with npm once into the cache."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium (apt-get install chromium chromium-driver)")
    folder = CACHE / ANALYTICS_NEXT.replace("/", "_").replace("@", "")
    if (folder / "index.js").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"no npm on this machine to fetch {ANALYTICS_NEXT} (apt-get install npm)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / "npm-pack"
    work.mkdir(exist_ok=True)
    try:
        packed = (
            subprocess.run(
                [npm, "pack", ANALYTICS_NEXT, "--pack-destination", str(work)],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    except (subprocess.SubprocessError, OSError, IndexError) as exc:
        pytest.skip(f"npm could not fetch {ANALYTICS_NEXT}: {exc}")
    partial = folder.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tarfile.open(work / packed) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/")
            if member.isfile() and name.startswith("dist/umd/") and name.endswith(".js"):
                data = archive.extractfile(member)
                assert data is not None
                (partial / Path(name).name).write_bytes(data.read())
            elif name == "LICENSE.MD" and member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                (partial / "LICENSE.MD").write_bytes(data.read())
    (work / packed).unlink()
    partial.rename(folder)
    return folder


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def shop_page(analytics_next: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The shop's own web server (another origin than the API): its page and the library."""
    root = tmp_path / "shop"
    shutil.copytree(analytics_next, root / "analytics-next")
    port = free_port()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, name="shop", daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{port}", root
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_analytics_js_in_a_browser_lands_its_events_in_the_profile(
    settings, start_worker, shop_page, chromium
):
    from selenium.webdriver.support.ui import WebDriverWait

    start_worker()
    origin, root = shop_page
    keys = [
        *KEYS,
        ApiKey(name="storefront", kind="write", sha256=key_hash(BROWSER_KEY), origins=(origin,)),
    ]
    user = "web-shopper"
    with serving(settings, keys=keys) as api:
        (root / "index.html").write_text(
            PAGE % {"api": api, "key": BROWSER_KEY, "user": user}, encoding="utf-8"
        )
        chromium.get(f"{origin}/index.html")
        WebDriverWait(chromium, 60).until(
            lambda d: (
                d.execute_script("return document.body && document.body.dataset.sent") == "yes"
            )
        )
        failed = chromium.execute_script("return window.failed")
        console = [e["message"] for e in chromium.get_log("browser")]
        assert failed == [], (failed, console)

        def profile(cid: str) -> dict[str, Any] | None:
            got = httpx.get(f"{api}/v1/profiles/{cid}", auth=(READ_KEY, ""), timeout=10)
            return got.json() if got.status_code == 200 else None

        seen = wait_for(
            lambda: (
                (p := profile(user))
                and p["frequency"] == 1
                and {"pot-2"} <= set(p["favorites"])
                and p
            ),
            what="the browser's events in the profile",
        )
        # the anonymous visit (page, view, cart) merged in at identify
        assert set(seen["cart"]) == {"tea-1"} and {"tea-1", "pot-1"} <= set(seen["views"])
        assert seen["birthday"] == "03-21" and seen["consent"]["email"]["granted"] is True
        assert "x@example.com" not in str(seen)
        stats = httpx.get(f"{api}/metrics", timeout=10).text
    # one request per call on /v1/p, /v1/t, /v1/i; the batching instance on /v1/b
    for path in ("/v1/p", "/v1/t", "/v1/i", "/v1/b"):
        assert f'route="{path}",status="200"' in stats, path
