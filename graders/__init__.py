"""Graders: score an answer to a task; generated code only ever runs in the sandbox.

``get_grader(name)`` finds a grader (built-in, entry point, or ``module:attribute``);
``load_tasks(name)`` reads tasks shipped as data or given as YAML files, and suites
(``humaneval`` or a JSONL file of HumanEval-style problems); ``Sandbox`` runs
untrusted code in an isolated process.
"""

from __future__ import annotations

from graders._base import BaseGrader, GradeResult, Task, TestResult
from graders._errors import GraderError
from graders._exact import ExactGrader, find_answers, parse_number
from graders._extract import extract_code, missing_code_reason, strip_thinking
from graders._function120 import (
    EXPECTED_AVERAGE,
    FUNCTION120_TESTS,
    WRONG_AVERAGE,
    Function120Grader,
    Function120Test,
)
from graders._humaneval import HumanEvalGrader
from graders._isolation import UNISOLATED_ENV, IsolationCheck, check_isolation
from graders._judge import JudgeGrader, JudgeVerdict, judge_messages, parse_verdict
from graders._preflight import missing_dependencies, preflight
from graders._pytest_grader import PytestGrader
from graders._registry import (
    ENTRY_POINT_GROUP,
    GraderInfo,
    get_grader,
    grader_type,
    list_graders,
)
from graders._rules import NO_RULES, WORKSHOP_RULES, CodeRules, check_rules
from graders._sandbox import (
    FunctionCall,
    Outcome,
    Sandbox,
    SandboxedGrader,
    SandboxError,
    SandboxLimits,
    SandboxRun,
)
from graders._suite import HUMANEVAL, is_suite, load_suite, suite_name
from graders._tasks import list_tasks, load_task, load_tasks
from graders._text import safe_text
from graders._values import Opaque, decode_value, encode_value

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXPECTED_AVERAGE",
    "FUNCTION120_TESTS",
    "HUMANEVAL",
    "NO_RULES",
    "UNISOLATED_ENV",
    "WORKSHOP_RULES",
    "WRONG_AVERAGE",
    "BaseGrader",
    "CodeRules",
    "ExactGrader",
    "Function120Grader",
    "Function120Test",
    "FunctionCall",
    "GradeResult",
    "GraderError",
    "GraderInfo",
    "HumanEvalGrader",
    "IsolationCheck",
    "JudgeGrader",
    "JudgeVerdict",
    "Opaque",
    "Outcome",
    "PytestGrader",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxRun",
    "SandboxedGrader",
    "Task",
    "TestResult",
    "check_isolation",
    "check_rules",
    "decode_value",
    "encode_value",
    "extract_code",
    "find_answers",
    "get_grader",
    "grader_type",
    "is_suite",
    "judge_messages",
    "list_graders",
    "list_tasks",
    "load_suite",
    "load_task",
    "load_tasks",
    "missing_code_reason",
    "missing_dependencies",
    "parse_number",
    "parse_verdict",
    "preflight",
    "safe_text",
    "strip_thinking",
    "suite_name",
]
