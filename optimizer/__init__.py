"""moa-optimizer: search, run and reproduce Mixture-of-Agents configs."""

from __future__ import annotations

from optimizer._config import (
    DEFAULT_AGGREGATION_TEMPLATE,
    AgentSpec,
    ConfigError,
    MoAConfig,
    config_from_dict,
    config_from_workshop,
    config_to_dict,
    config_to_workshop,
    load_config,
    save_config,
)
from optimizer._errors import UserError
from optimizer._moa import CallRecord, MoAResult, run_moa

__all__ = [
    "DEFAULT_AGGREGATION_TEMPLATE",
    "AgentSpec",
    "CallRecord",
    "ConfigError",
    "MoAConfig",
    "MoAResult",
    "UserError",
    "config_from_dict",
    "config_from_workshop",
    "config_to_dict",
    "config_to_workshop",
    "load_config",
    "save_config",
    "run_moa",
]
