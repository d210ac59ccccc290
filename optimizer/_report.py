"""``moa-opt report``: a study as ``index.html`` with PNG figures, readable while it runs."""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from optimizer._best import study_incumbent_runs
from optimizer._config import config_to_dict
from optimizer._export import ExportedConfig, ExportError, best_configs, study_task
from optimizer._racing import RUNS_ATTR, rank_key, study_runs
from optimizer._report_data import (
    LineageNode,
    ReportTrial,
    importances,
    lineage,
    report_trials,
    top_trials,
)
from optimizer._report_figures import (
    importance_figure,
    lineage_figure,
    message_figure,
    pareto_figure,
    pass_rate_figure,
    repeat_spread_figure,
    score_figure,
    spend_figure,
)
from optimizer._storage import safe_url
from optimizer._yamlfile import dump_yaml

__all__ = ["Report", "write_report"]


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote.

    Attributes:
        index: The HTML page.
        figures: The PNG files it shows, in page order.
        running: Trials that were still running when it was written.
    """

    index: Path
    figures: tuple[Path, ...]
    running: int


@dataclass(frozen=True)
class _Figure:
    file: str
    title: str
    caption: str


def write_report(study: optuna.Study, out_dir: Path, storage_url: str | None = None) -> Report:
    """Writes ``out_dir/index.html`` and its figures for ``study``.

    Args:
        study: The study; it may still be running (its running trials are counted, not shown).
        out_dir: The directory to write to (made if missing; files in it are replaced).
        storage_url: ``--storage`` as given, for the export command shown (password hidden).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = report_trials(study)
    top = top_trials(trials)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    running = states.count(TrialState.RUNNING) + states.count(TrialState.WAITING)
    best = _best(study)
    max_score = _max_score(study)
    figures = _draw(study, out_dir, trials, top, best, max_score)
    sections = [
        _header(study, trials, states, running),
        *[_figure_html(f) for f in figures],
        _best_html(study, best, storage_url),
    ]
    page = _PAGE.format(title=html.escape(f"moa-opt report: {study.study_name}"))
    index = out_dir / "index.html"
    index.write_text(page + "\n".join(sections) + "\n</body></html>\n", encoding="utf-8")
    return Report(index, tuple(out_dir / f.file for f in figures), running)


def _best(study: optuna.Study) -> ExportedConfig | None:
    try:
        configs = best_configs(study)
    except ExportError:
        return None
    return max(configs, key=lambda c: (c.mean if c.mean is not None else float("-inf"), -c.trial))


def _max_score(study: optuna.Study) -> float | None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        value = trial.user_attrs.get("max_score")
        if isinstance(value, int | float):
            return float(value)
    return None


def _draw(
    study: optuna.Study,
    out_dir: Path,
    trials: list[ReportTrial],
    top: list[ReportTrial],
    best: ExportedConfig | None,
    max_score: float | None,
) -> list[_Figure]:
    """Draws every figure (a notice in place of one that has no data yet)."""
    figures = [
        _Figure("score.png", "Score by trial", "Mean score of each completed trial."),
        _Figure("repeats.png", "Repeat scores", "The spread of repeat scores, top 10 trials."),
        _Figure("importances.png", "Parameter importances", "Which parameters moved the score."),
        _Figure("pass_rates.png", "Per-test pass rates", "Top 10 trials (rows) by test."),
        _Figure("cost.png", "Score against cost", "Estimated cost per trial, Pareto front."),
        _Figure("latency.png", "Score against latency", "Evaluation seconds, Pareto front."),
        _Figure("lineage.png", "Prompt lineage", "Ancestors of the best config's prompts."),
        _Figure("spend.png", "Tokens and cost over time", "Cumulative, over the trials."),
    ]
    paths = {f.file: out_dir / f.file for f in figures}
    none = "no completed trial yet"
    if not trials:
        for figure in figures:
            message_figure(paths[figure.file], figure.title, none)
        return figures
    score_figure(paths["score.png"], trials, max_score)
    repeat_spread_figure(paths["repeats.png"], top)
    found = importances(study)
    if isinstance(found, str):
        message_figure(paths["importances.png"], "Parameter importances", found)
    else:
        importance_figure(paths["importances.png"], found)
    if any(t.pass_rates for t in top):
        pass_rate_figure(paths["pass_rates.png"], top)
    else:
        message_figure(paths["pass_rates.png"], "Per-test pass rates", "the grader names no tests")
    pareto_figure(paths["cost.png"], trials, lambda t: t.cost, "estimated cost per trial ($)")
    pareto_figure(paths["latency.png"], trials, lambda t: t.latency, "evaluation time (s)")
    nodes = _lineage(study, best)
    if nodes:
        lineage_figure(paths["lineage.png"], nodes)
    else:
        message_figure(paths["lineage.png"], "Prompt lineage", "the best trial used no pool prompt")
    spend_figure(paths["spend.png"], trials)
    return figures


