"""Per-problem reports of a trial on a suite, and pruning by a real WilcoxonPruner."""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.trial import TrialState

from graders._base import GradeResult, Task
from optimizer._evaluate import RunResult
from optimizer._instances import InstanceReporter, InstanceSampling, make_pruner
from optimizer._moa import MoAResult

TASKS = tuple(Task(f"p{i}", f"problem {i}", "humaneval") for i in range(30))


def run(task: Task, score: float, repeat: int = 0) -> RunResult:
    grade = GradeResult(score, 1.0)
    return RunResult(task, repeat, repeat, MoAResult("answer", (), 0.0), grade, 0.0)


def test_sampling_is_seeded_by_trial_shuffled_and_sized() -> None:
    sampling = InstanceSampling(count=5, seed=1)
    chosen = sampling.choose(TASKS, 7)
    assert chosen == sampling.choose(TASKS, 7) and len(chosen) == 5
    assert chosen != sampling.choose(TASKS, 8)
    everything = InstanceSampling(None, 1).choose(TASKS, 7)
    assert sorted(t.name for t in everything) == sorted(t.name for t in TASKS)
    assert [t.name for t in everything] != [t.name for t in TASKS]  # shuffled


def test_each_problem_is_reported_at_its_own_step_once_its_repeats_are_in() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    reporter = InstanceReporter(trial, TASKS, repeats=2, chosen=2)
    reporter(run(TASKS[4], 1.0, 0))
    assert study.trials[0].intermediate_values == {}
    reporter(run(TASKS[4], 0.0, 1))
    reporter(run(TASKS[9], 1.0, 0))
    reporter(run(TASKS[9], 1.0, 1))
    assert study.trials[0].intermediate_values == {4: 0.5, 9: 1.0}


def test_wilcoxon_prunes_a_clearly_worse_trial_and_keeps_its_partial_mean() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("wilcoxon"))
    best = study.ask()
    good = InstanceReporter(best, TASKS, repeats=1, chosen=len(TASKS))
    for task in TASKS:
        good(run(task, 1.0))
    study.tell(best, 1.0)
    worse = study.ask()
    reporter = InstanceReporter(worse, TASKS, repeats=1, chosen=len(TASKS))
    with pytest.raises(optuna.TrialPruned, match=r"after (\d+) of 30 problems"):
        for task in TASKS:
            reporter(run(task, 0.0))
    done = len(reporter.scores)
    assert 2 < done < len(TASKS)
    assert worse.user_attrs == {"mean": 0.0, "instances_done": done}
    # a run that ends while the pruning cancels the others is reported and counted, no raise
    reporter(run(TASKS[done], 1.0))
    assert worse.user_attrs == {"mean": 1 / (done + 1), "instances_done": done + 1}
    assert len(study.trials[-1].intermediate_values) == done + 1
    study.tell(worse, state=TrialState.PRUNED)
    # an equal trial is never pruned
    equal = study.ask()
    same = InstanceReporter(equal, TASKS, repeats=1, chosen=len(TASKS))
    for task in TASKS:
        same(run(task, 1.0))


def test_no_pruner_never_prunes() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("none"))
    first = study.ask()
    for task in TASKS:
        InstanceReporter(first, TASKS, 1, len(TASKS))(run(task, 1.0))
    study.tell(first, 1.0)
    second = study.ask()
    reporter = InstanceReporter(second, TASKS, 1, len(TASKS))
    for task in TASKS:
        reporter(run(task, 0.0))
    assert len(reporter.scores) == len(TASKS)


def test_trials_on_different_samples_prune_without_a_warning_per_step() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("wilcoxon"))
    first = study.ask()
    reporter = InstanceReporter(first, TASKS, repeats=1, chosen=10)
    for task in TASKS[:10]:
        reporter(run(task, 1.0))
    study.tell(first, 1.0)
    second = study.ask()  # a sample of its own: half of its problems the best trial never ran
    reporter = InstanceReporter(second, TASKS, repeats=1, chosen=10)
    with warnings.catch_warnings(record=True) as caught:  # the filters as they are
        for task in TASKS[5:15]:
            reporter(run(task, 1.0))
    assert len(reporter.scores) == 10
    assert [str(w.message) for w in caught] == []
