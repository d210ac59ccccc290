from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optimizer._catalog import (
    MODELS_FILE_ENV,
    Catalog,
    CatalogError,
    check_context,
    estimate_tokens,
)
from optimizer._config import AgentSpec, MoAConfig
from optimizer._errors import UserError

WORKSHOP_MODELS = ("llama3.1-8b", "llama-3.3-70b", "llama-4-scout-17b-16e-instruct", "qwen-3-32b")


def test_packaged_table_covers_the_workshop_and_embedded_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MODELS_FILE_ENV, raising=False)
    catalog = Catalog.load()
    for model in WORKSHOP_MODELS:
        assert model in catalog.models
        info = catalog.info(model)
        assert info.input_per_million > 0 and info.output_per_million > 0
        assert info.context_window >= 8192
    for model in ("local/qwen2.5-coder-0.5b", "local/qwen2.5-coder-1.5b"):
        assert catalog.cost(model, 10**6, 10**6) == 0.0
        assert catalog.context_window(model) == _local_n_ctx()
    assert catalog.info("never-heard-of-it") == catalog.default


def _local_n_ctx() -> int:
    """The n_ctx the embedded provider opens models with (8192 if it names none)."""
    try:
        from optimizer.providers import _local
    except ImportError:
        return 8192
    for name in ("DEFAULT_N_CTX", "N_CTX"):
        if isinstance(getattr(_local, name, None), int):
            return int(getattr(_local, name))
    return 8192


def test_cost_and_prefix_lookup() -> None:
    catalog = Catalog.from_dict(
        {
            "default": {"input_per_million": 1, "output_per_million": 1, "context_window": 100},
            "models": {
                "m": {"input_per_million": 0.5, "output_per_million": 2.0, "context_window": 4096}
            },
        }
    )
    assert catalog.cost("m", 2_000_000, 1_000_000) == pytest.approx(3.0)
    assert catalog.cost("cerebras/m", 1_000_000, 0) == pytest.approx(0.5)
    assert catalog.context_window("cerebras/m") == 4096
    assert catalog.context_window("other") == 100
    assert catalog.cost("other", 500_000, 500_000) == pytest.approx(1.0)


def test_env_var_points_at_a_user_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "default": {"input_per_million": 9, "output_per_million": 9, "context_window": 512},
                "models": {},
            }
        )
    )
    monkeypatch.setenv(MODELS_FILE_ENV, str(path))
    assert Catalog.load().context_window("llama3.1-8b") == 512


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a mapping"),
        (
            {"default": {"input_per_million": 1, "output_per_million": 1}},
            "default.context_window: required",
        ),
        (
            {"default": {"input_per_million": -1, "output_per_million": 1, "context_window": 5}},
            "default.input_per_million: expected a non-negative number",
        ),
        (
            {
                "default": {"input_per_million": 1, "output_per_million": 1, "context_window": 5},
                "models": {
                    "x": {"input_per_million": 1, "output_per_million": 1, "context_window": 1.5}
                },
            },
            "models.x.context_window: expected a positive integer",
        ),
        (
            {
                "default": {"input_per_million": 1, "output_per_million": 1, "context_window": 5},
                "models": {"x": {"price": 1}},
            },
            "models.x.price: unknown field",
        ),
    ],
)
def test_invalid_tables_name_the_field(data: object, message: str) -> None:
    with pytest.raises(CatalogError, match=message) as caught:
        Catalog.from_dict(data, "t.yaml")
    assert str(caught.value).startswith("t.yaml")
    assert isinstance(caught.value, UserError)


def test_missing_user_table_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nope\.yaml: cannot read"):
        Catalog.load(tmp_path / "nope.yaml")


def test_estimate_tokens_is_chars_over_three_and_a_half() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("x" * 7) == 2
    assert estimate_tokens("x" * 8) == 3


def _catalog(window: int) -> Catalog:
    return Catalog.from_dict(
        {
            "default": {"input_per_million": 1, "output_per_million": 1, "context_window": 100_000},
            "models": {
                "small": {"input_per_million": 1, "output_per_million": 1, "context_window": window}
            },
        }
    )


def _config(*, cycles: int, agents: int, max_tokens: int, main_model: str = "small") -> MoAConfig:
    return MoAConfig(
        main=AgentSpec("main", main_model, 0.0, "Main {helper_response}", max_tokens=max_tokens),
        cycles=cycles,
        layer_agents=tuple(
            AgentSpec(f"a{i}", "small", 0.5, "Help {helper_response}", max_tokens=max_tokens)
            for i in range(agents)
        ),
    )


def test_a_single_agent_fits_but_many_aggregated_answers_overflow() -> None:
    catalog = _catalog(8192)
    assert check_context(_config(cycles=0, agents=0, max_tokens=2048), "task", catalog) is None
    assert check_context(_config(cycles=1, agents=3, max_tokens=1024), "task", catalog) is None
    reason = check_context(_config(cycles=1, agents=4, max_tokens=2048), "task", catalog)
    assert reason is not None
    assert reason.startswith("main agent (small) needs about")
    assert "context window is 8,192" in reason


def test_second_cycle_agents_see_the_first_cycles_answers() -> None:
    # the main agent sits on a big model, so only the layer agents of cycle 2 can overflow
    config = _config(cycles=2, agents=4, max_tokens=2000, main_model="big")
    reason = check_context(config, "task", _catalog(8192))
    assert reason is not None and reason.startswith("agent 'a0' in cycle 2 (small)")
    assert (
        check_context(
            _config(cycles=1, agents=4, max_tokens=2000, main_model="big"), "t", _catalog(8192)
        )
        is None
    )


def test_prompts_without_the_placeholder_do_not_see_earlier_answers() -> None:
    config = MoAConfig(
        main=AgentSpec("main", "small", 0.0, "Main, alone", max_tokens=1000),
        cycles=1,
        layer_agents=tuple(
            AgentSpec(f"a{i}", "small", 0.5, "Help", max_tokens=3000) for i in range(5)
        ),
    )
    assert check_context(config, "task", _catalog(4096)) is None


def test_a_long_task_prompt_counts() -> None:
    config = _config(cycles=0, agents=0, max_tokens=100)
    assert check_context(config, "x" * 3000, _catalog(1000)) is None
    reason = check_context(config, "x" * 3500, _catalog(1000))
    assert reason is not None and "max_tokens 100" in reason
