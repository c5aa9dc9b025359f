"""Helpers the explorer tests share: the explorer under AppTest, a free loopback port, and stopping a server."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

EXPLORER = str(importlib.util.find_spec("apps.explorer").origin)  # the installed explorer, as `interp app` serves it


def explorer(root: Path, monkeypatch: pytest.MonkeyPatch, path: Path | None = None) -> AppTest:
    """The explorer over `root`, showing `path` when given, after checking it ran without an exception."""
    monkeypatch.setenv("INTERP_APP_DIRS", str(root))
    at = AppTest.from_file(EXPLORER, default_timeout=120).run()
    if path is not None:
        at.sidebar.selectbox(key="results_dir").set_value(path).run()
    assert not at.exception, at.exception
    return at


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process a test started in its own session (and its children), by its process group id."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
