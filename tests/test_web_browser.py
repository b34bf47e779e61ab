"""The status page in real headless Chromium, driving a real ``daemonkit supervise``.

Playwright for Python drives the distribution's Chromium (``/usr/bin/chromium``); no browser
is downloaded. Each click is checked twice: on the page (what the operator sees) and through
the JSON API or /proc (what really happened). A screenshot goes to the test's tmp dir, and
to ``$DAEMONKIT_SCREENSHOT_OUT`` when set (the README's picture: docs/web-status.png).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import pid_alive, wait_for
from test_web_supervisor import (
    PROGRAMS,
    STUBBORN,
    RunningSupervisor,
    release,
    reload_without_stubborn,
)

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token"

if not os.path.exists(CHROMIUM):  # pragma: no cover - .ci/run installs it
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 640})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.set_default_timeout(15_000)
    page.console_errors = errors  # a test that provokes errors removes the expected ones
    try:
        yield page
        assert not errors, errors  # no script error, no failed resource on the page
    finally:
        context.close()


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[RunningSupervisor]:
    running = RunningSupervisor(tmp_path)
    try:
        running.start()
        for name in ("worker", "cron:0", "cron:1"):
            running.wait_state(name, "RUNNING")
        yield running
    finally:
        running.cleanup()


def row(page: Any, name: str) -> Any:
    return page.locator(f'tr.instance[data-name="{name}"]')


def cell_text(page: Any, name: str, cell: str) -> str:
    return str(row(page, name).locator(f"td.{cell}").inner_text()).strip()


def wait_row(page: Any, name: str, state: str) -> None:
    page.wait_for_selector(f'tr.instance[data-name="{name}"][data-state="{state}"]')


def test_page_shows_every_program_and_the_supervisor(page: Any,
                                                     supervisor: RunningSupervisor,
                                                     tmp_path: Path) -> None:
    page.goto(supervisor.url + "/")
    for name in ("worker", "cron:0", "cron:1"):
        wait_row(page, name, "RUNNING")
    instances = supervisor.instances()
    for name, instance in instances.items():
        assert cell_text(page, name, "pid") == str(instance["pid"])
        assert "B" in cell_text(page, name, "memory")  # KiB / MiB from psutil
    assert page.locator("#sup-pid").inner_text() == str(supervisor.pid())
    assert page.locator("#sup-config").inner_text() == str(supervisor.ini)
    assert page.locator('tr.program[data-program="cron"] td.count').inner_text() \
        == "2/2 running"
    colour = row(page, "worker").locator(".state").evaluate(
        "e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(26, 127, 55)"  # RUNNING is green
    save_screenshot(page, supervisor, tmp_path)


def test_restart_changes_the_pid(page: Any, supervisor: RunningSupervisor) -> None:
    page.goto(supervisor.url + "/")
    wait_row(page, "worker", "RUNNING")
    before = int(cell_text(page, "worker", "pid"))
    row(page, "worker").locator('button[data-verb="restart"]').click()
    page.wait_for_function(
        """([name, old]) => {
             const tr = document.querySelector(`tr.instance[data-name="${name}"]`);
             return tr && tr.dataset.state === "RUNNING"
                    && tr.querySelector("td.pid").textContent !== String(old)
                    && tr.querySelector("td.pid").textContent !== ""; }""",
        arg=["worker", before])
    after = int(cell_text(page, "worker", "pid"))
    assert after == supervisor.instances()["worker"]["pid"]
    assert after != before and not pid_alive(before) and pid_alive(after)
    page.wait_for_selector("#result.ok")
    assert "restart worker: done" in page.locator("#result").inner_text()


def test_stop_shows_stopped(page: Any, supervisor: RunningSupervisor) -> None:
    page.goto(supervisor.url + "/")
    wait_row(page, "cron:0", "RUNNING")
    pid = int(cell_text(page, "cron:0", "pid"))
    row(page, "cron:0").locator('button[data-verb="stop"]').click()
    wait_row(page, "cron:0", "STOPPED")
    assert row(page, "cron:0").locator(".state").inner_text() == "STOPPED"
    assert cell_text(page, "cron:0", "pid") == ""
    assert supervisor.instances()["cron:0"]["state"] == "STOPPED"
    assert not pid_alive(pid)
    assert cell_text(page, "cron:1", "pid") == str(supervisor.instances()["cron:1"]["pid"])
    row(page, "cron:0").locator('button[data-verb="start"]').click()
    wait_row(page, "cron:0", "RUNNING")


def test_add_and_remove_an_instance(page: Any, supervisor: RunningSupervisor) -> None:
    page.goto(supervisor.url + "/")
    wait_row(page, "cron:1", "RUNNING")
    assert row(page, "cron:2").count() == 0
    program = page.locator('tr.program[data-program="cron"]')
    program.locator('button[data-action="add"]').click()
    wait_row(page, "cron:2", "RUNNING")
    added = int(cell_text(page, "cron:2", "pid"))
    assert supervisor.instances()["cron:2"]["pid"] == added and pid_alive(added)
    assert program.locator("td.count").inner_text() == "3/3 running"
    program.locator('button[data-action="remove"]').click()
    page.wait_for_selector('tr.instance[data-name="cron:2"]', state="detached")
    wait_for(lambda: not pid_alive(added), 15, message=f"pid {added} gone")
    assert "cron:2" not in supervisor.instances()


def test_log_view_follows(page: Any, supervisor: RunningSupervisor) -> None:
    page.goto(supervisor.url + "/")
    wait_row(page, "worker", "RUNNING")
    pid = cell_text(page, "worker", "pid")
    row(page, "worker").locator('button[data-verb="log"]').click()
    page.wait_for_function(
        "pid => document.getElementById('log-text').textContent.includes('tick ' + pid)",
        arg=pid)
    shown = page.locator("#log-text").inner_text().count("\n")
    page.wait_for_function(  # new lines arrive without reloading the page
        "n => document.getElementById('log-text').textContent.split('\\n').length > n + 3",
        arg=shown)
    assert page.locator("#log-path").inner_text() == str(supervisor.dir / "worker.log")
    assert row(page, "cron:0").locator('button[data-verb="log"]').is_hidden()


def test_token_login_then_act(page: Any, tmp_path: Path) -> None:
    running = RunningSupervisor(tmp_path, web=f"listen = 127.0.0.1:0\ntoken = {TOKEN}")
    try:
        running.token = TOKEN  # the test's own HTTP client authenticates
        running.start()
        assert page.request.get(running.url + "/").status == 401  # no cookie yet
        page.goto(f"{running.url}/?token={TOKEN}")  # sets the session cookie, redirects
        assert page.url == running.url + "/"
        wait_row(page, "worker", "RUNNING")
        before = int(cell_text(page, "worker", "pid"))
        row(page, "worker").locator('button[data-verb="restart"]').click()
        page.wait_for_function(
            "old => { const td = document.querySelector('tr.instance[data-name=\"worker\"] "
            "td.pid'); return td.textContent && td.textContent !== String(old); }", arg=before)
        wait_for(lambda: not pid_alive(before), 10, message=f"pid {before} gone")
        assert page.request.get(running.url + "/api/status").status == 200  # the cookie
    finally:
        running.cleanup()


def save_screenshot(page: Any, supervisor: RunningSupervisor, tmp_path: Path) -> None:
    """A picture with some variety: a restarted, a stopped and an added instance, a log."""
    shot = tmp_path / "web-status.png"
    assert supervisor.post("/api/programs/worker/restart")[0] == 200
    assert supervisor.post("/api/programs/cron/scale", {"delta": 1})[0] == 200
    assert supervisor.post("/api/programs/cron%3A1/stop")[0] == 200
    wait_row(page, "cron:1", "STOPPED")
    wait_row(page, "cron:2", "RUNNING")
    # predicates are arrow functions, never bare expressions: Playwright evals a bare
    # expression again on every poll, and the page's CSP (no 'unsafe-eval') blocks every eval
    # but the first, DevTools-initiated one; a function is evaluated once and then called
    page.wait_for_function("() => document.querySelector('tr.instance[data-name=\"worker\"] "
                           "td.restarts').textContent === '1'")
    row(page, "worker").locator('button[data-verb="log"]').click()
    page.wait_for_function(
        "() => document.getElementById('log-text').textContent.includes('tick')")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"
    target = os.environ.get("DAEMONKIT_SCREENSHOT_OUT")
    if target:
        shutil.copyfile(shot, target)


ATTACKER_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="{target}/api/programs/worker/stop"
      enctype="text/plain"><input name='{{"delta": 1}}' value=""></form>
<script>
  fetch("{target}/api/programs/worker/restart",
        {{method: "POST", mode: "no-cors", credentials: "include"}})
    .finally(() => {{ document.title = "fetched"; document.getElementById("f").submit(); }});
</script></body></html>"""


