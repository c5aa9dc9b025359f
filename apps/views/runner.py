"""Run page: start any registered analysis as an `interp` command in a subprocess (its example command line, from
the registry, to edit), showing its progress bars live and its error as a message."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

import streamlit as st

from interp.analyses import analyses
from interp.analyses.widgets import literal

_PERCENT = re.compile(r"(?:^|\s)([^\r\n:]*?):?\s*(\d{1,3})%\|")


def progress_of(line: str) -> tuple[str, int] | None:
    """(description, percent) from a tqdm line such as 'patching checkpoints:  40%|####  | 2/5', else None."""
    match = _PERCENT.search(line)
    return (match.group(1).strip(), int(match.group(2))) if match else None


def tqdm_lines(stream: Iterable[str]) -> Iterable[str]:
    """Lines of a stream where tqdm's carriage returns also end a line."""
    buffer = ""
    for chunk in stream:
        buffer += chunk
        *done, buffer = re.split(r"[\r\n]", buffer)
        yield from (line for line in done if line.strip())
    if buffer.strip():
        yield buffer


def run_command(args: list[str], on_progress: Callable[[str, int], None]) -> tuple[int, list[str]]:
    """Run `interp ARGS` (this Python), report tqdm progress, return the exit status and the output lines."""
    process = subprocess.Popen([sys.executable, "-m", "interp.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert process.stdout is not None
    output = []
    for line in tqdm_lines(iter(lambda: process.stdout.read(256), "")):
        output.append(line)
        found = progress_of(line)
        if found:
            on_progress(*found)
    return process.wait(), output


def out_dir(args: list[str]) -> Path | None:
    """The --out directory of a command line, if it has one."""
    return Path(args[args.index("--out") + 1]) if "--out" in args[:-1] else None


def render() -> None:
    """Pick an analysis, edit its command line, run it with a progress bar; the results appear under Browse."""
    st.header("Run an analysis")
    examples = {" ".join(unit.command): unit.example for unit in analyses().values()}
    kind = st.selectbox("analysis", list(examples), key="run_kind")
    line = st.text_input("interp ...", examples[kind], key=f"run_args_{kind}")
    st.caption("Arguments as on the command line; see `interp <command> --help`.")
    if not st.button("Run", key="run_go"):
        return
    args = shlex.split(line)
    bar = st.progress(0, text="starting")
    code, output = run_command(args, lambda desc, pct: bar.progress(min(pct, 100), text=f"{desc} {pct}%"))
    if code == 0:
        bar.progress(100, text="done")
        target = out_dir(args)
        if target is not None:
            st.session_state.setdefault("ran", []).append(target.resolve())
        st.success(literal(f"finished: {target or 'done'} (open it under Browse results)"))
    else:
        errors = [l for l in output if l.startswith("error:")]
        st.error(literal(errors[-1] if errors else "\n".join(output[-5:]) or f"exit status {code}"))
    with st.expander("output"):
        st.code("\n".join(output[-200:]) or "(none)")
