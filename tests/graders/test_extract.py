"""Extracting the target function from a model's response."""

from __future__ import annotations

import pytest

from graders import extract_code, missing_code_reason, strip_thinking

NAME = "solve"


def returns(code: str | None) -> object:
    """Runs extracted code (trusted test input) and returns what ``solve()`` returns."""
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code, namespace)
    return namespace[NAME]()  # type: ignore[operator]


def test_fenced_python_block_with_prose_around() -> None:
    response = "Sure! Here it is:\n\n```python\ndef solve():\n    return 1\n```\n\nHope it helps."
    assert extract_code(response, NAME) == "def solve():\n    return 1\n"


@pytest.mark.parametrize(
    ("fence", "close"),
    [
        ("```", "```"),
        ("```py", "```"),
        ("```Python3", "```"),
        ("~~~python", "~~~"),
        ("````python", "````"),
    ],
)
def test_fence_variants(fence: str, close: str) -> None:
    response = f"Text\n{fence}\ndef solve():\n    return 2\n{close}\nMore text"
    assert returns(extract_code(response, NAME)) == 2


def test_other_languages_are_ignored() -> None:
    response = (
        '```json\n{"def solve()": 1}\n```\n'
        "```bash\ndef solve() { echo 3; }\n```\n"
        "```python\ndef solve():\n    return 3\n```"
    )
    assert returns(extract_code(response, NAME)) == 3


def test_plain_code_without_fences() -> None:
    code = "import math\n\n\ndef solve():\n    return math.floor(4.5)\n"
    assert extract_code(code, NAME) == code


def test_plain_code_with_prose_before_and_after() -> None:
    response = (
        "Here is my solution:\n\n"
        "import math\n\n"
        "LIMIT = 10\n\n"
        "def helper(x):\n    return x + 1\n\n"
        "def solve():\n    return helper(math.floor(LIMIT / 2))\n\n"
        "print(solve())\n\n"
        "This works because helper adds one.\n"
    )
    code = extract_code(response, NAME)
    assert code is not None
    assert "Here is" not in code and "This works" not in code and "print(" not in code
    assert returns(code) == 6


def test_thinking_is_dropped() -> None:
    response = (
        "<think>\nMaybe:\n```python\ndef solve():\n    return 'draft'\n```\n</think>\n"
        "```python\ndef solve():\n    return 'final'\n```"
    )
    assert returns(extract_code(response, NAME)) == "final"


def test_only_thinking_means_no_code() -> None:
    response = "<think>def solve():\n    return 1\n</think>\nI am not sure."
    assert extract_code(response, NAME) is None


def test_unclosed_thinking_hides_the_rest() -> None:
    response = "```python\ndef solve():\n    return 'before'\n```\n<think>def solve(): return 'x'"
    assert returns(extract_code(response, NAME)) == "before"


def test_closing_tag_without_opening_ends_reasoning() -> None:
    response = "def solve():\n    return 'thought'\n</think>\ndef solve():\n    return 'answer'\n"
    assert returns(extract_code(response, NAME)) == "answer"
    assert strip_thinking("a <THINK>b</THINK> c") == "a  c"


def test_last_complete_block_wins() -> None:
    response = (
        "First try:\n```python\ndef solve():\n    return 'first'\n```\n"
        "Better:\n```python\ndef solve():\n    return 'second'\n```\n"
    )
    assert returns(extract_code(response, NAME)) == "second"


def test_a_truncated_last_block_loses_to_an_earlier_complete_one() -> None:
    response = (
        "```python\ndef solve():\n    return 'complete'\n```\n"
        "Improved version:\n```python\ndef solve():\n    if True:\n"
    )
    assert returns(extract_code(response, NAME)) == "complete"


def test_a_final_usage_block_does_not_hide_the_definition() -> None:
    response = (
        "```python\ndef solve():\n    return 'defined'\n```\n"
        "Usage:\n```python\nprint(solve())\n```\n"
    )
    assert returns(extract_code(response, NAME)) == "defined"


def test_last_definition_in_one_block_wins() -> None:
    code = "def solve():\n    return 'old'\n\n\ndef solve():\n    return 'new'\n"
    assert returns(extract_code(f"```python\n{code}```", NAME)) == "new"


def test_imports_and_helpers_in_the_block_are_kept() -> None:
    response = (
        "```python\nimport heapq\n\n\ndef top(xs):\n    return heapq.nlargest(1, xs)\n\n\n"
        "def solve():\n    return top([3, 9, 4])\n```"
    )
    assert returns(extract_code(response, NAME)) == [9]


def test_indented_block_is_dedented() -> None:
    response = "1. The code:\n\n    ```python\n    def solve():\n        return 4\n    ```\n"
    assert returns(extract_code(response, NAME)) == 4


def test_block_with_a_broken_part_is_salvaged() -> None:
    response = (
        "```python\nimport math\n\ndef solve():\n    return math.sqrt(16)\n\n"
        "Example output: 4.0 (as expected)\n```"
    )
    assert returns(extract_code(response, NAME)) == 4.0


def test_decorated_definition_is_salvaged_with_its_decorator() -> None:
    response = (
        "Here:\n\nimport functools\n\n@functools.lru_cache(maxsize=None)\n"
        "def solve():\n    return 5\n\nDone."
    )
    code = extract_code(response, NAME)
    assert code is not None and "@functools.lru_cache" in code
    assert returns(code) == 5


def test_methods_and_nested_functions_do_not_count() -> None:
    response = "```python\nclass A:\n    def solve(self):\n        return 1\n```"
    assert extract_code(response, NAME) is None


def test_no_function_of_that_name() -> None:
    response = "```python\ndef something_else():\n    return 1\n```"
    assert extract_code(response, NAME) is None
    assert (
        missing_code_reason(response, NAME) == "no function named 'solve' was found in the response"
    )


def test_function_that_does_not_parse() -> None:
    response = "```python\ndef solve():\n    return (1,\n```"
    assert extract_code(response, NAME) is None
    reason = missing_code_reason(response, NAME)
    assert reason.startswith("the response defines 'solve' but its code does not parse")


def test_huge_response_is_handled() -> None:
    response = "x" * 5_000_000 + "\n```python\ndef solve():\n    return 'end'\n```"
    assert returns(extract_code(response, NAME)) == "end"
