from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from openai_server import Fault, OpenAIServer
from optuna.trial import TrialState
from search_helpers import (
    KeywordGrader,
    asks_mutator,
    asks_rules,
    distinct_words,
    keyword_task,
    seed_responder,
    system_prompt,
)

from optimizer._best import FRESH_FIRST_REPEAT
from optimizer._catalog import Catalog
from optimizer._config import MoAConfig, config_from_dict, load_config
from optimizer._objective import worker_id
from optimizer._prompts import PromptPool
from optimizer._racing import study_runs
from optimizer._space import SearchSpace, space_from_dict
from optimizer._storage import open_storage
from optimizer._study import (
    Budget,
    Search,
    SearchError,
    SearchSummary,
    Status,
    fail_stale_trials,
    lower_confidence_bound,
    study_spent,
)
from optimizer.cli.search import summary_lines
from optimizer.providers import Router

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "smoke.yaml"
WORKSHOP = ROOT / "search_spaces" / "baselines" / "workshop-default.json"
CATALOG = Catalog.from_dict(
    {"default": {"input_per_million": 1.0, "output_per_million": 2.0, "context_window": 8192}}
)
ATTRS = {
    "config", "scores", "mean", "std", "max_score", "max_rate", "test_pass_rates",
    "prompt_tokens", "completion_tokens", "tokens", "calls", "cache_hits", "wall_time", "cost",
    "feedback", "transcript", "repeats", "seed", "worker",
}  # fmt: skip


def smoke(**changes: Any) -> SearchSpace:
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return space_from_dict(data, "smoke")


def mutating_responder(body: dict[str, Any]) -> str:
    """The mutator writes prompts that ask for gamma; everything else is seed_responder."""
    if asks_mutator(body):
        digest = hashlib.sha256(str(body.get("seed")).encode()).hexdigest()[:12]
        words = distinct_words(digest)
        if asks_rules(body):
            return f"- Rule {body.get('seed')}: always mention gamma; {words}."
        return f"Variant {body.get('seed')}: always mention gamma; {words}. {{helper_response}}"
    return seed_responder(body)


def slow_trials_responder(body: dict[str, Any]) -> str:
    """Like mutating_responder, but trial calls take a while, so each round ends in time."""
    if not asks_mutator(body):
        time.sleep(0.1)
    return mutating_responder(body)


def search(
    tmp_path: Path,
    server: OpenAIServer,
    space: SearchSpace | None = None,
    *,
    study: str = "smoke",
    baselines: list[tuple[str, MoAConfig]] | None = None,
    seen: list[Status] | None = None,
    url: str | None = None,
    **options: Any,
) -> Search:
    runs = tmp_path / "runs"
    return Search(
        space or smoke(),
        study_name=study,
        storage=open_storage(study, url, runs_dir=runs),
        study_dir=runs / study,
        tasks=[keyword_task("kw")],
        grader=KeywordGrader(),
        router=Router(base_url=server.base_url, max_retries=0),
        catalog=CATALOG,
        baselines=[("workshop-default", load_config(WORKSHOP))] if baselines is None else baselines,
        observer=None if seen is None else seen.append,
        **options,
    )


def run(search: Search) -> SearchSummary:
    return asyncio.run(search.run())


def load(tmp_path: Path, study: str = "smoke", url: str | None = None) -> optuna.Study:
    return optuna.load_study(
        study_name=study, storage=open_storage(study, url, runs_dir=tmp_path / "runs")
    )


def test_smoke_search_completes_its_trials_with_every_user_attr(tmp_path: Path) -> None:
    seen: list[Status] = []
    with OpenAIServer(seed_responder) as server:
        summary = run(
            search(tmp_path, server, budget=Budget(trials=6), workers=2, seed=3, seen=seen)
        )
    study = load(tmp_path)
    assert summary.stopped_by == "trials budget (6 trials)"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    for trial in study.trials:
        assert set(trial.user_attrs) >= ATTRS, trial.number
        assert trial.user_attrs["worker"] == worker_id()
        assert Path(trial.user_attrs["transcript"]).exists()
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] == "workshop-default"
    assert baseline.user_attrs["baseline_exact"] is False  # the smoke space caps max_tokens
    config = config_from_dict(baseline.user_attrs["config"])
    assert (config.cycles, config.main.temperature, config.layer_agents[0].temperature) == (
        1,
        0.7,
        0.5,
    )
    assert config.main.system_prompt == load_config(WORKSHOP).main.system_prompt
    assert summary.best is not None and summary.best_config is not None
    workshop = load_config(tmp_path / "runs" / "smoke" / "best.json")  # drops max_tokens
    assert workshop.main.model == summary.best_config.main.model
    assert [a.system_prompt for a in workshop.layer_agents] == [
        a.system_prompt for a in summary.best_config.layer_agents
    ]
    assert load_config(tmp_path / "runs" / "smoke" / "best.yaml") == summary.best_config
    assert summary.spent.trials == 6 and summary.spent.tokens > 0 and summary.spent.cost > 0
    assert seen[-1].spent.trials == 6 and seen[-1].best == summary.best.values[0]


