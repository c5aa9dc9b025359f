"""`interp app [DIR ...]`: serve the Streamlit explorer over results directories, zoos or runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from interp.cli import app as cli
from interp.errors import InterpError

EXPLORER = Path(__file__).resolve().parents[2] / "apps" / "explorer.py"


def streamlit_command(dirs: list[Path], port: int, address: str, headless: bool) -> list[str]:
    """The `streamlit run` command line that serves the explorer on these directories."""
    if not EXPLORER.is_file():
        raise InterpError(f"the explorer is not at {EXPLORER}", fix="run interp from a source checkout (pip install -e .)")
    missing = [str(d) for d in dirs if not d.exists()]
    if missing:
        raise InterpError(f"no such directory: {', '.join(missing)}",
                          fix="pass results directories (--out of an analysis), a run or a zoo")
    return [sys.executable, "-m", "streamlit", "run", str(EXPLORER), "--server.port", str(port),
            "--server.address", address, "--server.headless", str(headless).lower(),
            "--browser.gatherUsageStats", "false", "--", *(str(d.resolve()) for d in dirs)]


@cli.command("app")
def app_command(
    dirs: Optional[list[Path]] = typer.Argument(None, help="Results directories, runs or zoos to browse (default: "
                                                           "data/zoo and the working directory)."),
    port: int = typer.Option(8501, help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 to share on the network)."),
    headless: bool = typer.Option(False, help="Do not open a browser."),
) -> None:
    """Browse every results directory interp writes (patching, directions, TuCo, induction, gradients) in a browser."""
    raise typer.Exit(subprocess.call(streamlit_command(list(dirs or []), port, address, headless)))
