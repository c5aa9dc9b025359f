"""`interp app` and the explorer against careless or hostile input (issue 17): the command starts for a new user
exactly as they run it (no first-run prompt, no browser unless asked), refuses bad arguments in one line, and the
explorer hides scratch copies, reports incomplete results directories, never renders user strings as HTML or Markdown,
and its "Run an analysis" page cannot make `interp zoo build` delete a directory it did not write."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import torch

from apps.views.kinds import RESULTS_FILES, find_results
from apptools import explorer, free_port, stop
from clitools import assert_unchanged, assert_user_error, run, tree_state
from interp.results import axes, write_results

ROOT = Path(__file__).resolve().parents[1]

INTERP = Path(sys.executable).parent / "interp"  # the console script a user types
HOSTILE = "<img src=x onerror=alert(1)>"
STARTUP_SECONDS = 90


def patch_results(out: Path, base: str = "base") -> Path:
    """A small patching results directory (the layout `interp patch` writes), with user strings in its summary."""
    g = torch.Generator().manual_seed(0)
    values = torch.rand(2, 2, 3, generator=g)
    return write_results(out, {"resid_pre": values, "resid_pre.raw": values * 2},
                         {"sites": ["resid_pre"], "checkpoints": [{"step": 1, "path": base}, {"step": 2, "path": base}],
                          "prompt_tokens": {"clean": ["a", HOSTILE, "c"]}, "metric": HOSTILE, "direction": "up",
                          "n_prompts": 1, "task": f"{HOSTILE}.jsonl"}, analysis="patch",
                         axes={name: axes("checkpoint", "layer", "pos", checkpoint=[1, HOSTILE],
                                          pos=["a", HOSTILE, "c"]) for name in ("resid_pre", "resid_pre.raw")},
                         tokenization={"bos": True, "padding": None}, inputs=[])


def health(port: int) -> bytes | None:
    """What /_stcore/health answers on the loopback, None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read()
    except OSError:
        return None


def new_user_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who never ran Streamlit: an empty HOME, no Streamlit settings, and a BROWSER that
    records what it was asked to open instead of opening it."""
    home = tmp_path / "home"
    home.mkdir()
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> {tmp_path / 'opened.txt'}\n")
    browser.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    return {**env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "BROWSER": str(browser)}


@pytest.fixture
def user_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`interp app RESULTS --port P [extra args]` started as a user does: console script, fresh HOME, stdin from
    /dev/null, no terminal; yields (process, port, its output file) and ends its process group afterwards."""
    port, log = free_port(), tmp_path / "app.log"
    results = patch_results(tmp_path / "results" / "patch")
    with open(log, "wb") as out, open(os.devnull, "rb") as stdin:
        process = subprocess.Popen([str(INTERP), "app", str(results.parent), "--port", str(port), *request.param],
                                   stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=new_user_env(tmp_path),
                                   cwd=tmp_path, start_new_session=True)
    try:
        yield process, port, log
    finally:
        stop(process)


def wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Fail with the app's output if it exits or does not answer /_stcore/health with ok in time."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while health(port) != b"ok":
        assert process.poll() is None, f"interp app exited {process.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no answer on port {port}: {log.read_text()[-2000:]}"
        time.sleep(0.3)


@pytest.mark.parametrize("user_app", [[]], indirect=True)
def test_interp_app_serves_for_a_new_user_without_a_terminal(user_app, tmp_path: Path) -> None:
    process, port, log = user_app
    wait_until_serving(process, port, log)
    time.sleep(1)
    assert process.poll() is None
    assert "Email" not in log.read_text() and "Welcome to Streamlit" not in log.read_text()
    assert not (tmp_path / "opened.txt").exists()  # no browser unless asked


