from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import SECRET
from openai_server import OpenAIServer
from search_helpers import KeywordGrader, keyword_task, seed_responder

from graders._base import GradeResult, Task
from optimizer._catalog import Catalog
from optimizer._config import AgentSpec, MoAConfig
from optimizer._evaluate import Evaluation, RunResult, evaluate, redact_secrets, write_transcript
from optimizer.providers import ResponseCache, Router

CATALOG = Catalog.from_dict(
    {
        "default": {"input_per_million": 1.0, "output_per_million": 2.0, "context_window": 8192},
        "models": {
            "free": {"input_per_million": 0, "output_per_million": 0, "context_window": 8192}
        },
    }
)


def config(main_prompt: str = "Main {helper_response}", cycles: int = 1) -> MoAConfig:
    return MoAConfig(
        main=AgentSpec("main", "model-a", 0.0, main_prompt, max_tokens=64),
        cycles=cycles,
        layer_agents=(
            AgentSpec("one", "model-b", 0.7, "One {helper_response}", max_tokens=32),
            AgentSpec("two", "free", 0.7, "Two {helper_response}", max_tokens=32),
        ),
    )


def run(
    cfg: MoAConfig,
    router: Router,
    *,
    repeats: int,
    tasks: int = 1,
    seed: int = 0,
    seen: list[RunResult] | None = None,
) -> Evaluation:
    instances = [keyword_task(f"kw{i}") for i in range(tasks)]
    return asyncio.run(
        evaluate(
            cfg,
            instances,
            router,
            KeywordGrader(),
            repeats=repeats,
            seed=seed,
            on_result=None if seen is None else seen.append,
            catalog=CATALOG,
        )
    )


def test_repeats_use_distinct_samples_and_seeds_and_statistics_follow() -> None:
    with OpenAIServer(seed_responder) as server:
        router = Router(base_url=server.base_url)
        seen: list[RunResult] = []
        result = run(config(), router, repeats=4, seed=10, seen=seen)
        seeds = sorted({r.body["seed"] for r in server.chat_requests})
    assert seeds == [10, 11, 12, 13]
    assert len(server.chat_requests) == 4 * 3
    assert len(seen) == 4 and sorted(r.repeat for r in seen) == [0, 1, 2, 3]
    # even seeds earn alpha + beta (100 points), odd seeds alpha only (60), out of 120
    assert result.scores == (100.0, 60.0, 100.0, 60.0)
    assert result.max_score == 120.0
    assert result.mean == 80.0
    assert result.std == pytest.approx(23.094, abs=1e-3)
    assert (result.min, result.max) == (60.0, 100.0)
    assert result.max_rate == 0.0
    assert result.test_pass_rates == {"has_alpha": 1.0, "has_beta": 0.5, "has_gamma": 0.0}
    assert result.calls == 12 and result.cache_hits == 0
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert [r.seed for r in result.runs] == [10, 11, 12, 13]
    assert "has_gamma" in result.feedback and "has_beta" in result.feedback


def test_cost_uses_the_catalog_per_call() -> None:
    with OpenAIServer(seed_responder) as server:
        result = run(config(), Router(base_url=server.base_url), repeats=1)
    expected = 0.0
    for call in result.runs[0].moa.calls:
        expected += CATALOG.cost(call.model, call.prompt_tokens, call.completion_tokens)
    free = [c for c in result.runs[0].moa.calls if c.model == "free"]
    assert free and CATALOG.cost("free", 1000, 1000) == 0.0
    assert result.cost == pytest.approx(expected) and result.cost > 0


def test_perfect_answers_count_towards_the_max_rate() -> None:
    with OpenAIServer(seed_responder) as server:
        result = run(
            config("Say GAMMA {helper_response}"), Router(base_url=server.base_url), repeats=2
        )
    assert result.scores == (120.0, 60.0 + 20.0)
    assert result.max_rate == 0.5


def test_several_instances_are_averaged_per_repeat() -> None:
    with OpenAIServer(seed_responder) as server:
        result = run(config(), Router(base_url=server.base_url), repeats=2, tasks=3)
    assert result.tasks == ("kw0", "kw1", "kw2")
    assert len(result.runs) == 6
    assert [(r.repeat, r.task.name) for r in result.runs][:3] == [
        (0, "kw0"),
        (0, "kw1"),
        (0, "kw2"),
    ]
    assert result.scores == (100.0, 60.0)


