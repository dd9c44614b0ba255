"""The operator page (``/admin/ui``) in a real browser: headless Chromium
(Debian's, at /usr/bin/chromium; .ci/run installs it) driven by Playwright,
against a gateway with fake upstreams. A wrong token is refused, the right
one shows the pools, and when the primary upstream starts failing, the page
shows its circuit open and the failed requests among the recent errors,
by its own refresh. A screenshot is saved under tests/artifacts/ (printed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright import sync_api

from tests.support.gateway import ADMIN_TOKEN, Gateway, running_gateway
from tests.support.resilience import Upstreams, resilience_config, two_upstreams

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with two_upstreams() as fakes:
        yield fakes


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Two failures open a circuit, which then stays open for the test's length.
    with running_gateway(resilience_config(upstreams), tmp_path_factory.mktemp("operator-page"),
                         admin_token=ADMIN_TOKEN, breaker_failures=2, breaker_reset_timeout=300,
                         upstream_retries=0) as gateway:
        yield gateway


@pytest.fixture
def key(gateway: Gateway) -> str:
    return gateway.create_key("10")  # before the browser: Playwright's sync API holds this thread's event loop


@pytest.fixture
def page(gateway: Gateway, key: str) -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def ask(gateway: Gateway, key: str, message: str) -> int:
    response = httpx.post(f"{gateway.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "solo", "messages": [{"role": "user", "content": message}]}, timeout=30)
    return response.status_code


def test_the_page_shows_pools_and_a_circuit_opening(gateway: Gateway, key: str, page: sync_api.Page) -> None:
    expect = sync_api.expect
    assert ask(gateway, key, "hello before") == 200

    page.goto(f"{gateway.url}/admin/ui?refresh=500")
    page.fill("#token", "not-the-admin-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("does not grant admin access")
    assert page.evaluate("sessionStorage.length") == 0, "a refused token is not kept"

    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    pool = page.locator("#pools tr[data-provider=primary]")
    expect(pool).to_be_visible()
    expect(pool.locator("[data-circuit]")).to_have_attribute("data-circuit", "closed")
    expect(page.locator("#providers tr[data-provider=primary]")).to_contain_text("all closed")
    expect(page.locator("#sparks")).to_contain_text("requests / min")
    assert page.evaluate("sessionStorage.getItem('gatewayz.adminToken')") == ADMIN_TOKEN

    # The primary upstream fails until its circuit for ``solo`` opens; no candidate is left to answer.
    assert [ask(gateway, key, f"fail:500@primary {n}") for n in range(2)] == [502, 502]
    opened = page.locator("#providers tr[data-provider=primary] [data-model=solo]")
    expect(opened).to_have_attribute("data-circuit", "open", timeout=15_000)
    expect(page.locator("#errors tbody tr")).to_have_count(2, timeout=15_000)
    expect(page.locator("#errors tbody")).to_contain_text("primary")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "operator_page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"operator page screenshot: {shot}")
    assert shot.stat().st_size > 0
