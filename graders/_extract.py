"""Extracting the code of one function from a model's response.

A response may hold ```` ```python ```` or bare ```` ``` ```` blocks, or plain code with prose
around it, and reasoning inside ``<think>...</think>``. Reasoning is dropped; among the blocks (or,
without blocks, the plain text) the last one that parses and defines the function wins. A block
that does not parse as a whole is salvaged: the function's own lines, grown by the neighbouring
top-level imports, definitions and assignments for as long as the result still parses.
"""

from __future__ import annotations

import ast
import re
import textwrap

__all__ = ["MAX_RESPONSE_CHARS", "extract_code", "missing_code_reason", "strip_thinking"]

MAX_RESPONSE_CHARS = 200_000
"""Responses longer than this are cut to their last ``MAX_RESPONSE_CHARS`` characters."""

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.-]*)")
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
_MAX_CHUNKS = 200
# Top-level statements that may join a salvaged function: they define things, nothing runs.
_DEFINING = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


def strip_thinking(text: str) -> str:
    """Returns ``text`` without its ``<think>...</think>`` reasoning.

    A ``</think>`` without an opening tag ends reasoning that began before the text (some chat
    templates put ``<think>`` in the prompt); an unclosed ``<think>`` hides everything after it.
    """
    text = _THINK_BLOCK.sub("", text)
    lowered = text.lower()
    end = lowered.rfind("</think>")
    if end >= 0:
        text = text[end + len("</think>") :]
        lowered = lowered[end + len("</think>") :]
    start = lowered.find("<think>")
    if start >= 0:
        text = text[:start]
    return text


def extract_code(response: str, function_name: str) -> str | None:
    """Returns the code that defines ``function_name`` in ``response``, or None if none does.

    Args:
        response: A raw model answer.
        function_name: The function the task asks for.

    Returns:
        Source code with a top-level ``def function_name`` that parses, or None.
    """
    text = strip_thinking(response[-MAX_RESPONSE_CHARS:])
    blocks = _python_blocks(text)
    candidates = blocks if blocks else [text]
    for candidate in reversed(candidates):
        code = _code_defining(textwrap.dedent(candidate), function_name)
        if code is not None:
            return code
    return None


def missing_code_reason(response: str, function_name: str) -> str:
    """Says why ``extract_code`` found nothing: no such function, or code that does not parse."""
    text = strip_thinking(response[-MAX_RESPONSE_CHARS:])
    name = re.escape(function_name)
    header = re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{name}[ \t]*\(", re.MULTILINE)
    blocks = [b for b in (_python_blocks(text) or [text]) if header.search(b)]
    if not blocks:
        return f"no function named {function_name!r} was found in the response"
    try:
        ast.parse(textwrap.dedent(blocks[-1]))
    except SyntaxError as error:
        return (
            f"the response defines {function_name!r} but its code does not parse: "
            f"{error.msg} (line {error.lineno})"
        )
    except (ValueError, RecursionError, MemoryError) as error:
        return f"the response defines {function_name!r} but its code does not parse: {error}"
    return f"the response has no complete top-level definition of {function_name!r}"


def _python_blocks(text: str) -> list[str]:
    """Returns the contents of fenced Python (or untagged) blocks, in order.

    An unclosed fence at the end (a truncated answer) runs to the end of the text.
    """
    blocks: list[str] = []
    fence: str | None = None
    tag = ""
    lines: list[str] = []
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, tag, lines = match.group(1), match.group(2).lower(), []
        elif match and match.group(1).startswith(fence) and not match.group(2):
            if tag in _PYTHON_TAGS:
                blocks.append("\n".join(lines))
            fence = None
        else:
            lines.append(line)
    if fence is not None and tag in _PYTHON_TAGS:
        blocks.append("\n".join(lines))
    return blocks


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _defines(module: ast.Module, function_name: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef) and node.name == function_name for node in module.body
    )


def _code_defining(source: str, function_name: str) -> str | None:
    module = _parse(source)
    if module is not None:
        return source.strip("\n") + "\n" if _defines(module, function_name) else None
    return _salvage(source, function_name)


def _chunks(lines: list[str]) -> list[tuple[int, int]]:
    """Splits lines into top-level chunks: a line at column 0 and the indented lines after it.

    Blank lines belong to the chunk before them; decorators join the definition they decorate.
    """
    starts = [
        i
        for i, line in enumerate(lines)
        if line.strip() and not line[0].isspace() and not _continues_previous(lines, i)
    ]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    merged = [s for k, s in enumerate(starts) if k == 0 or not lines[starts[k - 1]].startswith("@")]
    return [(s, merged[k + 1] if k + 1 < len(merged) else len(lines)) for k, s in enumerate(merged)]


def _continues_previous(lines: list[str], index: int) -> bool:
    """Whether a column-0 line closes a bracket or block opened above (``)`` or ``]``)."""
    return lines[index][:1] in {")", "]", "}"}


def _salvage(source: str, function_name: str) -> str | None:
    """Finds the last definition of the function whose lines parse, grown by its neighbours."""
    lines = source.splitlines()
    chunks = _chunks(lines)
    header = re.compile(rf"(?:async\s+)?def\s+{re.escape(function_name)}\s*\(")
    for index in reversed(range(len(chunks))):
        start, end = chunks[index]
        first = lines[start]
        if first.startswith("@"):
            first = next((ln for ln in lines[start:end] if not ln.startswith("@")), "")
        if not header.match(first):
            continue
        own = "\n".join(lines[start:end])
        module = _parse(own)
        if module is None or not _defines(module, function_name):
            continue
        low, high = index, index + 1
        while low > 0 and index - low < _MAX_CHUNKS and _joins(lines, chunks[low - 1]):
            low -= 1
        while high < len(chunks) and high - index < _MAX_CHUNKS and _joins(lines, chunks[high]):
            high += 1
        kept = "\n".join(lines[chunks[low][0] : chunks[high - 1][1]])
        if _parse(kept) is None:  # neighbours that parse alone may still clash; keep the function
            kept = own
        return kept.strip("\n") + "\n"
    return None


def _joins(lines: list[str], chunk: tuple[int, int]) -> bool:
    """Whether a neighbouring chunk is code that only defines things (no prose, no calls)."""
    text = "\n".join(lines[chunk[0] : chunk[1]])
    if not text.strip():
        return True
    module = _parse(text)
    return module is not None and all(isinstance(node, _DEFINING) for node in module.body)
