from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from moa_cli import ROOT
from openai_server import OpenAIServer
from search_helpers import SEEDS, distinct_words, mutator_responder, pool_search

from optimizer._catalog import Catalog, ModelInfo
from optimizer._config import HELPER_RESPONSE
from optimizer._prompts import (
    MAX_PROMPT_CHARS,
    REJECTED_PREFIX,
    RULES_HEADING,
    PromptGeneration,
    PromptPool,
    PromptVariant,
    clean_prompt,
    mutation_round,
    parse_rules,
    prompt_problem,
    with_rules,
)
from optimizer._storage import open_storage
from optimizer._study import study_spent
from optimizer.providers import Router

optuna.logging.set_verbosity(optuna.logging.WARNING)
TESTS = Path(__file__).resolve().parents[1]


def make_study(tmp_path: Path, name: str = "pool") -> optuna.Study:
    storage = open_storage(name, str(tmp_path / "journal.log"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            multivariate=True, group=True, n_startup_trials=4, seed=1
        )
    return optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True, sampler=sampler
    )


def user_messages(server: OpenAIServer) -> list[str]:
    return [
        next(m["content"] for m in r.body["messages"] if m["role"] == "user")
        for r in server.chat_requests
    ]


# -- clean_prompt ------------------------------------------------------------------------


def test_clean_prompt_keeps_or_appends_the_placeholder() -> None:
    assert clean_prompt("Be brief. {helper_response}") == "Be brief. {helper_response}"
    assert clean_prompt("Be brief.") == "Be brief.\n\n{helper_response}"
    assert clean_prompt("```\nBe brief.\n```") == "Be brief.\n\n{helper_response}"
    assert clean_prompt('"Quoted {helper_response}"') == "Quoted {helper_response}"
    assert clean_prompt("<think>hmm</think>\nNEW PROMPT: Do it.") == "Do it.\n\n{helper_response}"
    assert clean_prompt("   ") is None
    assert clean_prompt("{helper_response}") is None


def test_clean_prompt_keeps_only_the_marked_prompt_of_a_chatty_answer() -> None:
    # answers the embedded 1.5B mutator gave in a 40-trial study
    unclosed = (
        "Certainly! Here's the updated system prompt with additional checks:\n\n---\n\n"
        "PROMPT:\n<<<\nYou are a helpful assistant. Please implement it. {helper_response}"
    )
    assert (
        clean_prompt(unclosed)
        == "You are a helpful assistant. Please implement it. {helper_response}"
    )
    closed = (
        "Certainly! Below is the improved version of the prompt.\n\n### Improved Prompt\n\n"
        "**PROMPT**:\n<<\nCheck the drafts against the task.\n{helper_response}\n>>\n\n"
        "This prompt will help the assistant."
    )
    assert clean_prompt(closed) == "Check the drafts against the task.\n{helper_response}"
    labelled = "Sure! Here is the new prompt:\n\nNew prompt:\nList the edge cases first."
    assert clean_prompt(labelled) == "List the edge cases first.\n\n{helper_response}"


def test_an_answer_that_starts_with_chatter_is_not_a_prompt() -> None:
    for chatter in ("Certainly! Write the function.", "Here's a better prompt: be brief."):
        text = clean_prompt(chatter)
        assert text is not None and prompt_problem(text) == (
            "a reply to the mutator (it starts with chatter), not an instruction"
        )
    assert prompt_problem("Here, the edge cases matter. {helper_response}") is None


def test_clean_prompt_caps_the_length_and_keeps_the_placeholder() -> None:
    long = "word " * 2000 + "{helper_response}"
    text = clean_prompt(long)
    assert text is not None and len(text) <= MAX_PROMPT_CHARS
    assert text.endswith(HELPER_RESPONSE) and text.count(HELPER_RESPONSE) == 1
    cut = clean_prompt("x" * 95 + " {helper_response} tail", max_chars=100)
    assert cut is not None and len(cut) <= 100 and cut.endswith(HELPER_RESPONSE)
    assert "{help" not in cut.removesuffix(HELPER_RESPONSE)


