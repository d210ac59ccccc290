"""The workshop's challenge rules, checked on the AST before anything runs."""

from __future__ import annotations

import pytest

from graders import NO_RULES, WORKSHOP_RULES, check_rules


def test_allowed_code_passes() -> None:
    code = """
import heapq, math, json, logging, sys
from datetime import datetime
from typing import Any
from dateutil.parser import parse

class Scores:
    def __init__(self):
        super().__init__()
        self.name = type(self).__name__

def calculate_user_metrics(users, start_date, end_date):
    \"\"\"Doc.\"\"\"
    return heapq.nlargest(5, users, key=lambda u: u.get('posts', 0))

if __name__ == "__main__":
    print(calculate_user_metrics([], "a", "b"))
"""
    assert check_rules(code, WORKSHOP_RULES) == ()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import os", "line 1: imports 'os': only datetime, dateutil, heapq, json, logging,"),
        ("import os.path as p", "line 1: imports 'os.path'"),
        ("from subprocess import run", "line 1: imports 'subprocess'"),
        ("from . import sibling", "line 1: uses a relative import: not allowed"),
        ("import json\nimport socket", "line 2: imports 'socket'"),
    ],
)
def test_imports_outside_the_list_are_refused(code: str, message: str) -> None:
    violations = check_rules(code, WORKSHOP_RULES)
    assert len(violations) == 1 and violations[0].startswith(message)


@pytest.mark.parametrize("name", ["exec", "eval", "compile", "__import__", "open", "input"])
def test_banned_builtins_are_refused(name: str) -> None:
    violations = check_rules(f"def f():\n    return {name}('x')\n", WORKSHOP_RULES)
    assert violations == (
        f"line 2: uses {name}(): not allowed (__import__, compile, eval, exec, input, open)",
    )


def test_banned_builtin_refused_even_when_not_called() -> None:
    assert check_rules("run = eval\nrun('1')\n", WORKSHOP_RULES)[0].startswith(
        "line 1: uses eval()"
    )


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("().__class__.__base__.__subclasses__()", "uses .__class__: dunder attributes"),
        ("f.__globals__['os']", "uses .__globals__"),
        ("x = __builtins__", "uses the name __builtins__"),
        ("getattr(f, '__globals__')", "uses the string '__globals__'"),
        ("import logging\nlogging.os.system('id')", "uses .os: reaching into the interpreter"),
        ("import sys\nsys.modules['os']", "uses .modules"),
        ("import sys\nsys._getframe(1).f_locals", "uses ._getframe"),
        ("from sys import _getframe", "imports '_getframe'"),
    ],
)
def test_reaching_into_the_interpreter_is_refused(code: str, fragment: str) -> None:
    violations = check_rules(code, WORKSHOP_RULES)
    assert any(fragment in v for v in violations), violations


def test_every_violation_is_reported_once_with_its_line() -> None:
    code = "import os\n\ndef f():\n    eval('1')\n    eval('2')\n    return open('x')\n"
    assert [v.split(":")[0] for v in check_rules(code, WORKSHOP_RULES)] == [
        "line 1",
        "line 4",
        "line 5",
        "line 6",
    ]


def test_syntax_error_is_one_violation() -> None:
    assert check_rules("def f(:\n", WORKSHOP_RULES) == (
        "line 1: syntax error: invalid syntax (<unknown>, line 1)",
    )


def test_no_rules_allows_everything() -> None:
    code = "import os\nfrom . import x\neval('1')\n().__class__.__subclasses__()\n"
    assert check_rules(code, NO_RULES) == ()
