"""``opensage ui``: access control over real HTTP, and a real headless Chromium session (issue 17 item 5).

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (installed by
``.ci/run``) and the ``selenium`` client (dev extra); it saves docs/img/ui.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from opensage.host import Host
from opensage.plugins.graph_memory.graph import graph_for
from opensage.plugins.graph_memory.markdown import node_tags
from opensage.store import Workspace
from opensage.types import SessionEvent

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = Path(os.environ.get("OPENSAGE_UI_SCREENSHOT", REPO / "docs" / "img" / "ui.png"))


def _seed(project: Path) -> dict[str, int]:
    host = Host(Workspace(project))
    try:
        session = host.session("s-auth", source="test")
        host.record(session, SessionEvent(kind="user_message", role="user",
                                          text="Login fails after a restart. We decided to use JWT for the API instead of sessions."))
        host.record(session, SessionEvent(kind="error", text="Traceback (most recent call last):\nKeyError: 'session'"))
        host.compact(session)
        g = graph_for(host)
        jwt, _ = g.upsert_node("decision", "Use JWT for the API", "We sign tokens with ES256; sessions are gone.")
        redis, _ = g.upsert_node("decision", "Keep sessions in Redis", "Redis holds the sessions of the web app.")
        api, _ = g.upsert_node("concept", "Public API", "The HTTP API under /v1.")
        g.upsert_edge(jwt.id, api.id, "related_to", 0.8)
        g.upsert_edge(jwt.id, redis.id, "related_to", 0.6)
        # provenance: the decision came from the session's first turn
        ep = g.db.conn.execute("SELECT id FROM episodes WHERE session_id='s-auth' ORDER BY seq LIMIT 1").fetchone()[0]
        g.upsert_node("decision", "Use JWT for the API", episode_ids=[ep])
        return {"jwt": jwt.id, "redis": redis.id}
    finally:
        host.close()


class _UI:
    def __init__(self, project: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opensage", "--workspace", str(project), "ui"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "http://" in line or not line:
                break
        m = re.search(r"(http://127\.0\.0\.1:(\d+))/\?token=(\S+)", line)
        if not m:
            self.stop()
            raise AssertionError(f"no URL printed: {line!r} {self.proc.stderr.read()}")
        self.base, self.port, self.token = m.group(1), int(m.group(2)), m.group(3)
        self.url = f"{self.base}/?token={self.token}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def ui(project):
    _seed(project)
    server = _UI(project)
    yield server
    server.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


def _request(url, *, headers=None, data=None, method=None):
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _session_cookie(ui) -> str:
    status, headers, _ = _request(ui.url)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    return cookie.split(";")[0]


def test_ui_access_control(ui, project):
    import psutil

    # only 127.0.0.1 listens
    listening = [c.laddr for c in psutil.Process(ui.proc.pid).net_connections("inet") if c.status == "LISTEN"]
    assert listening and all(a.ip == "127.0.0.1" for a in listening)
    # no token, no cookie: nothing
    assert _request(ui.base + "/")[0] == 403
    assert _request(ui.base + "/api/search?q=jwt")[0] == 403
    assert _request(ui.base + "/?token=wrong")[0] == 403
    cookie = _session_cookie(ui)
    # the token is one-time
    assert _request(ui.url)[0] == 403
    status, headers, body = _request(ui.base + "/api/search?q=JWT", headers={"Cookie": cookie})
    assert status == 200 and any(r["label"] == "Use JWT for the API" for r in json.loads(body)["results"])
    assert not any(k.lower().startswith("access-control-") for k in headers)
    assert "default-src 'none'" in headers["content-security-policy"]
    # a DNS-rebinding page names another host
    assert _request(ui.base + "/api/search?q=JWT", headers={"Cookie": cookie, "Host": f"evil.example:{ui.port}"})[0] == 403
    edit = ui.base + "/api/node/Keep%20sessions%20in%20Redis/edit"
    # writes: JSON only, our origin only, bounded size; each refusal changes nothing
    assert _request(edit, data=b"tags=x", method="POST",
                    headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert _request(edit, data=b'{"tags": ["x"]}', method="POST",
                    headers={"Cookie": cookie, "Content-Type": "application/json", "Origin": "http://evil.example"})[0] == 403
    big = json.dumps({"content": "x" * 300_000}).encode()
    assert _request(edit, data=big, method="POST", headers={"Cookie": cookie, "Content-Type": "application/json"})[0] == 413
    status, _, body = _request(edit, data=b'{"tags": ["bad tag!"]}', method="POST",
                               headers={"Cookie": cookie, "Content-Type": "application/json"})
    assert status == 400 and "not valid" in json.loads(body)["error"]
    host = Host(Workspace(project))
    try:
        node = graph_for(host).resolve("Keep sessions in Redis")
        assert node_tags(node) == [] and node.content == "Redis holds the sessions of the web app."
    finally:
        host.close()
    # mark superseded (through @memory-supersede), then the default search hides it
    status, _, body = _request(ui.base + "/api/node/Keep%20sessions%20in%20Redis/supersede",
                               data=b'{"by": "Use JWT for the API"}', method="POST",
                               headers={"Cookie": cookie, "Content-Type": "application/json"})
    assert status == 200, body
    assert json.loads(body)["node"]["supersededBy"] is not None
    found = lambda extra: [r["label"] for r in json.loads(_request(
        ui.base + "/api/search?q=sessions+Redis" + extra, headers={"Cookie": cookie})[2])["results"]]
    assert "Keep sessions in Redis" not in found("")
    assert "Keep sessions in Redis" in found("&includeSuperseded=1")
    # forget goes through the API too
    status, _, body = _request(ui.base + "/api/node/Keep%20sessions%20in%20Redis/forget", data=b"{}", method="POST",
                               headers={"Cookie": cookie, "Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["removed"].startswith("n")
    assert _request(ui.base + "/api/node/Keep%20sessions%20in%20Redis", headers={"Cookie": cookie})[0] == 404


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None or shutil.which("chromedriver") is None,
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_ui_in_headless_chromium(ui, project, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(ui.url)
        assert driver.current_url == ui.base + "/"  # the token left the address bar
        wait.until(EC.text_to_be_present_in_element((By.ID, "workspace"), "nodes"))
        box = driver.find_element(By.ID, "q")
        box.clear()
        box.send_keys("JWT API")
        driver.find_element(By.ID, "search-btn").click()
        # the list may be drawn again while we look at it (a user would just click again)
        settled = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,
                                                                NoSuchElementException))
        hit = "//ol[@id='results']/li[span[text()='Use JWT for the API']]"
        settled.until(lambda d: d.find_element(By.XPATH, hit).click() is None)
        wait.until(EC.text_to_be_present_in_element((By.ID, "node-label"), "Use JWT for the API"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "relations"), "Public API"))
        assert "We decided to use JWT" in driver.find_element(By.ID, "provenance").text
        # the neighbourhood graph is drawn by cytoscape (3 nodes: the decision and its two relations)
        wait.until(lambda d: d.execute_script("return typeof cytoscape") == "function")
        wait.until(lambda d: d.execute_script(
            "return document.querySelectorAll('#graph canvas').length") >= 1)
        tags = driver.find_element(By.ID, "node-tags")
        tags.clear()
        tags.send_keys("auth, security")
        driver.find_element(By.ID, "save-btn").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "save-status"), "saved"))
        # the tag filter now finds exactly that node
        driver.find_element(By.CSS_SELECTOR, "#filters summary").click()
        driver.find_element(By.ID, "f-tags").send_keys("security")
        driver.find_element(By.ID, "search-btn").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "tags any:security"))
        labels = settled.until(lambda d: [li.find_elements(By.TAG_NAME, "span")[1].text
                                          for li in d.find_elements(By.CSS_SELECTOR, "#results li")] or None)
        assert labels == ["Use JWT for the API"]
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
    host = Host(Workspace(project))
    try:
        node = graph_for(host).resolve("Use JWT for the API")
        assert node_tags(node) == ["auth", "security"]
        assert node.content == "We sign tokens with ES256; sessions are gone."
    finally:
        host.close()
    assert SCREENSHOT.stat().st_size > 10_000
