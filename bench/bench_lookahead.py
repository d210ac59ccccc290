"""Benchmark: does sampling a trial ahead cost the search quality?

When sampling is slow next to the trials, the search samples the next trial while the
current ones run (see ``Search._loop``): with one worker, trial ``n + 1`` is then sampled
before trial ``n`` has its score, with ``n`` as a running trial (a constant liar). This
runs the sampler the search builds (``make_sampler("tpe")``: multivariate, grouped,
constant liar) on a synthetic noisy objective shaped like an MoA space (a model choice,
temperatures, a prompt choice, cycles with a conditional parameter), in two arms side by
side on the same seeds: ``sequential`` (each trial is sampled after the last one is told)
and ``ahead`` (one trial sampled ahead). It reports, per arm, the true (noise-free) value
of the trial each search would pick (best observed score) and the mean true value over the
second half of the trials.

Usage:
    PYTHONPATH=. .venv/bin/python bench/bench_lookahead.py [--seeds 40] [--trials 60] [--noise 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import numpy as np
import optuna

from optimizer._study import make_sampler

PROMPT_VALUES = (0.0, 5.0, 20.0, 8.0, 0.0, 3.0)


def true_value(params: dict[str, Any]) -> float:
    """The noise-free score of a synthetic config (higher is better; best 55)."""
    value = {"small": 0.0, "large": 15.0}[params["model"]]
    value += 10.0 * (1.0 - abs(params["temperature"] - 0.3))
    value += PROMPT_VALUES[params["prompt"]]
    if params["cycles"] > 0:
        value += 10.0 - 4.0 * abs(params["cycles"] - 2) - 8.0 * abs(params["layer_temp"] - 0.6)
    return value


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """A define-by-run space like an MoA space, with a conditional parameter."""
    params: dict[str, Any] = {
        "model": trial.suggest_categorical("model", ["small", "large"]),
        "temperature": trial.suggest_float("temperature", 0.0, 1.0, step=0.1),
        "prompt": trial.suggest_categorical("prompt", list(range(len(PROMPT_VALUES)))),
        "cycles": trial.suggest_int("cycles", 0, 3),
    }
    if params["cycles"] > 0:
        params["layer_temp"] = trial.suggest_float("layer_temp", 0.0, 1.0, step=0.1)
    return params


def search(seed: int, trials: int, noise: float, ahead: bool) -> tuple[float, float]:
    """One search; returns (true value of the best-observed trial, mean true value, 2nd half)."""
    rng = np.random.default_rng(10_000 + seed)  # the same noise draws in both arms
    sampler = make_sampler("tpe", seed=seed, multi_objective=False, startup_trials=10)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    truths: list[float] = []
    pending: list[tuple[optuna.Trial, dict[str, Any]]] = []

    def finish() -> None:
        trial, params = pending.pop(0)
        truth = true_value(params)
        truths.append(truth)
        study.tell(trial, truth + rng.normal(0.0, noise))

    for _ in range(trials):
        trial = study.ask()
        pending.append((trial, suggest(trial)))
        if len(pending) > (1 if ahead else 0):
            finish()
    while pending:
        finish()
    best = max(study.trials, key=lambda t: float(t.value or 0.0))
    return truths[best.number], statistics.fmean(truths[trials // 2 :])


def main(argv: list[str] | None = None) -> int:
    """Runs both arms on the same seeds; prints a markdown table and the paired differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--noise", type=float, default=8.0, help="std of the score noise")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    results = {
        arm: [search(seed, args.trials, args.noise, arm == "ahead") for seed in range(args.seeds)]
        for arm in ("sequential", "ahead")
    }
    print(f"`PYTHONPATH=. .venv/bin/python bench/bench_lookahead.py {' '.join(sys.argv[1:])}`\n")
    print(
        f"{args.seeds} seeds x {args.trials} trials, score noise std {args.noise:g}, "
        "best true value 55; mean ± standard error over seeds\n"
    )
    print("| arm | true value of the picked trial | mean true value, 2nd half of trials |")
    print("|---|---:|---:|")
    means = {}
    for arm, rows in results.items():
        cells = []
        for column in range(2):
            values = [row[column] for row in rows]
            error = statistics.stdev(values) / len(values) ** 0.5
            cells.append(f"{statistics.fmean(values):.2f} ± {error:.2f}")
        means[arm] = [statistics.fmean(row[c] for row in rows) for c in range(2)]
        print(f"| {arm} | {' | '.join(cells)} |")
    ratios = [a / s for a, s in zip(means["ahead"], means["sequential"], strict=True)]
    print(f"\nahead / sequential: picked trial {ratios[0]:.3f}, second half {ratios[1]:.3f}")
    for column, label in enumerate(("picked trial", "second half")):
        paired = [
            a[column] - s[column]
            for a, s in zip(results["ahead"], results["sequential"], strict=True)
        ]
        error = statistics.stdev(paired) / len(paired) ** 0.5
        print(
            f"ahead - sequential, paired by seed, {label}: "
            f"{statistics.fmean(paired):+.2f} ± {error:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
