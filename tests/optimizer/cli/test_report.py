"""``moa-opt report``: figures of a real search, rendered in headless Chromium."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from moa_cli import ROOT, moa_opt
from openai_server import OpenAIServer
from optuna.trial import TrialState
from own_task import write_task
from search_helpers import asks_mutator, asks_rules, seed_responder

from optimizer._storage import open_storage

SMOKE = ROOT / "search_spaces" / "smoke.yaml"

FIGURES = [
    "score.png",
    "repeats.png",
    "importances.png",
    "pass_rates.png",
    "cost.png",
    "latency.png",
    "lineage.png",
    "spend.png",
]
ANSWERS = (  # slugify answers that pass 5, 3 and 2 of the README task's 5 tests
    'import re\ndef slugify(text):\n    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")',
    'import re\ndef slugify(text):\n    return re.sub(r"[^a-z0-9]+", "-", text.lower())',
    'def slugify(text):\n    return text.lower().replace(" ", "-")',
)
SPACE = {
    "task": "slugify.yaml",
    "repeats": 2,
    "cycles": {"low": 0, "high": 1},
    "layer_agents": {
        "count": {"low": 1, "high": 2},
        "models": ["model-a", "model-b"],
        "temperature": {"low": 0.0, "high": 1.0, "step": 0.1},
        "prompts": ["Write the requested Python function. {helper_response}"],
    },
    "main": {
        "models": ["model-a", "model-b"],
        "temperature": {"low": 0.0, "high": 1.0, "step": 0.1},
        "prompts": ["Give one correct Python function.\nThen stop. {helper_response}"],
    },
    "mutation": {"every": 3, "variants": 2},
}


def varied_responder(body: dict[str, Any]) -> str:
    """Answers better at low temperature and with model-a; rewrites prompts when asked."""
    if asks_mutator(body):
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        digest = hashlib.sha256(f"{user}|{body.get('seed')}".encode()).hexdigest()[:6]
        if asks_rules(body):
            return f"- Rule {digest}: check the function against each example."
        return f"Prompt {digest}: write the function,\nthen check it. {{helper_response}}"
    quality = float(body.get("temperature") or 0.0) + (0.3 if body["model"] == "model-b" else 0)
    quality += (int(body.get("seed") or 0) % 3) * 0.1
    answer = ANSWERS[0 if quality < 0.5 else 1 if quality < 0.9 else 2]
    return f"```python\n{answer}\n```"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search on the README's slugify task, with varied scores and mutations."""
    folder = write_task(tmp_path_factory.mktemp("report"))
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    with OpenAIServer(varied_responder, models=("model-a", "model-b")) as server:
        done = moa_opt(
            "search", "--space", "space.yaml", "--study", "slug", "--trials", "12",
            "--confirm-repeats", "3", "--confirm-top", "2", "--base-url", server.base_url,
            cwd=folder,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture
def served(searched: Path) -> Iterator[str]:
    """The search folder over HTTP on 127.0.0.1, as a browser would load the report."""
    handler = functools.partial(_QuietHandler, directory=str(searched))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# Loads the report in a frame of the same origin and writes, once every image has settled,
# how many images it has and which failed to load.
_CHECK_PAGE = """<!DOCTYPE html><html><body><iframe src="index.html" width="1200" height="900"
onload="var images = Array.from(this.contentDocument.images);
document.getElementById('out').textContent = 'IMAGES ' + images.length + ' BROKEN ' +
images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src).join(',') + ' END';">
</iframe><pre id="out">not loaded</pre></body></html>
"""


def headless(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_renders_in_chromium_with_every_image(
    searched: Path, served: str, chromium: str
) -> None:
    done = moa_opt("report", "--study", "slug", "-o", "report", cwd=searched)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Report: report/index.html (8 figures)\n"
    page = (searched / "report" / "index.html").read_text()
    for figure in FIGURES:
        assert f"src='{figure}'" in page
        assert (searched / "report" / figure).read_bytes().startswith(b"\x89PNG")
    (searched / "report" / "check.html").write_text(_CHECK_PAGE)
    dom = headless(
        chromium, "--virtual-time-budget=20000", "--dump-dom", f"{served}/report/check.html"
    )
    found = re.search(r"IMAGES (\d+) BROKEN (.*?) END", dom.stdout)
    assert found is not None, (dom.stdout[-2000:], dom.stderr[-2000:])
    assert found.group(1) == str(len(FIGURES)) and found.group(2) == ""
    shot = searched / "report" / "screenshot.png"
    headless(
        chromium, f"--screenshot={shot}", "--window-size=1280,6000", f"{served}/report/index.html"
    )
    assert shot.read_bytes().startswith(b"\x89PNG")
    keep = Path(__file__).resolve().parents[3] / "runs" / "report-screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)  # to look at by eye


def test_report_shows_the_best_config_its_confirmation_and_lineage(searched: Path) -> None:
    done = moa_opt("report", "--study", "slug", "-o", "r2", cwd=searched)
    assert done.returncode == 0, done.stderr
    page = (searched / "r2" / "index.html").read_text()
    best = yaml.safe_load((searched / "runs" / "slug" / "best.yaml").read_text())
    assert "12 completed trials" in page
    assert "Confirmed on 3 fresh runs after it was chosen" in page and "<th>95% LCB</th>" in page
    stats = json.loads((searched / "runs" / "slug" / "best.stats.json").read_text())
    # the configs with enough runs, best first: the exported one heads the table
    assert page.count("<tr><td>") >= 1
    assert f"<tr><td>{stats['trials'][0]}</td><td>{stats['search']['n']}</td>" in page
    assert f"model: {best['main']['model']}" in page
    assert "system_prompt: |-" in page  # the multi-line prompt as a literal block
    assert "moa-opt export --study slug -o best.json" in page
    assert "generation 0, seed" in page


def test_report_on_a_study_that_is_still_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = str(ROOT)
    with OpenAIServer(seed_responder, latency=0.3) as server:
        search = subprocess.Popen(
            [sys.executable, "-m", "optimizer", "search", "--space", str(SMOKE), "--study",
             "live", "--trials", "200", "--workers", "2", "--base-url", server.base_url],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while completed(tmp_path, "live") < 3:
                assert search.poll() is None, search.communicate()
                assert time.monotonic() < deadline, "no trial completed"
                time.sleep(0.2)
            done = moa_opt("report", "--study", "live", cwd=tmp_path)
        finally:
            search.send_signal(signal.SIGTERM)
            search.communicate(timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"Report: runs/live/report/index\.html \(8 figures; \d+ trials still running\)\n",
        done.stdout,
    )
    page = (tmp_path / "runs" / "live" / "report" / "index.html").read_text()
    assert "trials were still running when this report was written" in page
    assert "The confirm stage has not run yet" in page


def completed(folder: Path, name: str) -> int:
    journal = folder / "runs" / name / "journal.log"
    if not journal.exists():
        return 0
    try:
        study = optuna.load_study(
            study_name=name, storage=open_storage(name, runs_dir=folder / "runs")
        )
    except KeyError:  # not created yet
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def test_report_bad_input_is_one_line(searched: Path) -> None:
    (searched / "a-file").write_text("")
    done = moa_opt("report", "--study", "slug", "-o", "a-file", cwd=searched)
    assert (done.returncode, done.stderr) == (
        2,
        "moa-opt: error: -o: cannot write a-file: File exists\n",
    )
    done = moa_opt("report", "--study", "nope", cwd=searched)
    assert done.returncode == 2 and done.stderr.startswith(
        "moa-opt: error: --study: no study named"
    )