class FinishedTrialsSampler(optuna.samplers.RandomSampler):
    """Records, at each trial's first sampling, the finished trials the storage holds and the
    study's cache shows (read in that order, so a fresh cache shows at least as many)."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: dict[int, tuple[set[int], set[int]]] = {}

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        if trial.number not in self.seen:
            stored = study._storage.get_all_trials(study._study_id, deepcopy=False)
            cached = study._get_trials(deepcopy=False, use_cache=True)
            self.seen[trial.number] = tuple(
                {t.number for t in trials if t.state.is_finished()} for trials in (stored, cached)
            )
        return super().sample_independent(study, trial, name, distribution)


def test_the_sampler_sees_every_finished_trial_from_the_pool_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Optuna caches a study's trials per thread and clears that cache only in ask and tell,
    # which run in other threads than the sampling: a stale cache hides the latest trials.
    sampler = FinishedTrialsSampler()
    monkeypatch.setattr("optimizer._setup.make_sampler", lambda *args, **kwargs: sampler)
    with OpenAIServer(seed_responder) as server:
        run(search(tmp_path, server, budget=Budget(trials=12), baselines=[]))
    assert set(sampler.seen) == set(range(12))
    assert sampler.seen[11][0]  # the last trials were sampled after others finished
    hidden = {n: stored - cached for n, (stored, cached) in sampler.seen.items() if stored - cached}
    assert hidden == {}


def one_call_search(
    tmp_path: Path, server: OpenAIServer, trials: int, workers: int, **options: Any
) -> SearchSummary:
    """A search whose trials make one model call each (no cycles, one repeat, no racing)."""
    space = smoke(
        cycles=0, repeats=1, mutation={"every": 0}, racing={"incumbent_runs": 1, "max_runs": 1}
    )
    budget = Budget(trials=trials)
    return run(
        search(tmp_path, server, space, baselines=[], budget=budget, workers=workers, **options)
    )


def test_workers_run_trials_concurrently(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder, latency=1.0) as server:
        one_call_search(tmp_path, server, trials=3, workers=3)
        requests = server.chat_requests
    assert len(requests) == 3
    first_end = min(r.finished for r in requests)
    assert all(r.started < first_end for r in requests)  # all three were in flight at once


def test_one_worker_samples_the_next_trial_while_a_fast_trial_calls_models(
    tmp_path: Path,
) -> None:
    with OpenAIServer(seed_responder) as server:  # no latency: sampling is slow next to it
        one_call_search(tmp_path, server, trials=5, workers=1)
        requests = sorted(server.chat_requests, key=lambda r: r.started)
    assert len(requests) == 5
    assert all(a.finished <= b.started for a, b in itertools.pairwise(requests))  # one worker
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    ends = [t.datetime_complete for t in trials]
    assert ends == sorted(ends)  # they ran in the order of their numbers
    # from the second trial on, the next one is sampled before the current one ends
    for current, ahead in itertools.pairwise(trials[1:]):
        assert ahead.datetime_start and current.datetime_complete
        assert ahead.datetime_start < current.datetime_complete


def test_one_worker_samples_once_a_slow_trial_ended(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder, latency=1.5) as server:
        one_call_search(tmp_path, server, trials=3, workers=1, sampler="random")
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for current, after in itertools.pairwise(trials):
        assert after.datetime_start and current.datetime_complete
        assert after.datetime_start >= current.datetime_complete


@pytest.mark.parametrize(
    ("budget", "named"),
    [
        (Budget(trials=2), "trials budget (2 trials)"),
        (Budget(timeout=0.5), "time budget (0.5 s)"),
        (Budget(max_tokens=50), "token budget (50 tokens)"),
        (Budget(max_cost=0.0001), "cost budget ($0.0001)"),
    ],
)
def test_each_budget_stops_the_search_and_is_named(
    tmp_path: Path, budget: Budget, named: str
) -> None:
    with OpenAIServer(seed_responder, latency=0.1) as server:
        summary = run(search(tmp_path, server, budget=budget, workers=2))
    assert summary.stopped_by == named
    assert summary.spent.exhausted(budget) == named
    study = load(tmp_path)
    # the trials calling models finished; the one sampled ahead never ran and says so
    states = [t.state for t in study.trials]
    ahead = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert states[: len(states) - len(ahead)] == [TrialState.COMPLETE] * (len(states) - len(ahead))
    assert [(t.state, t.user_attrs["error"]) for t in ahead] == [
        (TrialState.FAIL, f"not run: the search was stopped by {named}")
    ] * len(ahead)
    assert len(ahead) <= (0 if budget.trials else 1)
    assert summary.spent.failed == 0
    assert not any(t.user_attrs.get("tokens") for t in ahead)
    assert summary.best is not None


def test_resume_keeps_trials_and_counts_what_was_spent(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        first = run(search(tmp_path, server, budget=Budget(trials=3), seed=1))
        second = run(search(tmp_path, server, budget=Budget(trials=5), seed=1))
        requests = len(server.chat_requests)
        spent = second.spent.tokens
        third = run(search(tmp_path, server, budget=Budget(max_tokens=spent)))
        assert len(server.chat_requests) == requests  # already spent: no new call
    assert len(first.session_trials) == 3 and len(second.session_trials) == 2
    assert third.session_trials == () and third.stopped_by == f"token budget ({spent:,} tokens)"
    study = load(tmp_path)
    assert len(study.trials) == 5 and study.trials[0].user_attrs["baseline"] == "workshop-default"
    assert sum("baseline" in t.user_attrs for t in study.trials) == 1  # not enqueued again
    assert len([k for k in study.user_attrs if k.startswith("session:")]) == 3


def test_studies_with_different_seeds_draw_different_model_seeds_and_keep_them(
    tmp_path: Path,
) -> None:
    def seeds_of(server: OpenAIServer, first: int) -> set[int]:
        return {r.body["seed"] for r in server.chat_requests[first:] if not asks_mutator(r.body)}

    with OpenAIServer(seed_responder) as server:
        run(search(tmp_path, server, study="a", budget=Budget(trials=3), seed=1,
                   confirm_repeats=2))  # fmt: skip
        a, first = seeds_of(server, 0), len(server.chat_requests)
        run(search(tmp_path, server, study="b", budget=Budget(trials=3), seed=2,
                   confirm_repeats=2))  # fmt: skip
        b = seeds_of(server, first)
        resumed = len(server.chat_requests)
        run(search(tmp_path, server, study="a", budget=Budget(trials=5), seed=7))
        later = seeds_of(server, resumed)
        mutator = {r.body["seed"] for r in server.chat_requests[resumed:] if asks_mutator(r.body)}
        last = len(server.chat_requests)
        run(search(tmp_path, server, study="z", budget=Budget(trials=2)))
        unseeded = seeds_of(server, last)
    # seeds 1 and 2 used to mean call seeds 1 + r and 2 + r: nearly the same draws
    assert not a & b
    assert all(10_000_000 <= s < 20_000_000 for s in a) and all(s >= 20_000_000 for s in b)
    assert later and all(10_000_000 <= s < 20_000_000 for s in later)  # a keeps its seeds
    assert load(tmp_path, "a").user_attrs["call_seed"] == 10_000_000
    assert mutator and all(10_001_000 <= s < 10_002_000 for s in mutator)  # its round 1
    assert all(s < 10_000_000 for s in unseeded)  # no --seed: seeds from 0, as reproduce's


def test_a_resumed_study_rejects_another_space(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        run(search(tmp_path, server, budget=Budget(trials=1)))
        with pytest.raises(SearchError, match="created with another search space"):
            run(search(tmp_path, server, smoke(cycles=1), budget=Budget(trials=2)))
        run(
            search(tmp_path, server, smoke(repeats=3), budget=Budget(trials=2))
        )  # repeats may change


def test_a_trial_another_worker_failed_meanwhile_does_not_stop_the_search(tmp_path: Path) -> None:
    # a partition: another worker took this one for dead and failed its trial 1 mid-run
    failed: list[int] = []
    url = f"sqlite:///{tmp_path / 'study.db'}"  # a database: heartbeats need one

    def respond(body: dict[str, Any]) -> str:
        study = load(tmp_path, url=url)
        running = study.get_trials(states=(TrialState.RUNNING,))
        if not failed and any(t.number == 1 for t in running):
            failed.append(1)
            other = study.trials[1]
            study._storage.set_trial_user_attr(other._trial_id, "error", "heartbeat lost (x:1)")
            study._storage.set_trial_state_values(other._trial_id, TrialState.FAIL)
        return seed_responder(body)

    with OpenAIServer(respond) as server:
        summary = run(search(tmp_path, server, budget=Budget(trials=3), url=url))
    assert failed == [1]
    study = load(tmp_path, url=url)
    assert study.trials[1].state == TrialState.FAIL
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3  # the budget still ran
    late = [e for e in summary.session_trials if e.number == 1]
    assert late and late[0].detail == "heartbeat lost (x:1); its result came late"


def test_trials_left_running_by_a_dead_process_are_failed_on_resume(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    storage = open_storage("smoke", runs_dir=tmp_path / "runs")
    study = optuna.create_study(study_name="smoke", storage=storage, direction="maximize")
    orphan = study.ask()
    orphan.set_user_attr("worker", {**worker_id(), "pid": dead_pid})
    alive = study.ask()
    alive.set_user_attr("worker", worker_id())
    assert fail_stale_trials(study) == [orphan.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING]
    assert "process died" in study.trials[0].user_attrs["error"]


def test_the_confirm_stage_runs_once_whoever_claims_it_first(tmp_path: Path) -> None:
    seen: list[Status] = []
    with OpenAIServer(seed_responder) as server:
        run(search(tmp_path, server, budget=Budget(trials=3)))
        # another worker, stopped by the same budget, claimed these 3 trials' confirm stage
        other = {"host": "far-host", "pid": 7}
        load(tmp_path).set_user_attr("confirm_claim", {"trials": 3, "worker": other})
        summary = run(search(tmp_path, server, budget=Budget(trials=3), confirm_repeats=3,
                             seen=seen))  # fmt: skip
        assert summary.confirmations == () and summary.fresh_runs is None
        assert not [k for k in load(tmp_path).user_attrs if k.startswith(("fresh:", "runs:"))]
        left = "confirm stage left to the worker that claimed it (far-host:7)"
        assert left in [s.message for s in seen]
        # one more finished trial: a new confirm stage, and this worker claims it
        last = run(search(tmp_path, server, budget=Budget(trials=4), confirm_repeats=3))
    assert last.confirmations and last.fresh_runs is not None and last.fresh_runs.n == 3
    assert load(tmp_path).user_attrs["confirm_claim"] == {"trials": 4, "worker": worker_id()}


def test_a_first_sigint_lets_in_flight_trials_finish(tmp_path: Path) -> None:
    sent: list[int] = []

    def interrupting(body: dict[str, Any]) -> str:
        if len(server.chat_requests) >= 3 and not sent:  # a few trials have finished
            sent.append(len(server.chat_requests))
            os.kill(os.getpid(), signal.SIGINT)
        return seed_responder(body)

    with OpenAIServer(interrupting, latency=0.2) as server:
        summary = run(
            search(
                tmp_path, server, smoke(cycles=0, repeats=1), budget=Budget(trials=50), workers=2
            )
        )
    assert summary.stopped_by == "interrupt (SIGINT)" and summary.interrupted
    study = load(tmp_path)
    assert len(study.trials) < 50 and len(sent) == 1
    # the trial whose call sent the signal, and any other in flight, finished; a trial sampled
    # ahead and waiting for a worker never ran
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all(str(t.user_attrs["error"]).startswith("not run:") for t in failed)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == len(study.trials) - len(failed) >= 2  # both workers' trials
    assert {e.number for e in summary.session_trials if e.state == TrialState.COMPLETE} == {
        t.number for t in complete
    }


def test_a_second_sigint_stops_at_once_and_marks_in_flight_trials_failed(tmp_path: Path) -> None:
    sent: list[int] = []
    seen: list[Status] = []
    signalling = threading.Lock()  # one server thread at a time

    def interrupting(body: dict[str, Any]) -> str:
        layer = not system_prompt(body).startswith(("You are", "Combine"))
        with signalling:
            if len(server.chat_requests) >= 3 and (sent or layer) and len(sent) < 2:
                # two SIGINTs sent at once merge into one (asyncio reads them as one), as two
                # Ctrl-C a person types do not: the second waits for the first one's notice
                while sent and not any("Ctrl-C" in s.message for s in seen):
                    time.sleep(0.01)
                sent.append(len(server.chat_requests))  # a layer call, then its trial's next
                os.kill(os.getpid(), signal.SIGINT)
        return seed_responder(body)

    space = smoke(cycles=1, repeats=1)
    with OpenAIServer(interrupting, latency=0.2) as server:
        summary = run(
            search(tmp_path, server, space, budget=Budget(trials=50), workers=2, seen=seen)
        )
    assert summary.stopped_by == "interrupt (SIGINT)" and summary.interrupted
    assert len(sent) == 2
    study = load(tmp_path)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["error"] == "interrupt (SIGINT)" for t in failed)
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in study.trials)
    assert {e.number for e in summary.session_trials if e.state == TrialState.FAIL} == {
        t.number for t in failed
    }


def test_repeated_failures_stop_the_search(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        server.inject(*[Fault(status=400)] * 20)
        summary = run(search(tmp_path, server, budget=Budget(trials=20)))
    # the trial sampled ahead may start its calls, and fail, before the loop sees the third
    # failure: then the streak that stops the search is 4
    assert re.match(
        r"repeated failures \(([34]) trials in a row; last: ProviderError", summary.stopped_by
    )
    assert summary.best is None and summary.exports == ()
    assert summary.spent.failed in (3, 4)


def test_confirm_stage_reevaluates_the_top_trials(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        summary = run(
            search(tmp_path, server, budget=Budget(trials=4), confirm_repeats=4, confirm_top=2)
        )
        again = run(
            search(tmp_path, server, budget=Budget(trials=4), confirm_repeats=4, confirm_top=2)
        )
    assert len(summary.confirmations) == 2
    for confirmation in summary.confirmations:
        # every run of the config pooled: at least the 4 asked for, each a new draw
        assert confirmation.repeats == len(confirmation.scores) >= 4
        # seed_responder alternates 100 and 60 points on even and odd seeds
        assert sorted(confirmation.scores)[:2] == [60.0, 60.0] or confirmation.mean > 80
        assert confirmation.lcb < confirmation.mean
    assert summary.best is not None and summary.best.number == summary.confirmations[0].number
    assert (
        summary.best_runs is not None
        and summary.best_runs.key == summary.confirmations[0].config_key
    )
    first = {c.config_key: c for c in summary.confirmations}
    for confirmation in again.confirmations:  # stored runs are reused, not made again
        if confirmation.config_key in first:
            assert confirmation.scores == first[confirmation.config_key].scores
    study = load(tmp_path)
    mutations = sum(
        v["tokens"] for k, v in study.user_attrs.items() if k.startswith("mutation_spend:")
    )
    trials = sum(t.user_attrs["tokens"] for t in study.trials)
    fresh = sum(v["tokens"] for k, v in study.user_attrs.items() if k.startswith("fresh:"))
    confirmed = study_spent(study).tokens - trials - mutations - fresh
    runs = {c.config_key: c.tokens for c in (*summary.confirmations, *again.confirmations)}
    assert confirmed == sum(runs.values()) > 0
    assert fresh > 0  # the fresh runs count in the spending too


def flattering_landscape(body: dict[str, Any]) -> str:
    """Every search run scores the maximum; runs with fresh seeds score 100 or 60."""
    seed = body.get("seed") or 0
    if seed < FRESH_FIRST_REPEAT:
        return "alpha beta gamma"
    return "alpha beta" if seed % 2 == 0 else "alpha"


def test_the_reported_figures_come_from_fresh_runs_made_after_the_choice(
    tmp_path: Path,
) -> None:
    space = smoke(cycles=0, mutation={"every": 0})
    with OpenAIServer(flattering_landscape) as server:
        summary = run(search(tmp_path, server, space, baselines=[], budget=Budget(trials=3),
                             confirm_repeats=4, confirm_top=2))  # fmt: skip
        first_seeds = [r.body["seed"] for r in server.chat_requests]
        stats = json.loads((tmp_path / "runs" / "smoke" / "best.stats.json").read_text())
        header = (tmp_path / "runs" / "smoke" / "best.yaml").read_text().splitlines()
        again = run(search(tmp_path, server, space, baselines=[], budget=Budget(trials=4),
                           confirm_repeats=4, confirm_top=2))  # fmt: skip
        seeds = [r.body["seed"] for r in server.chat_requests]
    assert summary.best_runs is not None and summary.fresh_runs is not None
    # the search runs chose the config, and flatter it; the fresh runs say what to expect
    assert set(summary.best_runs.scores) == {120.0}
    assert summary.fresh_runs.n == 4 and sorted(summary.fresh_runs.scores) == [60, 60, 100, 100]
    fresh_seeds = [s for s in first_seeds if s >= FRESH_FIRST_REPEAT]
    assert len(fresh_seeds) == len(set(fresh_seeds)) == 4
    low, high = summary.fresh_runs.interval
    assert low < 80 < high < 120  # the interval holds the fresh mean, not the search's
    assert stats["confirmed"] is True
    assert (stats["n"], stats["mean"]) == (4, 80.0)
    assert (stats["ci_low"], stats["ci_high"]) == pytest.approx((low, high))
    assert stats["search"]["mean"] == 120.0 and stats["best_single_run"] == 120.0
    # the file names the seeds its runs used, so a reproduction can tell it replays them
    named = {stats["call_seed"] + r for r in stats["repeats"]}
    assert named == set(fresh_seeds)
    assert {stats["call_seed"] + r for r in stats["search"]["repeats"]} <= set(first_seeds)
    assert header[1].startswith("# Confirmed on 4 fresh runs after it was chosen: mean 80/120")
    lines = "\n".join(summary_lines(summary))
    assert "Confirmed on 4 fresh runs" in lines and "optimistic" in lines
    # and where a 10-run reproduction of it should land: wider, its runs are noisy too
    predicted = summary.fresh_runs.predicted(10)
    assert predicted[0] < low and predicted[1] > high
    assert [stats["reproduce_interval"][k] for k in ("low", "high")] == pytest.approx(predicted)
    assert f"reproduce --repeats 10 should average within [{predicted[0]:.4g}," in lines
    # fresh runs never pool with the search's runs, so they never choose anything
    pools = study_runs(load(tmp_path))
    assert all(r < FRESH_FIRST_REPEAT for p in pools.values() for r in p.repeats)
    # a later confirm stage of the same config adds new fresh runs, with new seeds
    assert again.fresh_runs is not None and again.fresh_runs.n == 8
    later = [s for s in seeds[len(first_seeds) :] if s >= FRESH_FIRST_REPEAT]
    assert len(later) == 4 and not set(later) & set(fresh_seeds)


def test_many_mutation_rounds_never_trip_the_categorical_check(tmp_path: Path) -> None:
    space = smoke(mutation={"every": 2, "variants": 2})
    with OpenAIServer(slow_trials_responder) as server:
        summary = run(search(tmp_path, server, space, budget=Budget(trials=16), workers=2, seed=0))
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 16
    pool = PromptPool(study)
    assert pool.rounds >= 4
    assert len(pool.generations("main")) >= 3
    prompt_params = {n for t in study.trials for n in t.params if "_prompt_g" in n}
    assert any(n.endswith("_g2") for n in prompt_params)
    # the mutated prompts mention gamma, which the responder rewards
    assert summary.best is not None and summary.best.values[0] > 80


def test_no_mutation_round_starts_once_the_budget_is_reached(tmp_path: Path) -> None:
    space = smoke(mutation={"every": 2, "variants": 1})
    with OpenAIServer(mutating_responder) as server:
        run(search(tmp_path, server, space, budget=Budget(trials=2), seed=0))
        mutator_calls = [r for r in server.chat_requests if asks_mutator(r.body)]
        assert mutator_calls == []  # the round due after trial 1 would be spent for nothing
        assert PromptPool(load(tmp_path)).rounds == 0
        run(search(tmp_path, server, space, budget=Budget(trials=3), seed=0))
        resumed = [r for r in server.chat_requests if asks_mutator(r.body)]
    study = load(tmp_path)
    assert resumed and PromptPool(study).rounds == 1  # the resumed search runs the due round
    assert any(k.startswith("mutation_spend:1:") for k in study.user_attrs)


def test_multi_objective_search_reports_a_pareto_front(tmp_path: Path) -> None:
    with OpenAIServer(seed_responder) as server:
        summary = run(
            search(
                tmp_path,
                server,
                budget=Budget(trials=5),
                objectives=("score", "cost"),
                sampler="nsga2",
            )
        )
    study = load(tmp_path)
    assert len(study.directions) == 2
    assert summary.pareto and set(summary.pareto) == {t.number for t in study.best_trials}
    assert summary.best is not None and summary.best.number in summary.pareto
    with OpenAIServer(seed_responder) as server, pytest.raises(SearchError, match="--objectives"):
        run(search(tmp_path, server, budget=Budget(trials=6)))


def test_lower_confidence_bound() -> None:
    assert lower_confidence_bound([]) == 0.0
    assert lower_confidence_bound([90.0]) == 90.0
    assert lower_confidence_bound([100.0, 100.0, 100.0]) == 100.0
    # mean 80, std 23.09, n 4, t(0.95, 3) = 2.353
    assert lower_confidence_bound([60.0, 100.0, 60.0, 100.0]) == pytest.approx(
        80 - 2.353 * 23.094 / 2, abs=1e-2
    )


@pytest.mark.postgres
def test_a_study_on_postgresql_is_joined_by_name_and_resumed(
    tmp_path: Path, postgres_url: str
) -> None:
    name = f"pg-{os.getpid()}-{tmp_path.name}"
    storage = open_storage(name, postgres_url)
    with OpenAIServer(mutating_responder) as server:
        space = smoke(mutation={"every": 2, "variants": 1})
        options: dict[str, Any] = {"study": name, "workers": 2}
        first = search(tmp_path, server, space, budget=Budget(trials=4), **options)
        first.storage = storage
        assert run(first).stopped_by == "trials budget (4 trials)"
        second = search(tmp_path, server, space, budget=Budget(trials=6), **options)
        second.storage = open_storage(name, postgres_url)
        summary = run(second)
    joined = optuna.load_study(study_name=name, storage=open_storage(name, postgres_url))
    assert len(summary.session_trials) == 2
    assert [t.state for t in joined.trials] == [TrialState.COMPLETE] * 6
    assert sum("baseline" in t.user_attrs for t in joined.trials) == 1
    assert PromptPool(joined).rounds >= 2
    optuna.delete_study(study_name=name, storage=open_storage(name, postgres_url))


# -- racing: a noisy landscape (the same config scores differently per seed) ---------------


def two_models(**racing: int) -> SearchSpace:
    """One prompt, one temperature, no cycles: a trial's config is its main model."""
    main = {"models": ["steady", "lucky"], "temperature": 0.5, "max_tokens": 64}
    return smoke(
        cycles=0,
        repeats=1,
        mutation={"every": 0},
        main={**main, "prompts": ["Answer the task. {helper_response}"]},
        racing=racing or {"incumbent_runs": 3, "max_runs": 8},
    )


