"""A small user suite (HumanEval's JSONL format) and a loopback responder that solves it.

The responder answers a suite problem with correct code when the system prompt asks for care
(``careful``) or the model is ``model-b`` on an even problem, else with a wrong function; it
answers the mutator like ``search_helpers.mutator_responder``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from search_helpers import asks_mutator, mutator_responder, system_prompt

PROBLEMS = {
    "add_two": ("a, b", "Return a + b.", "return a + b", [((1, 2), 3), ((-1, 1), 0)]),
    "negate": ("a", "Return -a.", "return -a", [((1,), -1), ((0,), 0)]),
    "double_it": ("a", "Return 2 * a.", "return 2 * a", [((3,), 6), ((0,), 0)]),
    "is_even": ("n", "Whether n is even.", "return n % 2 == 0", [((2,), True), ((3,), False)]),
    "last_item": ("xs", "The last item of xs.", "return xs[-1]", [(([1, 2],), 2), ((["a"],), "a")]),
    "square": ("x", "Return x squared.", "return x * x", [((3,), 9), ((-2,), 4)]),
    "halve": ("x", "Return x // 2.", "return x // 2", [((8,), 4), ((3,), 1)]),
    "first_item": ("xs", "The first item of xs.", "return xs[0]", [(([5, 6],), 5)]),
}
"""entry point -> (parameters, docstring, correct body, [(args, expected)])."""


def problem(name: str) -> dict[str, Any]:
    """The JSONL record of one problem."""
    params, doc, body, cases = PROBLEMS[name]
    checks = "".join(f"    assert candidate(*{args!r}) == {want!r}\n" for args, want in cases)
    return {
        "task_id": f"mini/{name}",
        "prompt": f'def {name}({params}):\n    """{doc}"""\n',
        "entry_point": name,
        "canonical_solution": f"    {body}\n",
        "test": f"def check(candidate):\n{checks}",
    }


def write_suite(path: Path, names: list[str] | None = None) -> Path:
    """Writes the suite (every problem, or ``names``) as JSONL; returns ``path``."""
    records = [problem(name) for name in (names or list(PROBLEMS))]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def asked_problem(body: dict[str, Any]) -> str | None:
    """The entry point of the suite problem a request's user message holds, if any."""
    user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
    found = re.search(r"```python\ndef (\w+)\(", user)
    return found.group(1) if found else None


def mentioned(body: dict[str, Any]) -> set[str]:
    """Every problem whose function name appears anywhere in a request."""
    text = json.dumps(body)
    return {name for name in PROBLEMS if re.search(rf"\b{name}\b", text)}


def suite_responder(body: dict[str, Any]) -> str:
    """Solves suite problems when asked carefully; plays the mutator otherwise."""
    name = asked_problem(body)
    if name is None or asks_mutator(body):
        return mutator_responder(body)
    params, _, body_line, _ = PROBLEMS[name]
    careful = "careful" in system_prompt(body).lower()
    good = careful or (body["model"] == "model-b" and len(name) % 2 == 0)
    code = body_line if good else "return None"
    return f"Here it is:\n```python\ndef {name}({params}):\n    {code}\n```\n"