@pytest.mark.parametrize("user_app", [["--open"]], indirect=True)
def test_interp_app_open_starts_the_browser_once_it_serves(user_app, tmp_path: Path) -> None:
    process, port, log = user_app
    wait_until_serving(process, port, log)
    deadline = time.monotonic() + 30
    while not (tmp_path / "opened.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (tmp_path / "opened.txt").read_text().split() == [f"http://127.0.0.1:{port}/"]


@pytest.mark.parametrize("case, needles", [
    ("missing", ["no such directory"]),
    ("file", ["is a file"]),
    ("no-results", ["holds no interp results"]),
    ("port-zero", ["--port is 0"]),
    ("port-high", ["--port is 70000"]),
    ("port-in-use", ["cannot listen on 127.0.0.1"]),
])
def test_interp_app_refuses_bad_arguments(case: str, needles: list[str], tmp_path: Path, capsys) -> None:
    results = patch_results(tmp_path / "results")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    args = {"missing": [tmp_path / "nowhere"], "file": [tmp_path / "notes.txt"], "no-results": [tmp_path / "empty"],
            "port-zero": [results, "--port", "0"], "port-high": [results, "--port", "70000"]}
    before = tree_state(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args["port-in-use"] = [results, "--port", taken.getsockname()[1]]
        assert_user_error(run(["app", *args[case]], capsys), *needles)
    assert_unchanged(tmp_path, before)


def test_scratch_and_old_copies_are_not_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = patch_results(tmp_path / "patch")
    for hidden in (tmp_path / ".patch.k3j2.tmp", tmp_path / ".patch.x9.old" / "previous"):
        hidden.mkdir(parents=True)
        for name in RESULTS_FILES:
            (hidden / name).write_bytes((done / name).read_bytes())
    assert find_results([tmp_path]) == [done]
    at = explorer(tmp_path, monkeypatch)
    assert at.sidebar.selectbox(key="results_dir").options == [str(done)]
    assert not at.error


@pytest.mark.parametrize("lost", RESULTS_FILES)
def test_an_incomplete_results_directory_is_an_error(lost: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    done = patch_results(tmp_path / "patch")
    (done / lost).unlink()
    at = explorer(tmp_path, monkeypatch)
    [error] = at.error
    assert "incomplete results directory" in error.value and lost in error.value.replace("\\", "")
    assert not at.get("plotly_chart")


def shown(markdown: str) -> str:
    """The text Markdown shows for `markdown` whose punctuation is backslash-escaped (CommonMark's rule)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def test_user_strings_are_never_rendered_as_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = patch_results(tmp_path / HOSTILE)
    other = patch_results(tmp_path / "other")
    at = explorer(tmp_path, monkeypatch, one)
    texts = [el.proto.body for el in at.caption]
    assert any(shown(t) == str(one) for t in texts), texts  # the path as the literal text it is
    assert not any(re.search(r"(?<!\\)<", t) for t in texts)  # every "<" escaped
    assert any(shown(t).startswith(f"metric {HOSTILE}") for t in texts)
    [fig] = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert "&lt;img src=x onerror=alert(1)&gt;" in fig["data"][0]["x"][1]
    at.radio(key="patch_mode").set_value("two models").run()
    at.selectbox(key="patch_other_dir").set_value(other).run()
    diff = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert HOSTILE not in diff["layout"]["title"]["text"] and "&lt;img" in diff["layout"]["title"]["text"]
    pages = [ROOT / "interp" / "analyses" / "widgets.py", *(ROOT / "interp" / "analyses").glob("*/page.py")]
    sources = "".join(p.read_text() for p in [*(ROOT / "apps").rglob("*.py"), *pages])
    assert "unsafe_allow_html" not in sources and "st.html" not in sources and "components.html" not in sources


def test_the_run_page_cannot_make_zoo_build_delete_a_project(zoo_quick: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    web = tmp_path / "web"
    (web / "src").mkdir(parents=True)
    (web / "manifest.json").write_text("{}")
    (web / "src" / "keep.txt").write_text("x")
    before = tree_state(tmp_path)
    at = explorer(tmp_path, monkeypatch)
    at.sidebar.radio(key="mode").set_value("Run an analysis").run()
    at.selectbox(key="run_kind").set_value("patch").run()
    at.text_input(key="run_args_patch").input(f"zoo build --quick --out {web}").run()
    at.button(key="run_go").click().run()
    assert not at.exception
    [error] = at.error
    assert shown(error.value).startswith(f"error: --out {web} is not empty and has no .interp-zoo.json")
    assert_unchanged(tmp_path, before)
