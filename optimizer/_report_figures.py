"""The report's figures: PNG files drawn with matplotlib (no pyplot, no display needed)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.dates
from matplotlib.figure import Figure

from optimizer._report_data import LineageNode, ReportTrial

__all__ = [
    "importance_figure",
    "lineage_figure",
    "message_figure",
    "pareto_figure",
    "pass_rate_figure",
    "repeat_spread_figure",
    "score_figure",
    "spend_figure",
]

_BLUE, _ORANGE, _GREY = "#1f77b4", "#ff7f0e", "#999999"


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def message_figure(path: Path, title: str, message: str) -> Path:
    """A figure that only says why the plot it stands for cannot be drawn yet."""
    figure = Figure(figsize=(8, 2.5))
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.text(0.5, 0.5, message, ha="center", va="center", wrap=True, color=_GREY)
    axes.set_axis_off()
    return _save(figure, path)


def score_figure(path: Path, trials: Sequence[ReportTrial], max_score: float | None) -> Path:
    """Mean score of every completed trial by trial number, with the best so far."""
    figure = Figure(figsize=(8, 4))
    axes = figure.add_subplot()
    ordered = sorted(trials, key=lambda t: t.number)
    numbers = [t.number for t in ordered]
    means = [t.mean for t in ordered]
    best, running = [], float("-inf")
    for mean in means:
        running = max(running, mean)
        best.append(running)
    axes.scatter(numbers, means, s=18, color=_BLUE, label="trial mean", zorder=3)
    axes.step(numbers, best, where="post", color=_ORANGE, label="best so far")
    if max_score is not None:
        axes.axhline(max_score, color=_GREY, linestyle=":", label=f"max {max_score:g}")
    axes.set(title="Score by trial", xlabel="trial", ylabel="mean score")
    axes.legend(loc="best")
    return _save(figure, path)


def repeat_spread_figure(path: Path, top: Sequence[ReportTrial]) -> Path:
    """The repeat scores of the top trials (and their confirm-stage scores), one column each."""
    figure = Figure(figsize=(8, 4))
    axes = figure.add_subplot()
    jitter = random.Random(0)
    labels = []
    for x, trial in enumerate(top):
        labels.append(f"#{trial.number}")
        if len(trial.scores) > 1:
            axes.boxplot([trial.scores], positions=[x], widths=0.5, showfliers=False)
        xs = [x - 0.12 + jitter.uniform(-0.05, 0.05) for _ in trial.scores]
        axes.scatter(xs, trial.scores, s=14, color=_BLUE, zorder=3)
        if trial.confirm_scores:
            xs = [x + 0.12 + jitter.uniform(-0.05, 0.05) for _ in trial.confirm_scores]
            axes.scatter(xs, trial.confirm_scores, s=14, color=_ORANGE, marker="D", zorder=3)
    axes.scatter([], [], color=_BLUE, label="search repeats")
    axes.scatter([], [], color=_ORANGE, marker="D", label="confirm repeats")
    axes.set_xticks(range(len(labels)), labels)
    axes.set(title="Repeat scores of the top trials", xlabel="trial", ylabel="score")
    axes.legend(loc="best")
    return _save(figure, path)


def importance_figure(path: Path, importances: Mapping[str, float]) -> Path:
    """Optuna's parameter importances as horizontal bars, the most important on top."""
    ranked = sorted(importances.items(), key=lambda item: item[1])
    figure = Figure(figsize=(8, max(2.5, 0.35 * len(ranked) + 1)))
    axes = figure.add_subplot()
    axes.barh([name for name, _ in ranked], [value for _, value in ranked], color=_BLUE)
    axes.set(
        title="Parameter importances for the mean score (Optuna, PED-ANOVA)", xlabel="importance"
    )
    return _save(figure, path)


def pass_rate_figure(path: Path, top: Sequence[ReportTrial]) -> Path:
    """A heat map: the pass rate of every test (columns) for each top trial (rows)."""
    tests = list(dict.fromkeys(name for trial in top for name in trial.pass_rates))
    grid = [[trial.pass_rates.get(name, float("nan")) for name in tests] for trial in top]
    figure = Figure(figsize=(max(6, 0.45 * len(tests) + 3), max(2.5, 0.4 * len(top) + 2)))
    axes = figure.add_subplot()
    image = axes.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    axes.set_xticks(range(len(tests)), tests, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(top)), [f"#{t.number}" for t in top])
    if len(tests) * len(top) <= 200:
        for row, values in enumerate(grid):
            for column, value in enumerate(values):
                if value == value:  # not NaN
                    axes.text(column, row, f"{value:.0%}", ha="center", va="center", fontsize=7)
    figure.colorbar(image, ax=axes, label="pass rate")
    axes.set(title="Per-test pass rates of the top trials", ylabel="trial")
    return _save(figure, path)


