from __future__ import annotations

import asyncio
import json

from openai_server import OpenAIServer
from rich.console import Console
from search_helpers import KeywordGrader, keyword_task, seed_responder

from optimizer._catalog import Catalog
from optimizer._config import AgentSpec, MoAConfig
from optimizer._evaluate import RunResult
from optimizer._reproduce import (
    Reproduction,
    context_warnings,
    reproduce,
    reproduction_json,
    results_table,
)
from optimizer.providers import Router


def config(main_prompt: str) -> MoAConfig:
    return MoAConfig(
        main=AgentSpec("main", "model-a", 0.0, main_prompt, max_tokens=64),
        cycles=1,
        layer_agents=(AgentSpec("one", "model-b", 0.0, "One {helper_response}", max_tokens=32),),
    )


def run_two(repeats: int) -> tuple[list[Reproduction], list[tuple[str, RunResult]]]:
    seen: list[tuple[str, RunResult]] = []
    configs = [
        ("plain.yaml", config("Main {helper_response}")),
        ("gamma.yaml", config("GAMMA {helper_response}")),
    ]
    with OpenAIServer(seed_responder) as server:
        router = Router(base_url=server.base_url)

        async def go() -> list[Reproduction]:
            try:
                return await reproduce(
                    configs,
                    [keyword_task()],
                    router,
                    KeywordGrader(),
                    repeats=repeats,
                    on_result=lambda name, result: seen.append((name, result)),
                )
            finally:
                await router.aclose()

        return asyncio.run(go()), seen


def test_each_config_runs_every_repeat_with_the_same_seeds() -> None:
    results, seen = run_two(repeats=3)
    assert [r.name for r in results] == ["plain.yaml", "gamma.yaml"]
    assert results[0].evaluation.scores == (100.0, 60.0, 100.0)
    assert results[1].evaluation.scores == (120.0, 80.0, 120.0)
    assert [r.seed for r in results[1].evaluation.runs] == [0, 1, 2]
    assert [name for name, _ in seen] == ["plain.yaml"] * 3 + ["gamma.yaml"] * 3


def test_table_shows_configs_side_by_side_with_every_statistic() -> None:
    results, _ = run_two(repeats=3)
    console = Console(width=200, record=True)
    console.print(results_table(results))
    text = console.export_text()
    cells = {
        parts[1].strip(): [c.strip() for c in parts[2:4]]
        for parts in (line.split("│") for line in text.splitlines() if line.count("│") == 4)
    }
    assert "plain.yaml" in text and "gamma.yaml" in text
    assert cells["scores"] == ["100 60 100", "120 80 120"]
    assert cells["mean"] == ["86.7 / 120", "106.7 / 120"]
    assert cells["std"] == ["23.09", "23.09"]
    assert cells["min"] == ["60", "80"] and cells["max"] == ["100", "120"]
    assert cells["max-score rate"] == ["0/3 (0%)", "2/3 (67%)"]
    assert cells["has_alpha"] == ["100%", "100%"]
    assert cells["has_beta"] == ["67%", "67%"]
    assert cells["has_gamma"] == ["0%", "100%"]
    assert cells["calls (cached)"] == ["6 (0)", "6 (0)"]
    for label in ("tokens (prompt+compl.)", "est. cost", "wall time"):
        assert label in cells


def test_json_lists_every_run() -> None:
    results, _ = run_two(repeats=2)
    data = json.loads(json.dumps(reproduction_json(results)))
    plain = data["configs"][0]
    assert plain["name"] == "plain.yaml" and plain["scores"] == [100.0, 60.0]
    assert plain["max_rate"] == 0.0 and plain["test_pass_rates"]["has_beta"] == 0.5
    assert [r["score"] for r in plain["runs"]] == [100.0, 60.0]
    assert plain["config"]["main"]["system_prompt"] == "Main {helper_response}"


def test_context_warnings_name_the_config() -> None:
    catalog = Catalog.from_dict(
        {"default": {"input_per_million": 0, "output_per_million": 0, "context_window": 50}}
    )
    warnings = context_warnings(
        [("big.yaml", config("Main {helper_response}"))], [keyword_task()], catalog
    )
    assert len(warnings) == 1 and warnings[0].startswith("big.yaml: ")
