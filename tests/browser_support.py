"""Running the real app for end-to-end tests: a server, a browser, and what a user sees.

``AppServer`` starts ``streamlit run app.py`` on a free local port with its own
runs folder, the way ``make run`` does. ``chromium`` drives Debian's Chromium
through Playwright. The page helpers wait until the app is idle, collect what
would alarm a student (exception boxes, error alerts) and save full-page
screenshots under test-artifacts/screenshots/.

Selectors come from the DOM Streamlit renders: ``st.exception`` and uncaught
exceptions are ``[data-testid="stException"]`` (inside an error alert);
``st.error`` is ``[data-testid="stAlertContentError"]``; the app root
``[data-testid="stApp"]`` carries ``data-test-script-state`` ("running" while a
script runs) and the header shows ``[data-testid="stStatusWidget"]`` meanwhile.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PORTS_ENV = "FACELAB_TEST_PORTS"  # e.g. "8610-8630"; unset: any free port the system gives

EXCEPTION = '[data-testid="stException"]'
ERROR_ALERT = '[data-testid="stAlertContentError"]:not(:has([data-testid="stException"]))'
STATUS_WIDGET = '[data-testid="stStatusWidget"]'


def require_chromium() -> None:
    """Skip where Chromium is missing on a developer's machine; fail in CI, where
    `make test` must have installed it (a skipped end-to-end test is no test)."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install it with `make browser` (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A local port nobody listens on, from FACELAB_TEST_PORTS when it is set."""
    spec = os.environ.get(PORTS_ENV, "").strip()
    candidates = [0]
    if spec:
        low, _, high = spec.partition("-")
        candidates = list(range(int(low), int(high or low) + 1))
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError(f"no free port in {spec}")


class AppServer:
    """``streamlit run app.py`` with its own runs folder; start, health, kill, restart."""

    def __init__(self, runs_dir: Path, env: dict | None = None, port: int | None = None):
        self.runs_dir = Path(runs_dir)
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.log_path = self.runs_dir.parent / f"streamlit-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "AppServer":
        env = dict(os.environ, FACELAB_RUNS_DIR=str(self.runs_dir), PYTHONUNBUFFERED="1", **self.extra_env)
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                   "--server.port", str(self.port), "--server.address", "127.0.0.1",
                   "--browser.gatherUsageStats", "false"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout)
        return self

    def healthy(self, timeout: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=timeout) as reply:
                return reply.status == 200 and reply.read().strip() == b"ok"
        except OSError:
            return False

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.process.returncode}:\n{self.log()}")
            if self.healthy(timeout=2.0):
                return
            time.sleep(0.25)
        raise TimeoutError(f"the app did not answer /_stcore/health within {timeout:.0f} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL, as when the machine or the operator pulls the plug: no cleanup runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self, last: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-last:]
        except OSError:
            return ""


@contextmanager
def running_app(runs_dir: Path, **kwargs):
    server = AppServer(runs_dir, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def chromium(width: int = 1400, height: int = 900):
    """A headless Debian Chromium page (Playwright drives it; no browser is downloaded)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            yield context.new_page()
        finally:
            browser.close()


def wait_idle(page, timeout: float = 60.0, settle: float = 0.75) -> None:
    """Until the script has finished and stayed finished for `settle` seconds (a
    rerun right after the first, or a fragment refreshing, would otherwise count)."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        state = page.evaluate("() => { const app = document.querySelector('[data-testid=stApp]');"
                              " return app ? [app.getAttribute('data-test-script-state'),"
                              " app.getAttribute('data-test-connection-state')] : [null, null]; }")
        busy = state[0] != "notRunning" or state[1] != "CONNECTED" or page.locator(STATUS_WIDGET).count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the page was still busy after {timeout:.0f} s (script state {state})")


def problems(page) -> list[str]:
    """Exception boxes and error alerts on the page, as text (empty: all is well)."""
    found = [f"exception: {text.strip()[:600]}" for text in page.locator(EXCEPTION).all_inner_texts()]
    found += [f"error alert: {text.strip()[:600]}" for text in page.locator(ERROR_ALERT).all_inner_texts()]
    return found


def open_page(page, title: str, timeout: float = 90.0) -> None:
    """Click a page in the sidebar navigation (the session, and its state, carry over)."""
    link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title)
    if link.count() == 0:  # a long navigation is folded behind "View more"
        more = page.locator('[data-testid="stSidebarNavViewButton"]')
        if more.count():
            more.first.click()
    link.first.click()
    page.wait_for_function("() => document.querySelector('[data-testid=stApp]')"
                           "?.getAttribute('data-test-script-state') !== null")
    wait_idle(page, timeout)


def screenshot(page, name: str) -> Path:
    """A full-page PNG. Streamlit scrolls inside its main panel, not the document, so
    the viewport is grown to the panel's height for the shot and restored afterwards."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    viewport = page.viewport_size
    height = page.evaluate("() => Math.max(...['stMain', 'stSidebarContent', 'stAppViewContainer']"
                           ".map(id => document.querySelector(`[data-testid=${id}]`)?.scrollHeight || 0))")
    page.set_viewport_size({"width": viewport["width"], "height": min(max(height, viewport["height"]), 12000)})
    time.sleep(0.5)  # charts re-lay out to the new size
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(viewport)
    return path


# --------------------------------------------------------------------------- widgets, as a user works them

def _label(page, label: str):
    """A widget label reading exactly `label` ("Epochs" must not find "Warm-up epochs")."""
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    return page.locator('[data-testid="stWidgetLabel"]').filter(has_text=exact)


def widget(page, testid: str, label: str):
    """The widget of a kind (its data-testid) whose label reads `label`."""
    return page.locator(f'[data-testid="{testid}"]').filter(has=_label(page, label)).first


def fill_text(page, label: str, value: str) -> None:
    field = widget(page, "stTextInput", label).locator("input")
    field.fill(value)
    field.press("Enter")
    wait_idle(page)


def set_number(page, label: str, value, nth: int = 0) -> None:
    field = page.locator('[data-testid="stNumberInput"]').filter(has=_label(page, label)).nth(nth).locator("input")
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def choose(page, label: str, option: str) -> None:
    """Pick `option` (its text as shown) in the selectbox labelled `label`."""
    widget(page, "stSelectbox", label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def click(page, name: str) -> None:
    page.get_by_role("button", name=name).first.click()
    wait_idle(page)


def metric_value(page, label: str) -> str:
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]').filter(has_text=exact)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def add_choice(page, label: str, option_part: str) -> None:
    """Add the first option containing `option_part` to the multiselect labelled `label`."""
    widget(page, "stMultiSelect", label).click()
    page.get_by_role("option").filter(has_text=option_part).first.click()
    page.keyboard.press("Escape")
    wait_idle(page)


def multiselect_values(page, label: str) -> list[str]:
    tags = widget(page, "stMultiSelect", label).locator("[data-tag] span[title]")
    return [tags.nth(i).get_attribute("title") for i in range(tags.count())]