def test_a_foreign_page_cannot_act(page: Any, supervisor: RunningSupervisor,
                                   tmp_path: Path) -> None:
    """A page of another origin POSTs a form and a no-cors fetch: 403, nothing changes."""
    import http.server
    import threading

    body = ATTACKER_PAGE.format(target=supervisor.url).encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass  # the browser moved on

        def log_message(self, format: str, *args: Any) -> None:
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    before = supervisor.instances()["worker"]["pid"]
    try:
        responses: list[int] = []
        page.on("response", lambda r: responses.append(r.status)
                if "/api/programs/" in r.url else None)
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        page.wait_for_url(f"{supervisor.url}/api/programs/worker/stop")  # the form landed
        assert responses and all(status == 403 for status in responses), responses
        assert "X-CSRF-Token" in page.content()
        refused = [e for e in page.console_errors if "status of 403" in e]
        assert len(refused) == 2, page.console_errors  # the fetch and the form
        page.console_errors[:] = [e for e in page.console_errors if e not in refused]
    finally:
        attacker.shutdown()
        attacker.server_close()
    after = supervisor.instances()["worker"]
    assert after["pid"] == before and after["state"] == "RUNNING" and after["restarts"] == 0


def test_a_removed_program_shows_until_it_has_stopped(page: Any, tmp_path: Path) -> None:
    running = RunningSupervisor(tmp_path, PROGRAMS + STUBBORN)
    try:
        running.start()
        page.goto(running.url + "/")
        wait_row(page, "stubborn", "RUNNING")
        stubborn = reload_without_stubborn(running)
        removed = page.locator('tr.removed[data-name="stubborn"]')
        removed.wait_for()
        assert removed.locator("td.name").inner_text().strip() == (
            "stubborn (removed)")
        assert removed.locator("td.pid").inner_text().strip() == str(stubborn)
        assert removed.get_attribute("data-state") == "STOPPING"
        assert removed.locator("button:visible").count() == 0  # nothing to act on
        release(running)
        removed.wait_for(state="detached", timeout=20_000)
        assert not pid_alive(stubborn)
    finally:
        release(running)
        running.cleanup()
