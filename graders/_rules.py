"""Static rules for candidate code, checked on its AST before it runs.

The rules reproduce the workshop's: imports only from a short list of modules, no calls to
``exec``/``eval``/``compile``/``__import__``/``open``/``input``, and no reaching into the
interpreter through ``__globals__``/``__builtins__``-style names. They stop honest mistakes and
obvious escapes early with a clear message; the sandbox is the real defence.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = ["NO_RULES", "WORKSHOP_RULES", "CodeRules", "check_rules"]

_DUNDER = re.compile(r"__\w+__")
_HARMLESS_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__", "__doc__"})
_HARMLESS_DUNDER_NAMES = frozenset({"__name__", "__doc__"})
_HARMLESS_DUNDER_STRINGS = frozenset({"__main__"})
# Attributes that reach frames, the module table or the OS from inside allowed modules.
_INTERPRETER_ATTRIBUTES = frozenset(
    {
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "tb_frame",
        "tb_next",
        "_getframe",
        "_current_frames",
        "settrace",
        "setprofile",
        "addaudithook",
        "modules",
        "meta_path",
        "path_hooks",
        "os",
        "posix",
        "subprocess",
        "builtins",
        "importlib",
        "socket",
        "shutil",
        "ctypes",
    }
)


@dataclass(frozen=True)
class CodeRules:
    """What candidate code may use.

    Attributes:
        allowed_imports: Top-level modules that may be imported; None allows any.
        banned_names: Builtins that may not be used (called or referred to).
        ban_introspection: Forbid dunder attributes and names (``__globals__``,
            ``__builtins__``, ``__class__``...), dunder strings, and attributes that reach
            frames, ``sys.modules`` or the OS from an allowed module (``logging.os``).
    """

    allowed_imports: frozenset[str] | None
    banned_names: frozenset[str]
    ban_introspection: bool


WORKSHOP_RULES = CodeRules(
    allowed_imports=frozenset(
        {"datetime", "heapq", "math", "json", "logging", "typing", "sys", "dateutil"}
    ),
    banned_names=frozenset({"exec", "eval", "compile", "__import__", "open", "input"}),
    ban_introspection=True,
)
"""The workshop's challenge rules."""

NO_RULES = CodeRules(allowed_imports=None, banned_names=frozenset(), ban_introspection=False)
"""No static rules: only the sandbox applies."""


def check_rules(code: str, rules: CodeRules) -> tuple[str, ...]:
    """Returns one message per rule violation in ``code`` (empty when it complies).

    Each message starts with the line number and names the rule broken.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        line = getattr(error, "lineno", None) or 1
        return (f"line {line}: syntax error: {error}",)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        found.extend(_violations(node, rules))
    return tuple(f"line {line}: {message}" for line, message in sorted(set(found)))


def _violations(node: ast.AST, rules: CodeRules) -> list[tuple[int, str]]:
    line = getattr(node, "lineno", 0)
    out: list[tuple[int, str]] = []
    if isinstance(node, ast.Import):
        out.extend((line, m) for a in node.names if (m := _import_problem(a.name, 0, rules)))
    elif isinstance(node, ast.ImportFrom):
        problem = _import_problem(node.module or "", node.level, rules)
        if problem:
            out.append((line, problem))
        if rules.ban_introspection:
            out.extend(
                (line, f"imports {a.name!r}: reaching into the interpreter is not allowed")
                for a in node.names
                if a.name in _INTERPRETER_ATTRIBUTES or _DUNDER.fullmatch(a.name)
            )
    elif isinstance(node, ast.Name):
        if node.id in rules.banned_names:
            out.append((line, f"uses {node.id}(): not allowed ({_listing(rules.banned_names)})"))
        elif (
            rules.ban_introspection
            and _DUNDER.fullmatch(node.id)
            and node.id not in _HARMLESS_DUNDER_NAMES
        ):
            out.append((line, f"uses the name {node.id}: dunder names are not allowed"))
    elif isinstance(node, ast.Attribute) and rules.ban_introspection:
        if _DUNDER.fullmatch(node.attr) and node.attr not in _HARMLESS_DUNDER_ATTRIBUTES:
            out.append((line, f"uses .{node.attr}: dunder attributes are not allowed"))
        elif node.attr in _INTERPRETER_ATTRIBUTES:
            out.append((line, f"uses .{node.attr}: reaching into the interpreter is not allowed"))
    elif (
        isinstance(node, ast.Constant)
        and rules.ban_introspection
        and isinstance(node.value, str)
        and _DUNDER.fullmatch(node.value)
        and node.value not in _HARMLESS_DUNDER_STRINGS
    ):
        out.append((line, f"uses the string {node.value!r}: dunder names are not allowed"))
    return out


def _import_problem(module: str, level: int, rules: CodeRules) -> str | None:
    if rules.allowed_imports is None:
        return None
    if level:
        return "uses a relative import: not allowed"
    top = module.split(".")[0]
    if top in rules.allowed_imports:
        return None
    return f"imports {module!r}: only {_listing(rules.allowed_imports)} may be imported"


def _listing(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))
