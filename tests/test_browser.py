"""End to end in a real browser: `interp app DIR` started as a user does (no terminal, a fresh HOME), headless
Chromium driven over its DevTools port, the patching heatmap found rendered (a plotly heatmap layer inside
Streamlit's chart element), and a hostile results directory name shown as text, never as HTML or Markdown.

Chromium comes from `make install` (Debian's `chromium` package); it must be on PATH."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from apptools import free_port, stop

ROOT = Path(__file__).resolve().parents[1]
TASK = {"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"}
HEATMAP_JS = ("document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot g.hm image').length")
CAPTIONS_JS = "Array.from(document.querySelectorAll('[data-testid=\"stCaptionContainer\"]'), e => e.textContent)"
HOSTILE = "<img src=x onerror=alert(1)> *b* _i_ $x$ :red[c] [l](e) `c` #h \\"


def wait_for(url: str, deadline: float) -> bytes:
    """GET `url` until it answers (or fail at `deadline`)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def started(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`cmd` in its own process group, with no terminal on any standard stream."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)


class DevTools:
    """The smallest Chrome DevTools Protocol client: send a command, wait for its answer."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws, self.next_id = websocket.create_connection(ws_url, timeout=30, suppress_origin=True), 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A real patching results directory of one tiny checkpoint."""
    from interp.analyses import run
    from interp.testing import tiny_checkpoint

    ckpt = tiny_checkpoint("llama", tmp_path / "run" / "step_000100")
    (tmp_path / "task.jsonl").write_text(json.dumps(TASK) + "\n")
    return run("patch", run=ckpt, task=tmp_path / "task.jsonl", out=tmp_path / "results" / HOSTILE, sites="resid_pre",
               device="cpu").path


@pytest.fixture
def served(results_dir: Path, tmp_path: Path) -> Iterator[str]:
    """`interp app RESULTS_DIR --port P` as a new user starts it (console script, empty HOME); its URL."""
    port = free_port()
    (tmp_path / "home").mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}, "HOME": str(tmp_path / "home")}
    server = started([str(Path(sys.executable).parent / "interp"), "app", str(results_dir), "--port", str(port)], env)
    try:
        assert wait_for(f"http://127.0.0.1:{port}/_stcore/health", time.monotonic() + 60) == b"ok"
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(server)


def test_the_heatmap_renders_in_a_real_browser(served: str, results_dir: Path, tmp_path: Path) -> None:
    binary = shutil.which("chromium")
    assert binary, "chromium is not on PATH: `make install` installs it (Debian's chromium package)"
    port = free_port()
    browser = started([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                       f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                       f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000", "about:blank"])
    try:
        targets = json.loads(wait_for(f"http://127.0.0.1:{port}/json/list", time.monotonic() + 30))
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Page.navigate", url=served)
        deadline, count = time.monotonic() + 60, 0
        while count == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            count = tools.evaluate(HEATMAP_JS) or 0
        title = tools.evaluate("document.querySelector('.js-plotly-plot .gtitle')?.textContent")
        errors = tools.evaluate("document.querySelectorAll('[data-testid=\"stException\"]').length")
        captions = tools.evaluate(CAPTIONS_JS)
        images = tools.evaluate("document.querySelectorAll('img[src=\"x\"]').length")
        shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "explorer.png").write_bytes(shot)
    finally:
        stop(browser)
    assert count >= 1, "no rendered plotly heatmap on the page within 60 s"
    assert title == "resid_pre: step 100" and errors == 0
    assert str(results_dir) in captions and images == 0, captions  # the name shown verbatim, not rendered
    assert shot.startswith(b"\x89PNG")
