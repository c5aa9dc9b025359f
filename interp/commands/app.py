"""`interp app [DIR ...]`: serve the Streamlit explorer over results directories.

Streamlit always runs headless (a first run would otherwise stop at its "Welcome to Streamlit! Email:" prompt, and exit
without serving when standard input is not a terminal); `--open` opens the browser once the server answers.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path
from typing import Optional

import typer

from interp.cli import app as cli
from interp.errors import InterpError
from interp.options import check_range

STARTUP_SECONDS = 120


def explorer() -> Path:
    """The explorer script inside the installed `apps` package (streamlit runs a script by path, not a module)."""
    try:
        spec = importlib.util.find_spec("apps.explorer")
    except ModuleNotFoundError:  # no `apps` package at all
        spec = None
    if spec is None or spec.origin is None:
        raise InterpError("the explorer (the `apps` package) is not installed beside interp",
                          fix="reinstall interp (`pip install .`, or `make install` in a checkout)")
    return Path(spec.origin)


def check_dirs(dirs: list[Path]) -> None:
    """Refuse arguments that are missing, not directories, or hold no results directory at or below them."""
    from apps.views.kinds import find_results

    fix = "pass results directories (the --out of an analysis) or directories holding them"
    for d in dirs:
        if not d.exists():
            raise InterpError(f"no such directory: {d}", fix=fix)
        if not d.is_dir():
            raise InterpError(f"{d} is a file, not a results directory", fix=fix)
        if not find_results([d]):
            raise InterpError(f"{d} holds no interp results (no results.safetensors or summary.json at or below it)",
                              fix=fix)


def check_port(address: str, port: int) -> None:
    """Refuse a port outside 1-65535 or one already in use on `address` (Streamlit would exit with a traceback)."""
    check_range("--port", port, 1, 65535)
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError as err:
            raise InterpError(f"cannot listen on {address}:{port} ({err.strerror})",
                              fix="pass --port with a free port (or stop the other server)") from err


def streamlit_command(dirs: list[Path], port: int, address: str) -> list[str]:
    """The `streamlit run` command line that serves the explorer on these directories, headless."""
    script = explorer()
    check_dirs(dirs)
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--", *(str(d.resolve()) for d in dirs)]


def local_url(address: str, port: int) -> str:
    """The URL a browser on this machine opens (a wildcard address is reached through the loopback)."""
    host = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def answers(url: str) -> bool:
    """Whether the Streamlit server at `url` reports itself healthy."""
    try:
        with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


def open_when_ready(server: subprocess.Popen[bytes], url: str) -> None:
    """Open `url` in the user's browser once the server answers (not if it exits or never answers)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while server.poll() is None and time.monotonic() < deadline:
        if answers(url):
            webbrowser.open(url)
            return
        time.sleep(0.3)


@cli.command("app")
def app_command(
    dirs: Optional[list[Path]] = typer.Argument(None, help="Results directories, or directories holding them, to "
                                                           "browse (default: data/zoo and the working directory)."),
    port: int = typer.Option(8501, help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 to share on the network)."),
    open_browser: bool = typer.Option(False, "--open", "--browser", help="Open the explorer in a browser once it "
                                                                        "is serving."),
) -> None:
    """Browse every results directory interp writes (one page per registered analysis) in a browser."""
    command = streamlit_command(list(dirs or []), port, address)
    check_port(address, port)
    server = subprocess.Popen(command)
    try:
        if open_browser:
            open_when_ready(server, local_url(address, port))
        code = server.wait()
    except KeyboardInterrupt:
        server.terminate()
        code = server.wait()
    raise typer.Exit(code)