def lucky_landscape(lucky_always: bool) -> Any:
    """``steady`` scores 100 on even seeds and 60 on odd ones (mean 80); ``lucky`` scores
    the maximum (120) on seed 0 only and nothing else, or on every seed."""

    def respond(body: dict[str, Any]) -> str:
        seed = (body.get("seed") or 0) % 1_000_003
        if body["model"] == "lucky":
            return "alpha beta gamma" if lucky_always or seed == 0 else "nothing useful"
        return "alpha beta" if seed % 2 == 0 else "alpha"

    return respond


@pytest.mark.parametrize("lucky_always", [False, True], ids=["lucky-once", "truly-better"])
def test_a_lucky_maximum_becomes_the_best_only_if_its_runs_confirm_it(
    tmp_path: Path, lucky_always: bool
) -> None:
    with OpenAIServer(lucky_landscape(lucky_always)) as server:
        summary = run(
            search(
                tmp_path,
                server,
                two_models(),
                baselines=[],
                budget=Budget(trials=6),
                sampler="random",
                seed=0,
            )
        )
    study = load(tmp_path)
    by_model = {t.params["main_model"]: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert set(by_model) == {"steady", "lucky"}  # both were tried
    lucky_scores = [
        s for t in study.trials if t.params["main_model"] == "lucky" for s in t.user_attrs["scores"]
    ]
    assert 120.0 in lucky_scores  # it did score the maximum
    assert summary.best_config is not None and summary.best_runs is not None
    stats = json.loads((tmp_path / "runs" / "smoke" / "best.stats.json").read_text())
    assert stats["n"] == summary.best_runs.n >= 3
    if lucky_always:
        assert summary.best_config.main.model == "lucky"
        assert summary.best_runs.mean == 120.0
    else:
        # racing gave it more runs, which said it was luck: the steady config is exported
        assert len(lucky_scores) > 1 and min(lucky_scores) == 0.0
        assert summary.best_config.main.model == "steady"
        assert summary.best_runs.mean == pytest.approx(stats["mean"])
        assert stats["mean"] < 100
        assert stats["best_single_run"] == 100.0
    exported = load_config(tmp_path / "runs" / "smoke" / "best.yaml")
    assert exported.main.model == summary.best_config.main.model
    header = (tmp_path / "runs" / "smoke" / "best.yaml").read_text().splitlines()[1]
    # no confirm stage in this search: the header says its figures are the search's runs
    assert header.startswith(f"# Its {summary.best_runs.n} search runs: mean ")


@pytest.mark.parametrize("k", [2, 4])
def test_the_incumbent_always_has_at_least_k_runs(tmp_path: Path, k: int) -> None:
    seen: list[Status] = []
    with OpenAIServer(lucky_landscape(False)) as server:
        summary = run(
            search(
                tmp_path,
                server,
                two_models(incumbent_runs=k, max_runs=k + 2),
                baselines=[],
                budget=Budget(trials=5),
                sampler="random",
                seed=1,
                seen=seen,
                workers=2,
            )
        )
    leaders = [s.incumbent for s in seen if s.incumbent is not None]
    assert leaders and all(leader.n >= k for leader in leaders)
    assert all(s.best == s.incumbent.mean for s in seen if s.incumbent is not None)
    assert summary.best_runs is not None and summary.best_runs.n >= k
    assert load(tmp_path).user_attrs["racing"] == {"incumbent_runs": k, "max_runs": k + 2}


def test_runs_of_one_config_made_by_different_trials_are_pooled(tmp_path: Path) -> None:
    space = smoke(
        cycles=0,
        repeats=1,
        mutation={"every": 0},
        main={"models": ["steady"], "temperature": 0.5, "max_tokens": 64,
              "prompts": ["Answer the task. {helper_response}"]},
    )  # fmt: skip
    with OpenAIServer(lucky_landscape(False)) as server:
        summary = run(search(tmp_path, server, space, baselines=[], budget=Budget(trials=3)))
        seeds = sorted(r.body["seed"] for r in server.chat_requests)
    trials = load(tmp_path).trials
    # trial 0 had no incumbent to face: it ran 3 times; the later trials of the same
    # config (now the incumbent) ran once each, each with a new repeat index and seed
    assert [t.user_attrs["repeat_indices"] for t in trials] == [[0, 1, 2], [3], [4]]
    assert seeds == [0, 1, 2, 3, 4]
    assert len({t.user_attrs["config_key"] for t in trials}) == 1
    all_scores = [100.0, 60.0, 100.0, 60.0, 100.0]
    assert [t.user_attrs["pooled"]["n"] for t in trials] == [3, 4, 5]
    # each trial is told its config's pooled mean at tell time, not its own runs' mean
    assert trials[1].value == pytest.approx(statistics.fmean(all_scores[:4]))
    assert trials[2].value == pytest.approx(statistics.fmean(all_scores))
    assert trials[2].user_attrs["mean"] == 100.0
    assert summary.best_runs is not None
    assert summary.best_runs.trials == (0, 1, 2) and summary.best_runs.scores == tuple(all_scores)


def test_the_summary_counts_the_mutator_answers_a_search_rejected(tmp_path: Path) -> None:
    def cut_mutator(body: dict[str, Any]) -> str | tuple[str, str]:
        if asks_mutator(body):
            return "def calculate_user_metrics(users):\n    return {", "length"
        return seed_responder(body)

    space = smoke(mutation={"every": 2, "variants": 2})
    with OpenAIServer(cut_mutator) as server:
        summary = run(search(tmp_path, server, space, budget=Budget(trials=3), seed=0))
    assert summary.rejected == (("cut off by max_tokens", 4),)  # 2 variants x 2 roles
    assert PromptPool(load(tmp_path)).latest("main").number == 0  # nothing was added
    lines = summary_lines(summary)
    assert "Mutator answers rejected: 4 (4 cut off by max_tokens)" in lines