def pareto_figure(
    path: Path, trials: Sequence[ReportTrial], measure: Callable[[ReportTrial], float], what: str
) -> Path:
    """Score against a cost (``measure``, lower is better), with the Pareto front drawn."""
    figure = Figure(figsize=(8, 4))
    axes = figure.add_subplot()
    axes.scatter([measure(t) for t in trials], [t.mean for t in trials], s=18, color=_BLUE)
    front = pareto_front(trials, measure)
    axes.step(
        [measure(t) for t in front],
        [t.mean for t in front],
        where="post",
        color=_ORANGE,
        marker="o",
        label="Pareto front",
    )
    for trial in front:
        axes.annotate(f"#{trial.number}", (measure(trial), trial.mean), fontsize=7)
    axes.set(title=f"Score against {what}", xlabel=what, ylabel="mean score")
    axes.legend(loc="best")
    return _save(figure, path)


def pareto_front(
    trials: Sequence[ReportTrial], measure: Callable[[ReportTrial], float]
) -> list[ReportTrial]:
    """The trials no other beats on both a higher score and a lower ``measure``."""
    front: list[ReportTrial] = []
    for trial in sorted(trials, key=lambda t: (measure(t), -t.mean, t.number)):
        if not front or trial.mean > front[-1].mean:
            front.append(trial)
    return front


def spend_figure(path: Path, trials: Sequence[ReportTrial]) -> Path:
    """Cumulative tokens and estimated cost of the trials over wall-clock time."""
    ordered = sorted(trials, key=lambda t: t.finished)
    tokens, cost, total_tokens, total_cost = [], [], 0, 0.0
    for trial in ordered:
        total_tokens += trial.tokens
        total_cost += trial.cost
        tokens.append(total_tokens)
        cost.append(total_cost)
    figure = Figure(figsize=(8, 4))
    axes = figure.add_subplot()
    times = matplotlib.dates.date2num([t.finished for t in ordered])  # type: ignore[no-untyped-call]
    axes.plot(times, tokens, color=_BLUE, label="tokens")
    axes.set(title="Tokens and cost over time", xlabel="time (UTC)", ylabel="tokens")
    dollars = axes.twinx()
    dollars.plot(times, cost, color=_ORANGE, linestyle="--", label="cost")
    dollars.set_ylabel("estimated cost ($)")
    axes.xaxis_date()
    figure.autofmt_xdate()
    figure.legend(loc="upper left", bbox_to_anchor=(0.1, 0.9))
    return _save(figure, path)


def lineage_figure(path: Path, nodes: Sequence[LineageNode]) -> Path:
    """The ancestry of the best config's prompts: one box per prompt, by generation."""
    by_generation: dict[int, list[LineageNode]] = {}
    for node in nodes:
        by_generation.setdefault(node.generation, []).append(node)
    height = max(len(group) for group in by_generation.values())
    figure = Figure(figsize=(max(6, 2.6 * len(by_generation)), max(2.5, 0.9 * height + 1)))
    axes = figure.add_subplot()
    where: dict[str, tuple[float, float]] = {}
    for generation, group in sorted(by_generation.items()):
        for row, node in enumerate(group):
            where[node.id] = (generation, -row)
    for node in nodes:
        for parent in node.parents:
            if parent in where:
                axes.annotate(
                    "",
                    xy=where[node.id],
                    xytext=where[parent],
                    arrowprops={"arrowstyle": "->", "color": _GREY, "shrinkA": 30, "shrinkB": 50},
                )
    for node in nodes:
        x, y = where[node.id]
        used = " (used)" if node.used_as else ""
        axes.text(
            x,
            y,
            f"{node.id}\n{node.operator}{used}",
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "#fde9d0" if node.used_as else "#e8f0fa"},
        )
    axes.set_xlim(min(by_generation) - 0.6, max(by_generation) + 0.6)
    axes.set_ylim(-height + 0.4, 0.6)
    axes.set_xticks(sorted(by_generation), [f"gen {g}" for g in sorted(by_generation)])
    axes.set_yticks([])
    axes.set_title("Lineage of the best config's prompts")
    return _save(figure, path)
