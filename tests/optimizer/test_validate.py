"""validate's statistics and the self-consistency vote."""

from __future__ import annotations

import pytest

from optimizer._config import AgentSpec, MoAConfig
from optimizer._validate import (
    PLAIN_PROMPT,
    paired_interval,
    samples_for,
    single_call_config,
    vote,
    wilson_interval,
    workshop_on,
)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (5, 5, 0.5655, 1.0),  # all pass: the interval still says how little 5 problems show
        (0, 10, 0.0, 0.2775),
        (50, 100, 0.4038, 0.5962),
        (62, 124, 0.4133, 0.5867),
    ],
)
def test_wilson_interval_matches_the_textbook_values(
    successes: int, n: int, low: float, high: float
) -> None:
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-4)


def test_paired_bootstrap_interval() -> None:
    assert paired_interval([1.0] * 20) == (1.0, 1.0)
    low, high = paired_interval([1.0] * 10 + [0.0] * 10)
    assert 0.25 < low < 0.5 < high < 0.75
    assert paired_interval([1.0] * 10 + [0.0] * 10) == (low, high)  # seeded
    low, high = paired_interval([1.0, -1.0] * 30)
    assert low < 0 < high  # no difference: the interval holds 0


def test_vote_takes_the_function_most_samples_agree_on() -> None:
    a = "```python\ndef f(x):\n    return x + 1\n```"
    a_reformatted = "Sure!\n```python\ndef f(x):\n    # add one\n    return (x + 1)\n```"
    b = "```python\ndef f(x):\n    return x * 2\n```"
    assert vote([b, a, a_reformatted], "f") == 1  # two agree, formatting and comments aside
    assert vote([b, a], "f") == 0  # a tie goes to the earliest
    assert vote(["no code here", b], "f") == 1  # an answer without the function loses
    assert vote(["Answer: 4", " answer:  4 ", "5"], None) == 0  # plain answers: case, spaces


def test_single_call_is_the_main_model_alone_at_temperature_zero() -> None:
    found = MoAConfig(
        main=AgentSpec("main", "model-b", 0.9, "Tuned {helper_response}", 300),
        cycles=1,
        layer_agents=(AgentSpec("a", "model-a", 0.5, "Help {helper_response}"),),
    )
    single = single_call_config(found)
    assert (single.cycles, single.layer_agents) == (0, ())
    assert (single.main.model, single.main.temperature, single.main.max_tokens) == (
        "model-b",
        0.0,
        300,
    )
    assert single.main.system_prompt == PLAIN_PROMPT


def test_self_consistency_samples_match_the_found_configs_tokens() -> None:
    assert samples_for(400.0, 50.0) == 8
    assert samples_for(40.0, 50.0) == 1
    assert samples_for(10_000.0, 10.0) == 32
    assert samples_for(100.0, 0.0) == 1


def test_workshop_on_puts_every_agent_on_the_found_main_model() -> None:
    workshop = MoAConfig(
        main=AgentSpec("main", "llama3.1-8b", 0.7, "Implement it. {helper_response}"),
        cycles=1,
        layer_agents=(AgentSpec("assistant", "llama3.1-8b", 0.5, "Help. {helper_response}"),),
    )
    found = MoAConfig(
        main=AgentSpec("main", "model-b", 0.1, "Tuned {helper_response}", 300),
        cycles=1,
        layer_agents=(AgentSpec("a", "model-a", 0.5, "Draft {helper_response}", 99),),
    )
    moved = workshop_on(workshop, found)
    agents = [moved.main, *moved.layer_agents]
    assert [(a.model, a.max_tokens) for a in agents] == [("model-b", 300), ("model-b", 300)]
    assert [(a.temperature, a.system_prompt) for a in agents] == [
        (0.7, "Implement it. {helper_response}"),
        (0.5, "Help. {helper_response}"),
    ]
    assert moved.cycles == 1
