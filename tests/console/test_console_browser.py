"""The console in a real headless Chromium against a real `memvault serve`: what a person sees
(verdict, counts, the drop, a backup's validity, a search result, an edit in the history, a
refused store), who sees what (a scoped key), CSRF, and that no request leaves loopback.
One browser for the module; each test starts from a signed-out browser."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from memvault.embed.local import LocalEmbedder
from tests.console.chrome import DESKTOP, PHONE, chromium, off_loopback, requested_urls
from tests.console.servers import (
    ADMIN_KEY,
    ALICE,
    BOB,
    CAROL,
    Served,
    memvault_serve,
    refused_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: LocalEmbedder
           ) -> Iterator[Served]:
    with memvault_serve(tmp_path_factory.mktemp("serve"), embedder) as served:
        yield served


@pytest.fixture(scope="module")
def browser_session() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def browser(browser_session: Any) -> Any:
    browser_session.set_window_size(*DESKTOP)
    # Every cookie of every site and path (WebDriver's own call sees the current page's only).
    browser_session.execute_cdp_cmd("Network.clearBrowserCookies", {})
    requested_urls(browser_session)  # drain what earlier tests requested
    return browser_session


def sign_in(browser: Any, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{url}/ui")
    assert "/ui/signin" in browser.current_url  # an admin key is set: sign-in first
    field = browser.find_element(By.ID, "api_key")
    field.send_keys(key)
    field.submit()
    WebDriverWait(browser, 10).until(lambda d: "/ui/signin" not in d.current_url)


def absent(browser: Any, selector: str) -> bool:
    """No such element on the page, asked without the implicit wait for one to appear."""
    from selenium.webdriver.common.by import By

    browser.implicitly_wait(0)
    try:
        return not browser.find_elements(By.CSS_SELECTOR, selector)
    finally:
        browser.implicitly_wait(5)


def text_of(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.ID, element_id).text)


def test_overview_shows_verdict_counts_drop_and_backups(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served.url, ADMIN_KEY)
    assert browser.current_url.endswith("/ui")
    for _ in range(50):  # the history is read in the background at start (milliseconds here)
        if not text_of(browser, "drop").startswith("The history is being read"):
            break
        time.sleep(0.1)
        browser.refresh()
    assert text_of(browser, "verdict") == "OK"
    assert text_of(browser, "alerts") == "No alert is firing."
    assert text_of(browser, "total") == str(len(ALICE) + len(BOB))
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "#namespaces tbody tr")}
    assert rows == {"user:alice": str(len(ALICE)), "user:bob/agent:van%2Fassistant": str(len(BOB))}
    peak = len(ALICE) + len(BOB) + len(CAROL)
    assert text_of(browser, "drop").startswith(
        f"largest drop: {peak} → {len(ALICE) + len(BOB)} memories (-{len(CAROL)}, ")
    chart = browser.find_element(By.CSS_SELECTOR, "svg.chart")
    assert chart.size["width"] > 400 and chart.find_elements(By.CSS_SELECTOR, "line.drop")
    backups = browser.find_elements(By.CSS_SELECTOR, "table.backups tbody tr")
    assert len(backups) == 1 and "valid" in backups[0].text and "KiB" in backups[0].text
    assert text_of(browser, "embedder").startswith("local:")
    assert text_of(browser, "journal-lag") == "0 s"
    assert "none yet" in text_of(browser, "drill")
    paint = browser.execute_script(
        "return performance.getEntriesByName('first-contentful-paint')[0].startTime")
    assert paint < 2000, paint  # generous here; bench/bench_console.py measures at 100k
    shot = os.environ.get("CONSOLE_SCREENSHOT")
    if shot:  # docs/console.png is made this way (docs/console.md)
        browser.set_window_size(1280, 1100)
        browser.save_screenshot(shot)
    assert browser.get_screenshot_as_png().startswith(b"\x89PNG")


def test_no_request_leaves_loopback_and_the_api_docs_render(browser: Any,
                                                            served: Served) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sign_in(browser, served.url, ADMIN_KEY)
    browser.get(f"{served.url}/ui/memories?namespace=user%3Aalice")
    browser.get(f"{served.url}/docs")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "memvault" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info").text
    assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")  # the routes
    browser.get(f"{served.url}/redoc")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "h1"))
    assert "memvault" in browser.find_element(By.CSS_SELECTOR, "h1").text
    urls = requested_urls(browser)
    assert any(u.endswith("/swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("/redoc.standalone.js") for u in urls)
    assert any("/openapi.json" in u for u in urls)
    assert off_loopback(urls) == [], off_loopback(urls)


def test_search_open_edit_history_and_delete(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    sign_in(browser, served.url, ADMIN_KEY)
    browser.find_element(By.LINK_TEXT, "Memories").click()
    Select(browser.find_element(By.ID, "namespace")).select_by_value("user:alice")
    query = browser.find_element(By.ID, "q")
    query.send_keys("mountain walking holidays")
    query.submit()
    WebDriverWait(browser, 10).until(lambda d: "q=" in d.current_url)
    assert text_of(browser, "results-h") == "Results for “mountain walking holidays”"
    first = browser.find_elements(By.CSS_SELECTOR, "#results li a")[0]
    assert first.text == ALICE[0]
    first.click()
    assert text_of(browser, "memory-text") == ALICE[0]
    field = browser.find_element(By.ID, "text")
    field.clear()
    field.send_keys("Alice goes hiking in the Pyrenees every August")
    browser.find_element(By.ID, "save").click()
    assert text_of(browser, "flash") == "Saved."
    assert text_of(browser, "memory-text") == "Alice goes hiking in the Pyrenees every August"
    history = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert history[0].startswith("UPDATE") and ALICE[0] in history[0] and "Pyrenees" in history[0]
    assert history[-1].startswith("ADD")
    memory_id = served.alice_ids[ALICE[4]]
    browser.get(f"{served.url}/ui/memories/{memory_id}")
    browser.find_element(By.ID, "delete").click()
    assert text_of(browser, "to-delete") == ALICE[4]  # asked first, nothing deleted yet
    assert httpx.get(f"{served.url}/memories/{memory_id}",
                     headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    browser.find_element(By.ID, "confirm-delete").click()
    assert text_of(browser, "flash") == "Memory deleted."
    assert ALICE[4] not in text_of(browser, "results")
    assert httpx.get(f"{served.url}/memories/{memory_id}",
                     headers={"X-API-Key": ADMIN_KEY}).status_code == 404
    browser.get(f"{served.url}/ui/memories/{memory_id}")
    assert "was deleted" in browser.find_element(By.TAG_NAME, "main").text
    assert text_of(browser, "history").count("DELETE") == 1


def test_a_scoped_key_sees_only_its_namespace(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served.url, served.bob_token)
    assert text_of(browser, "who").endswith("user_id=bob")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#namespaces tbody tr")]
    assert rows == [f"user:bob/agent:van%2Fassistant {len(BOB)}"]
    assert text_of(browser, "total") == str(len(BOB))
    assert absent(browser, "#verdict")  # the operator's view is the admin's
    assert absent(browser, "table.backups")
    browser.get(f"{served.url}/ui/memories")
    assert {r.text.split("\n")[0] for r in browser.find_elements(
        By.CSS_SELECTOR, "#results li")} == set(BOB)
    browser.get(f"{served.url}/ui/memories?namespace=user%3Aalice")
    assert "may only access user_id='bob'" in text_of(browser, "error")
    browser.get(f"{served.url}/ui/memories/{served.alice_ids[ALICE[1]]}")
    assert "not found" in text_of(browser, "error")
    assert ALICE[1] not in browser.page_source


class _Attacker(BaseHTTPRequestHandler):
    """Another local site with a form aimed at the console (SameSite treats every port of
    127.0.0.1 as the same site, so the cookie goes along; the CSRF token must stop it)."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form method="post" action="{self.target}"><button id="go">win a prize'
                '</button></form>').encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_mutations_without_the_csrf_token_are_refused(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By

    memory_id = served.alice_ids[ALICE[1]]
    sign_in(browser, served.url, ADMIN_KEY)
    handler = type("Attacker", (_Attacker,),
                   {"target": f"{served.url}/ui/memories/{memory_id}/delete"})
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{site.server_address[1]}/")
        browser.find_element(By.ID, "go").click()
        assert "Not done (403)" in browser.find_element(By.TAG_NAME, "h1").text
        assert "nothing was changed" in text_of(browser, "error")
    finally:
        site.shutdown()
        thread.join()
    # The session cookie itself, without the form's token: refused too.
    cookie = browser.get_cookie("memvault_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    refused = httpx.post(f"{served.url}/ui/memories/{memory_id}/edit",
                         data={"text": "overwritten"},
                         cookies={"memvault_console": cookie["value"]})
    assert refused.status_code == 403
    kept = httpx.get(f"{served.url}/memories/{memory_id}", headers={"X-API-Key": ADMIN_KEY})
    assert kept.status_code == 200 and kept.json()["memory"] == ALICE[1]


def test_keyboard_labels_and_contrast(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{served.url}/ui/signin")
    label = browser.find_element(By.CSS_SELECTOR, "label[for=api_key]")
    assert label.text == "API key"
    sign_in(browser, served.url, ADMIN_KEY)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content"
    skip.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    reached = []
    for _ in range(8):  # from the content on, Tab reaches the namespaces' links
        browser.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(browser.switch_to.active_element.text)
    assert "user:alice" in reached, reached
    browser.get(f"{served.url}/ui/memories/{served.alice_ids[ALICE[2]]}")
    for page in (f"{served.url}/ui/memories", browser.current_url):
        browser.get(page)
        for field in browser.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), "
                                                            "select, textarea"):
            field_id = field.get_attribute("id")
            assert field_id and browser.find_elements(By.CSS_SELECTOR, f"label[for={field_id}]")
    browser.get(f"{served.url}/ui")
    for selector in ("body", "#verdict", "a", "caption", "th"):
        element = browser.find_element(By.CSS_SELECTOR, selector)
        ratio = contrast(element.value_of_css_property("color"),
                         _background(browser, element))
        assert ratio >= 4.5, (selector, ratio)