def _lineage(study: optuna.Study, best: ExportedConfig | None) -> list[LineageNode]:
    if best is None:
        return []
    return lineage(study, study.trials[best.trial])


def _header(
    study: optuna.Study, trials: list[ReportTrial], states: list[TrialState], running: int
) -> str:
    task = study_task(study)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    facts = [
        f"task {task.name} ({task.source})" if task is not None else "task unknown",
        f"{len(trials)} completed trials",
        f"{states.count(TrialState.FAIL)} failed",
        f"{states.count(TrialState.PRUNED)} pruned",
    ]
    still = (
        f"<p class='running'>{running} trials were still running when this report was "
        "written; run <code>moa-opt report</code> again for a later view.</p>"
        if running
        else ""
    )
    return (
        f"<h1>{html.escape(study.study_name)}</h1>\n"
        f"<p>{html.escape(', '.join(facts))}; written {now}.</p>\n{still}"
    )


def _figure_html(figure: _Figure) -> str:
    return (
        f"<figure><img src='{figure.file}' alt='{html.escape(figure.title)}'>"
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


_CONFIRMED_ROWS = 10


def _best_html(study: optuna.Study, best: ExportedConfig | None, storage_url: str | None) -> str:
    if best is None:
        return "<h2>Best config</h2>\n<p>No completed trial yet.</p>"
    parts = [f"<h2>Best config: trial {best.trial}</h2>"]
    if best.runs is not None:
        parts.append("<p>" + "<br>".join(html.escape(line) for line in best.runs.lines()) + "</p>")
    else:
        mean = "-" if best.mean is None else f"{best.mean:.4g}"
        how = "confirm stage" if best.confirmed else "search repeats"
        parts.append(f"<p>Mean score {mean} over {best.repeats or '?'} runs ({how}).</p>")
    parts.append(f"<pre>{html.escape(dump_yaml(config_to_dict(best.config)))}</pre>")
    parts.append("<h2>Confirmation</h2>")
    need = study_incumbent_runs(study)
    ranked = sorted(
        (r for r in study_runs(study).values() if r.n >= need),
        key=lambda r: rank_key(r, need),
        reverse=True,
    )[:_CONFIRMED_ROWS]
    if not any(key.startswith(f"{RUNS_ATTR}:") for key in study.user_attrs):
        parts.append("<p>The confirm stage has not run yet (it runs when the search ends).</p>")
    if ranked:
        rows = "".join(
            f"<tr><td>{min(r.trials)}</td><td>{r.n}</td><td>{r.mean:.4g}</td>"
            f"<td>{r.std:.3g}</td><td>{r.lcb:.4g}</td><td>{r.best:.4g}</td></tr>"
            for r in ranked
        )
        parts.append(
            f"<p>Configs with at least {need} runs (racing and the confirm stage), by lower "
            "bound: the first is the best.</p>"
            "<table><tr><th>first trial</th><th>runs</th><th>mean</th><th>std</th>"
            f"<th>95% LCB</th><th>best run</th></tr>{rows}</table>"
        )
    else:
        parts.append(f"<p>No config has {need} runs yet.</p>")
    parts.append("<h2>Prompt lineage</h2>")
    nodes = _lineage(study, best)
    for node in reversed(nodes):
        used = f", used as {node.used_as}" if node.used_as else ""
        parents = f", from {', '.join(node.parents)}" if node.parents else ""
        parts.append(
            f"<h3>{html.escape(node.id)}: generation {node.generation}, "
            f"{html.escape(node.operator)}{html.escape(parents + used)}</h3>"
            f"<pre>{html.escape(node.text)}</pre>"
        )
    command = ["moa-opt", "export", "--study", study.study_name]
    if storage_url is not None:
        command += ["--storage", safe_url(storage_url)]
    parts.append("<h2>Export</h2>")
    parts.append(f"<pre>{html.escape(shlex.join([*command, '-o', 'best.json']))}</pre>")
    return "\n".join(parts)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #555; font-size: 0.9rem; }}
pre {{ background: #f6f6f6; padding: 0.8rem; white-space: pre-wrap; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; }}
.running {{ color: #a15c00; }}
</style></head><body>
"""