# -- the pool in the study ---------------------------------------------------------------


def test_seeds_are_generation_zero_and_survive_reopening(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds(SEEDS)
    assert pool.roles == ("layer", "main")
    main = pool.latest("main")
    assert main.number == 0 and main.ids == ("main.g0.0", "main.g0.1")
    assert pool.variant("main.g0.1") == PromptVariant(
        "main.g0.1", SEEDS["main"][1], (), "seed", 0, "main"
    )
    again = PromptPool(make_study(tmp_path))
    again.ensure_seeds({"main": ["different seeds are ignored on resume {helper_response}"]})
    assert again.latest("main") == main
    assert [k for k in study.user_attrs if k.startswith("prompt_pool:")] == [
        "prompt_pool:main:g0",
        "prompt_pool:layer:g0",
    ]


def test_suggest_uses_per_generation_parameter_names(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds(SEEDS)
    trial = study.ask()
    assert pool.suggest(trial, "main") in SEEDS["main"]
    assert pool.suggest(trial, "layer", 1) == SEEDS["layer"][0]
    assert set(trial.params) == {"main_prompt_g0", "layer_1_prompt_g0"}
    new = PromptVariant("main.g1.0", "New {helper_response}", ("main.g0.0",), "rephrase", 1, "main")
    pool.publish(PromptGeneration("main", 1, ("main.g0.1", "main.g1.0"), (new,)))
    trial = study.ask()
    assert pool.suggest_variant(trial, "main").id in {"main.g0.1", "main.g1.0"}
    assert "main_prompt_g1" in trial.params


def test_publish_never_overwrites_a_generation(tmp_path: Path) -> None:
    pool = PromptPool(make_study(tmp_path))
    pool.ensure_seeds(SEEDS)
    a = PromptVariant("main.g1.0", "A {helper_response}", (), "rephrase", 1, "main")
    b = PromptVariant("main.g1.0", "B {helper_response}", (), "rephrase", 1, "main")
    first = pool.publish(PromptGeneration("main", 1, ("main.g1.0",), (a,)))
    second = pool.publish(PromptGeneration("main", 1, ("main.g1.0",), (b,)))
    assert first == second and pool.variant("main.g1.0").text.startswith("A")


def test_a_second_worker_loses_the_round_and_sees_the_winner(tmp_path: Path) -> None:
    pool_a = PromptPool(make_study(tmp_path))
    pool_a.ensure_seeds(SEEDS)
    pool_b = PromptPool(make_study(tmp_path))
    a = PromptVariant("main.g1.0", "A {helper_response}", (), "rephrase", 1, "main")
    b = PromptVariant("main.g1.0", "B {helper_response}", (), "rephrase", 1, "main")
    assert pool_a.commit_round(1, [PromptGeneration("main", 1, ("main.g1.0",), (a,))], {})
    assert not pool_b.commit_round(1, [PromptGeneration("main", 1, ("main.g1.0",), (b,))], {})
    assert pool_b.rounds == 1 and pool_b.variant("main.g1.0").text.startswith("A")


def test_params_for_selects_a_text_for_an_enqueued_trial(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds(SEEDS)
    new = PromptVariant("main.g1.0", "New {helper_response}", (), "rephrase", 1, "main")
    pool.publish(PromptGeneration("main", 1, ("main.g1.0",), (new,)))
    params = pool.params_for("main", 0, SEEDS["main"][1])
    assert params == {"main_prompt_g0": "main.g0.1"}  # only generation 0 holds it
    assert pool.params_for("main", 0, "unknown") == {"main_prompt_g1": "main.g1.0"}
    study.enqueue_trial(params)
    trial = study.ask()
    assert pool.suggest(trial, "main") == SEEDS["main"][1]


# -- mutation rounds ---------------------------------------------------------------------


def test_a_round_uses_every_operator_and_records_parents(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    # priced by the id the space names; the router sends the endpoint "mutator-model"
    prices = Catalog(
        models={"together/mutator-model": ModelInfo(2.0, 10.0, 8192)},
        default=ModelInfo(0.0, 0.0, 8192),
    )
    pool = PromptPool(study)
    pool.ensure_seeds(SEEDS)
    with OpenAIServer(mutator_responder) as server:
        router = Router(base_url=server.base_url)

        async def go() -> list[PromptGeneration]:
            try:
                await pool_search(study, pool, router, trials=6, every=100)
                return await mutation_round(
                    study,
                    pool,
                    router,
                    "together/mutator-model",
                    4,
                    task="Write calculate_user_metrics.",
                    catalog=prices,
                )
            finally:
                await router.aclose()

        made = asyncio.run(go())
        asks = user_messages(server)
        bodies = [r.body for r in server.chat_requests]
    assert {g.role for g in made} == {"main", "layer"}
    assert pool.rounds == 1
    main = pool.latest("main")
    assert main.number == 1
    new = main.variants
    assert [v.operator for v in new] == ["reflect", "specialise", "crossover", "rephrase"]
    assert all(v.text.count(HELPER_RESPONSE) == 1 for v in new)
    assert set(new[2].parents) == {"main.g0.0", "main.g0.1"}
    assert all(len(v.parents) == 1 for v in new if v.operator != "crossover")
    assert set(main.ids[:2]) == {"main.g0.0", "main.g0.1"}  # elites first, then new ones
    assert main.ids[2:] == tuple(v.id for v in new)
    # the layer role has a single seed: no crossover possible, so it falls back to rephrase
    assert [v.operator for v in pool.latest("layer").variants] == [
        "reflect",
        "specialise",
        "rephrase",
        "rephrase",
    ]
    # reflect and specialise add the mutator's rules to their parent; the others are whole
    for variant in new[:2]:
        [parent] = variant.parents
        head, rules = variant.text.split(RULES_HEADING + "\n")
        assert head.strip() == pool.variant(parent).text.replace(HELPER_RESPONSE, "").strip()
        assert rules.startswith("- Rule ") and rules.count("\n- ") == 1
        assert rules.endswith(HELPER_RESPONSE)
    assert all(RULES_HEADING not in v.text for v in new[2:])
    systems = [next(m["content"] for m in b["messages"] if m["role"] == "system") for b in bodies]
    assert sum("write rules" in text for text in systems) == 4  # reflect, specialise x 2 roles
    reflect = next(a for a in asks if "BEST recent trial" in a)
    assert "WORST recent trial" in reflect and "check empty input" in reflect and "/120" in reflect
    assert any("'empty_input'" in a and "25%" in a for a in asks)
    assert any("PROMPT A:" in a and "PROMPT B:" in a for a in asks)
    assert all("Write calculate_user_metrics." in a for a in asks)
    assert all(b["model"] == "mutator-model" and b["temperature"] == 0.9 for b in bodies)
    # the mutator's calls are counted (budgets add them up): usage as the server reported it
    mutator = [b for b in bodies if b["model"] == "mutator-model"]
    prompt = sum(len(m["content"].split()) for b in mutator for m in b["messages"])
    completion = sum(len(mutator_responder(b).split()) for b in mutator)
    [spent] = [v for k, v in study.user_attrs.items() if k.startswith("mutation_spend:1:")]
    assert spent["tokens"] == prompt + completion
    assert spent["cost"] == pytest.approx((prompt * 2.0 + completion * 10.0) / 1e6)
    trial_tokens = sum(t.user_attrs.get("tokens", 0) for t in study.trials)
    assert study_spent(study).tokens == trial_tokens + prompt + completion


def test_failed_mutator_calls_are_skipped_and_the_round_still_counts(tmp_path: Path) -> None:
    from openai_server import Fault

    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds({"main": SEEDS["main"]})
    with OpenAIServer(mutator_responder) as server:
        router = Router(base_url=server.base_url, max_retries=0)

        async def go() -> list[PromptGeneration]:
            try:
                await pool_search_main_only(study, pool)
                server.inject(*[Fault(400)] * 2)
                return await mutation_round(study, pool, router, "m", 2)
            finally:
                await router.aclose()

        made = asyncio.run(go())
    assert made == [] and pool.rounds == 1
    assert pool.latest("main").number == 0
    assert not pool.mutation_due(3)


def test_the_mutator_samples_from_the_seed_it_is_given(tmp_path: Path) -> None:
    # the study's call seed: studies with different --seed also write different prompts
    def mutator_seeds(seed: int) -> list[int]:
        study = make_study(tmp_path / str(seed))
        pool = PromptPool(study)
        pool.ensure_seeds({"main": SEEDS["main"]})
        with OpenAIServer(mutator_responder) as server:
            router = Router(base_url=server.base_url)

            async def go() -> None:
                try:
                    await pool_search_main_only(study, pool)
                    await mutation_round(study, pool, router, "m", 2, seed=seed)
                finally:
                    await router.aclose()

            asyncio.run(go())
            return sorted(r.body["seed"] for r in server.chat_requests)

    unseeded, seeded = mutator_seeds(0), mutator_seeds(20_000_000)
    assert len(unseeded) == 2 and all(1000 <= s < 2000 for s in unseeded)  # round 1
    assert seeded == [20_000_000 + s for s in unseeded]


async def pool_search_main_only(
    study: optuna.Study, pool: PromptPool, graded: bool = False
) -> None:
    for _ in range(3):
        trial = study.ask()
        pool.suggest(trial, "main")
        trial.set_user_attr("mean", 50.0)
        if graded:  # what reflect and specialise read
            trial.set_user_attr("feedback", "- zero_days (0/20): raised ZeroDivisionError")
            trial.set_user_attr("test_pass_rates", {"zero_days": 0.0, "basic": 1.0})
        study.tell(trial, 50.0)


def test_forty_trials_with_a_round_every_three_never_trip_the_categorical_check(
    tmp_path: Path,
) -> None:
    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds(SEEDS)
    with OpenAIServer(mutator_responder) as server:
        router = Router(base_url=server.base_url)

        async def go() -> None:
            try:
                await pool_search(study, pool, router, trials=40, every=3)
            finally:
                await router.aclose()

        asyncio.run(go())
    trials = study.get_trials()
    assert len(trials) == 40
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert pool.rounds == 13
    assert pool.latest("main").number >= 10
    names = {name for t in trials for name in t.params if "_prompt_g" in name}
    assert len(names) > 20  # many generations, each its own parameter
    for trial in trials:
        recorded: dict[str, str] = trial.user_attrs["prompt_texts"]
        for name, prompt_id in trial.params.items():
            if "_prompt_g" not in name:
                continue
            generation = int(name.rsplit("_g", 1)[1])
            role = pool.variant(prompt_id).role
            assert prompt_id in pool.generations(role)[generation].ids
            assert recorded[prompt_id] == pool.variant(prompt_id).text
    # a new process sees the same pool
    reopened = PromptPool(make_study(tmp_path))
    assert reopened.variants() == pool.variants() and reopened.rounds == 13


def _worker(tmp_path: Path, base_url: str, trials: int, every: int) -> subprocess.Popen[str]:
    code = (
        "import sys; from search_helpers import pool_worker; "
        "pool_worker(sys.argv[1], 'shared', sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "journal.log"),
            base_url,
            str(trials),
            str(every),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def _check_consistent(study: optuna.Study, pool: PromptPool) -> None:
    for trial in study.get_trials():
        recorded: dict[str, Any] = trial.user_attrs["prompt_texts"]
        for name, prompt_id in trial.params.items():
            if "_prompt_g" in name:
                generation = int(name.rsplit("_g", 1)[1])
                role = pool.variant(prompt_id).role
                assert prompt_id in pool.generations(role)[generation].ids
                assert recorded[prompt_id] == pool.variant(prompt_id).text


def test_a_second_process_resumes_the_pool_of_the_first(tmp_path: Path) -> None:
    with OpenAIServer(mutator_responder) as server:
        _finish(_worker(tmp_path, server.base_url, 6, 3))
        first = PromptPool(make_study(tmp_path, "shared"))
        assert first.rounds == 2 and first.latest("main").number == 2
        _finish(_worker(tmp_path, server.base_url, 3, 3))
    study = make_study(tmp_path, "shared")
    pool = PromptPool(study)
    later = study.get_trials()[6:]
    assert all("main_prompt_g2" in t.params for t in later)
    assert pool.rounds == 3 and pool.latest("main").number == 3
    _check_consistent(study, pool)


def test_two_processes_share_one_pool_without_clobbering(tmp_path: Path) -> None:
    with OpenAIServer(mutator_responder, latency=0.01) as server:
        workers = [_worker(tmp_path, server.base_url, 12, 2) for _ in range(2)]
        for worker in workers:
            _finish(worker)
    study = make_study(tmp_path, "shared")
    pool = PromptPool(study)
    assert len(study.get_trials()) == 24
    rounds = sorted(
        int(k.rsplit(":", 1)[1]) for k in study.user_attrs if k.startswith("prompt_pool:round:")
    )
    assert rounds == list(range(1, len(rounds) + 1)) and rounds
    for role in pool.roles:
        numbers = [g.number for g in pool.generations(role)]
        assert numbers == list(range(len(numbers)))
        for generation in pool.generations(role):
            record = json.loads(study.user_attrs[f"prompt_pool:{role}:g{generation.number}"])
            assert record["ids"] == list(generation.ids)
    _check_consistent(study, pool)


def test_a_claimed_round_is_skipped_until_the_claim_expires(tmp_path: Path) -> None:
    pool_a = PromptPool(make_study(tmp_path))
    pool_a.ensure_seeds(SEEDS)
    pool_b = PromptPool(make_study(tmp_path))
    assert pool_a.claim_round(1)
    assert not pool_b.claim_round(1)
    assert pool_b.claim_round(1, ttl=0.0)  # the first claimer died: its claim is stale
    assert pool_b.commit_round(1, [], {})
    assert not pool_a.claim_round(1, ttl=0.0)  # committed rounds are never claimed again
    assert pool_a.roles == ("layer", "main")  # claims and rounds are not roles


def test_a_round_that_fails_releases_its_claim(tmp_path: Path) -> None:
    from optimizer.providers import RoutingError

    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds({"main": SEEDS["main"]})
    router = Router(base_url=None, env={})
    with pytest.raises(RoutingError):
        asyncio.run(mutation_round(study, pool, router, "local/no-such-model", 2))
    other = PromptPool(make_study(tmp_path))
    assert other.claim_round(1)  # no need to wait for the claim to expire
    assert other.rounds == 0


def test_a_claim_left_by_a_killed_local_worker_is_void_at_once(tmp_path: Path) -> None:
    import socket

    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds({"main": SEEDS["main"]})
    asyncio.run(pool_search_main_only(study, pool))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = {
        "time": time.time(),
        "worker": f"{socket.gethostname()}:{gone.stdout.strip()}",
    }
    study.set_user_attr("prompt_pool:claim:1", json.dumps(dead))
    assert pool.mutation_due(3)  # the claimer is gone: the round is free
    assert pool.claim_round(1)
    assert not pool.mutation_due(3)  # now this live process holds it
    remote = {"time": time.time(), "worker": "other-host:1"}
    study.set_user_attr("prompt_pool:claim:2", json.dumps(remote))
    assert not pool.claim_round(2)  # another host: held until it expires


# -- what a mutation round rejects --------------------------------------------------------

TARGET_ANSWER = (
    "Use this solution:\n"
    "def calculate_user_metrics(users):\n"
    "    total = sum(u['score'] for u in users)\n"
    "    return {'total': total}\n"
    "{helper_response}"
)


def one_round(
    tmp_path: Path, responder: Any, graded: bool = False, **options: Any
) -> tuple[list[PromptGeneration], PromptPool, list[dict[str, Any]], OpenAIServer]:
    """Three trials on the main seeds, then one round of two variants; returns the rejections.

    Without feedback (``graded``) on the trials, both variants are rephrasings; with it, they
    come from reflect and specialise.
    """
    study = make_study(tmp_path)
    pool = PromptPool(study)
    pool.ensure_seeds({"main": SEEDS["main"]})
    with OpenAIServer(responder) as server:
        router = Router(base_url=server.base_url, max_retries=0)

        async def go() -> list[PromptGeneration]:
            try:
                await pool_search_main_only(study, pool, graded)
                return await mutation_round(study, pool, router, "m", 2, max_tokens=100, **options)
            finally:
                await router.aclose()

        made = asyncio.run(go())
    rejected = [
        item
        for key, value in study.user_attrs.items()
        if key.startswith(f"{REJECTED_PREFIX}:1:")
        for item in value
    ]
    return made, pool, rejected, server


def test_a_mutator_answer_cut_off_by_max_tokens_is_asked_again_then_rejected(
    tmp_path: Path,
) -> None:
    def cut(body: dict[str, Any]) -> tuple[str, str]:
        return "You are an expert. Read the task and then care", "length"

    made, pool, rejected, server = one_round(tmp_path, cut)
    assert made == [] and pool.latest("main").number == 0
    assert sorted(r.body["max_tokens"] for r in server.chat_requests) == [100, 100, 200, 200]
    assert len(rejected) == 2
    assert all(r["reason"].startswith("cut off by max_tokens") for r in rejected)


def test_a_mutator_answer_cut_off_once_is_kept_when_the_retry_has_room(tmp_path: Path) -> None:
    def room(body: dict[str, Any]) -> tuple[str, str]:
        if body["max_tokens"] < 200:
            return "Be careful and", "length"
        return (
            f"Answer {body['seed']}: {distinct_words(str(body['seed']) * 4)}. {{helper_response}}",
            "stop",
        )

    _, pool, rejected, _ = one_round(tmp_path, room)
    assert rejected == []
    assert [v.text.startswith("Answer") for v in pool.latest("main").variants] == [True, True]


def test_a_variant_defining_the_target_function_is_rejected_unless_code_is_allowed(
    tmp_path: Path,
) -> None:
    def answer(body: dict[str, Any]) -> str:
        return f"# variant {body['seed']}\n" + TARGET_ANSWER

    made, pool, rejected, _ = one_round(
        tmp_path / "strict", answer, function_names=["calculate_user_metrics"]
    )
    assert made == [] and len(rejected) == 2
    assert all(
        "defines the task's function 'calculate_user_metrics'" in r["reason"] for r in rejected
    )
    made, pool, rejected, _ = one_round(
        tmp_path / "allowed", answer, function_names=["calculate_user_metrics"], allow_code=True
    )
    # code is allowed now; the second answer is only dropped as a near-duplicate of the first
    assert [r["reason"].split(" of ")[0] for r in rejected] == ["near-duplicate"]
    assert len(pool.latest("main").variants) == 1
    assert "def calculate_user_metrics(" in pool.latest("main").variants[0].text


def test_a_variant_that_is_mostly_code_is_rejected() -> None:
    code = "import math\nx = 1\nfor i in range(3):\n    x += i\nSolve it.\n{helper_response}"
    assert prompt_problem(code) == "mostly code (4 of 5 lines)"
    assert prompt_problem(code, allow_code=True) is None
    prose = "Think about edge cases:\nempty input, None, dates.\nThen answer. {helper_response}"
    assert prompt_problem(prose, ["f"]) is None
    # a suite: defining any of its problems' functions is an answer
    second = "Start from this:\ndef add(a, b):\nThen explain. {helper_response}"
    assert prompt_problem(second, ["f", "add"]) == (
        "defines the task's function 'add' (an answer, not an instruction)"
    )
    assert prompt_problem("Twice {helper_response} {helper_response}") == (
        "holds {helper_response} 2 times (expected once)"
    )


def test_a_near_duplicate_of_a_pool_prompt_is_dropped(tmp_path: Path) -> None:
    # the seed "You are the main agent. {helper_response}" with one word changed
    def echo(body: dict[str, Any]) -> str:
        if body["seed"] % 2:
            return "You are the main agents. {helper_response}"
        return f"Plan first: {distinct_words('ab12cd34')}. {{helper_response}}"

    _, pool, rejected, _ = one_round(tmp_path, echo)
    assert [v.text.startswith("Plan first") for v in pool.latest("main").variants] == [True]
    assert len(rejected) == 1 and rejected[0]["reason"].startswith("near-duplicate of main.g0.0")
    assert rejected[0]["text"] == "You are the main agents. {helper_response}"


def test_parse_rules_keeps_prose_bullets_and_drops_code_and_known_rules() -> None:
    answer = (
        "Sure! Here are the rules:\n"
        "1. **Division**: if days_active is 0, use an engagement of 0 instead of dividing.\n"
        "- - Use user.get('comments', 0) for keys that may be missing.\n"
        "- return {}\n"
        "* def helper(x): is not a rule\n"
        "- Short.\n"
        "```python\n- x = 1 if y else 2\n```\n"
        "- '- Never modify the input dictionaries.'\n"
    )
    assert parse_rules(answer) == [
        "Division: if days_active is 0, use an engagement of 0 instead of dividing.",
        "Use user.get('comments', 0) for keys that may be missing.",
        "Never modify the input dictionaries.",
    ]
    known = "Be careful.\n- Never modify the input dictionaries.\n{helper_response}"
    assert parse_rules(answer, known)[-1].startswith("Use user.get")
    assert parse_rules("def f():\n    return 1\n") == []
    many = "\n".join(f"- Rule number {i} about something." for i in range(9))
    assert len(parse_rules(many)) == 5


def test_with_rules_adds_rules_before_the_placeholder_under_one_heading() -> None:
    first = with_rules("Write the function. {helper_response} Be brief.", ["Guard zero days."])
    assert first == (
        f"Write the function.\n\n{RULES_HEADING}\n- Guard zero days.\n\n"
        "{helper_response} Be brief."
    )
    second = with_rules(first, ["Import datetime when you use it."])
    assert second.count(RULES_HEADING) == 1
    assert "- Guard zero days.\n- Import datetime when you use it.\n\n{helper_response}" in second


def test_a_mutator_answer_that_repeats_its_instructions_is_rejected() -> None:
    echo = (
        "No preamble, no explanation, no quotes, no code fences. The prompt must contain the "
        "literal placeholder {helper_response} exactly once, where the earlier agents' answers "
        "are inserted."
    )
    assert prompt_problem(echo) == (
        "repeats the mutator's own instructions, not an instruction for the task"
    )
    assert prompt_problem("Explain, then write code; no preamble. {helper_response}") is None


def test_a_rules_answer_without_rules_is_rejected(tmp_path: Path) -> None:
    def code(body: dict[str, Any]) -> str:
        return "```python\ndef calculate(users):\n    return {}\n```"

    made, pool, rejected, server = one_round(tmp_path, code, graded=True)
    assert made == [] and pool.latest("main").number == 0
    assert sorted(r["operator"] for r in rejected) == ["reflect", "specialise"]
    assert [r["reason"] for r in rejected] == ["no rules (no '- ' line of prose)"] * 2
    [specialise] = [a for a in user_messages(server) if "often fail the test" in a]
    assert "'zero_days'" in specialise and "raised ZeroDivisionError" in specialise


def test_on_a_suite_the_mutator_sees_the_task_as_one_of_its_problems(tmp_path: Path) -> None:
    def rules(body: dict[str, Any]) -> str:
        return f"- Rule {body['seed']}: {distinct_words(str(body['seed']) * 4)}."

    _, _, _, server = one_round(tmp_path / "suite", rules, True, task="def f(x):", problems=40)
    asks = user_messages(server)
    assert len(asks) == 2
    assert all("One of the 40 problems the assistants answer" in a for a in asks)
    assert all("def f(x):" in a for a in asks)
    _, _, _, server = one_round(tmp_path / "one", rules, True, task="def f(x):")
    assert all("The task the assistants answer:" in a for a in user_messages(server))
