"""End to end in a real browser: `interp app DIR` (streamlit) on loopback, headless Chromium driven over its
DevTools port, and the patching heatmap found rendered (a plotly heatmap layer inside Streamlit's chart element)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASK = {"clean": "the cat sees the ball", "corrupted": "the dog sees the ball", "answer": " the", "wrong": " a"}
HEATMAP_JS = ("document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .js-plotly-plot g.hm image').length")


def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (the test set-up); skip when that cannot be done."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and cannot be installed here (needs apt-get as root): "
                    "run `apt-get install -y chromium` to enable the browser test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], env=env, check=True,
                       capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"Chromium is not installed and `apt-get install -y chromium` failed ({err}): no browser test")
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("`apt-get install chromium` ran but no chromium binary is on PATH")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def started(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process this test started (and its own children), by its process group id."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


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
    from interp.testing import tiny_checkpoint
    from patching.sweep import Settings, run_sweep

    ckpt = tiny_checkpoint("llama", tmp_path / "run" / "step_000100")
    (tmp_path / "task.jsonl").write_text(json.dumps(TASK) + "\n")
    return run_sweep(ckpt, tmp_path / "task.jsonl", tmp_path / "results" / "patch", Settings(sites=("resid_pre",)))


@pytest.fixture
def served(results_dir: Path) -> Iterator[str]:
    """`interp app RESULTS_DIR` served on a free loopback port; its URL."""
    port = free_port()
    server = started([sys.executable, "-m", "interp.cli", "app", str(results_dir), "--headless", "--port", str(port)])
    try:
        assert wait_for(f"http://127.0.0.1:{port}/_stcore/health", time.monotonic() + 60) == b"ok"
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(server)


def test_the_heatmap_renders_in_a_real_browser(served: str, tmp_path: Path) -> None:
    binary = chromium()
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
        shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "explorer.png").write_bytes(shot)
    finally:
        stop(browser)
    assert count >= 1, "no rendered plotly heatmap on the page within 60 s"
    assert title == "resid_pre: step 100" and errors == 0
    assert shot.startswith(b"\x89PNG")