def test_cached_rerun_gives_the_same_scores_for_free(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with OpenAIServer(seed_responder) as server:
        first = run(config(), Router(base_url=server.base_url, cache=cache), repeats=3)
        second = run(config(), Router(base_url=server.base_url, cache=cache), repeats=3)
        requests = len(server.chat_requests)
    assert requests == 9
    assert second.scores == first.scores
    assert second.cache_hits == second.calls == 9
    assert second.prompt_tokens == 0 and second.cost == 0.0


def test_a_failed_call_fails_the_evaluation() -> None:
    from openai_server import Fault

    from optimizer.providers import ProviderError

    with OpenAIServer(seed_responder) as server:
        server.inject(Fault(401, body='{"error": {"message": "nope"}}'))
        router = Router(base_url=server.base_url, max_retries=0)
        with pytest.raises(ProviderError):
            run(config(), router, repeats=1)


def test_transcript_has_a_line_per_call_and_grade_and_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOA_API_KEY", SECRET)

    def leaky(body: dict[str, object]) -> str:
        return f"alpha beta {SECRET}"

    with OpenAIServer(leaky, api_key=SECRET) as server:
        result = run(config(), Router(base_url=server.base_url), repeats=2)
    path = write_transcript(tmp_path / "trials" / "3.jsonl", result, extra={"trial": 3})
    text = path.read_text()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["type"] == "evaluation" and lines[0]["trial"] == 3
    assert lines[0]["scores"] == list(result.scores)
    assert lines[0]["config"]["main"]["system_prompt"] == "Main {helper_response}"
    kinds = [line["type"] for line in lines[1:]]
    assert kinds == (["call"] * 3 + ["grade"]) * 2
    call = lines[1]
    assert call["messages"][1]["content"] == "Write about kw0."
    assert "[redacted]" in call["response"]
    grade = lines[4]
    assert (
        grade["score"] == 100.0
        and grade["repeat"] == 0
        and grade["tests"][0]["name"] == "has_alpha"
    )
    assert redact_secrets(f"x{SECRET}y", {"SOME_TOKEN": SECRET}) == "x[redacted]y"


def test_rejects_no_repeats_and_no_tasks() -> None:
    router = Router(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="repeats"):
        run(config(), router, repeats=0)
    with pytest.raises(ValueError, match="task"):
        asyncio.run(evaluate(config(), [], router, KeywordGrader(), repeats=1, catalog=CATALOG))


def test_transcript_survives_hostile_text_and_redacts_encoded_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model (or code) that writes lone surrogates, NULs or an encoded key breaks nothing."""
    monkeypatch.setenv("MOA_API_KEY", SECRET)
    encoded = [SECRET[::-1], SECRET.encode().hex()]

    def hostile(body: dict[str, object]) -> str:
        return "alpha \ud800 \x00 \x1b[2J " + " ".join(encoded)

    with OpenAIServer(hostile) as server:
        result = run(config(), Router(base_url=server.base_url), repeats=1)
    path = write_transcript(tmp_path / "t.jsonl", result)
    text = path.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert "\ud800" in lines[-1]["answer"]  # kept, as a JSON escape in the file
    for form in [SECRET, *encoded]:
        assert form not in text


class BlockingGrader(KeywordGrader):
    """Holds every grading until ``release`` is set (a slow sandbox)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def grade(self, response: str, task: Task) -> GradeResult:
        with self._lock:
            self.waiting += 1
        assert self.release.wait(60), "never released"
        return super().grade(response, task)


def test_gradings_in_flight_leave_the_default_thread_pool_to_storage_writes() -> None:
    # asyncio's default pool has min(32, cores + 4) threads; more gradings than that at once
    # must not hold up the search's other thread work (storage writes, racing reads).
    grader = BlockingGrader()
    repeats = min(32, (os.cpu_count() or 1) + 4) + 2

    async def main() -> tuple[int, int, Evaluation]:
        with OpenAIServer(seed_responder) as server:
            router = Router(base_url=server.base_url)
            task = asyncio.create_task(
                evaluate(
                    config(), [keyword_task()], router, grader, repeats=repeats, catalog=CATALOG
                )
            )
            deadline = time.monotonic() + 20  # a generous bound, not a timing assert
            while grader.waiting < repeats and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            in_flight = grader.waiting
            # every grading is in flight and blocked: a storage write still gets a thread
            try:
                written = await asyncio.wait_for(asyncio.to_thread(lambda: 7), timeout=20)
            finally:
                grader.release.set()
            evaluation = await task
            await router.aclose()
            return in_flight, written, evaluation

    in_flight, written, evaluation = asyncio.run(main())
    assert in_flight == repeats
    assert written == 7
    assert len(evaluation.runs) == repeats
