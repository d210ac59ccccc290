"""moa-optimizer: search, run and reproduce Mixture-of-Agents configs."""

from __future__ import annotations

from optimizer._catalog import Catalog, CatalogError, check_context
from optimizer._config import (
    DEFAULT_AGGREGATION_TEMPLATE,
    AgentSpec,
    ConfigError,
    MoAConfig,
    config_from_dict,
    config_from_workshop,
    config_to_dict,
    config_to_workshop,
    describe_config,
    load_config,
    load_config_task,
    save_config,
    task_companion,
)
from optimizer._errors import UserError
from optimizer._evaluate import Evaluation, RunResult, evaluate, write_transcript
from optimizer._export import ExportedConfig, ExportError, best_configs
from optimizer._failures import FailureCause, common_failures
from optimizer._moa import CallRecord, MoAResult, run_moa
from optimizer._objective import Objective, parse_objectives
from optimizer._prompts import PromptPool, PromptVariant, mutation_round
from optimizer._reproduce import Reproduction, reproduce
from optimizer._space import SearchSpace, SpaceError, load_space
from optimizer._split import Split, make_split
from optimizer._storage import StorageError, StudyNotFoundError, load_study, open_storage
from optimizer._study import Search, SearchSummary
from optimizer._taskref import TaskRef, task_ref
from optimizer._validate import ValidationRow, validate_configs

__all__ = [
    "DEFAULT_AGGREGATION_TEMPLATE",
    "AgentSpec",
    "CallRecord",
    "Catalog",
    "CatalogError",
    "ConfigError",
    "Evaluation",
    "ExportError",
    "ExportedConfig",
    "FailureCause",
    "MoAConfig",
    "MoAResult",
    "Objective",
    "PromptPool",
    "PromptVariant",
    "Reproduction",
    "RunResult",
    "Search",
    "SearchSpace",
    "SearchSummary",
    "SpaceError",
    "Split",
    "StorageError",
    "StudyNotFoundError",
    "TaskRef",
    "UserError",
    "ValidationRow",
    "best_configs",
    "check_context",
    "common_failures",
    "config_from_dict",
    "config_from_workshop",
    "config_to_dict",
    "config_to_workshop",
    "describe_config",
    "evaluate",
    "load_config",
    "load_config_task",
    "load_space",
    "load_study",
    "make_split",
    "mutation_round",
    "open_storage",
    "parse_objectives",
    "reproduce",
    "run_moa",
    "save_config",
    "task_companion",
    "task_ref",
    "validate_configs",
    "write_transcript",
]