def _background(browser: Any, element: Any) -> str:
    return str(browser.execute_script(
        "let e = arguments[0];"
        "while (e) { const c = getComputedStyle(e).backgroundColor;"
        "  if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c;"
        "  e = e.parentElement; }"
        "return 'rgb(255, 255, 255)';", element))


def contrast(foreground: str, background: str) -> float:
    def luminance(color: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"[\d.]+", color)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_phone_width_has_no_sideways_scrolling(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served.url, ADMIN_KEY)
    browser.set_window_size(*PHONE)
    for path in ("/ui", "/ui/memories", f"/ui/memories/{served.alice_ids[ALICE[3]]}"):
        browser.get(f"{served.url}{path}")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    browser.get(f"{served.url}/ui")
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.is_displayed() and verdict.text == "OK"


def test_a_refused_store_is_shown_as_refused(browser: Any, embedder: LocalEmbedder,
                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with refused_server(tmp_path, embedder) as url:
        browser.get(f"{url}/ui")  # open mode on loopback: no sign-in
        assert text_of(browser, "verdict") == "REFUSED"
        alerts = text_of(browser, "alerts")
        assert "StoreEmpty" in alerts and "the memory routes are refused" in alerts
        assert "What to do:" in alerts
        browser.get(f"{url}/ui/memories?q=worth+keeping")
        assert "The store is refused" in browser.find_element(By.TAG_NAME, "h1").text
        assert "StoreEmpty" in text_of(browser, "refused")
        started = time.monotonic()
        api = httpx.post(f"{url}/search", json={"query": "worth keeping", "user_id": "alice"})
        assert api.status_code == 503 and time.monotonic() - started < 5
