"""docs/permissions.md and the tests agree: every row id of its tables is checked by at least
one test marked `@pytest.mark.rule(<id>, …)`, and every id a test names is a row of the docs.

The marks are read from the test modules' source with `ast`, so this holds without
collecting or running the other tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).parent
DOC = TESTS.parent / "docs" / "permissions.md"

# A table row whose first cell is a row id: `| S3 | …`. Header (`| id |`), separator
# (`|---|`) and the rows of the other tables (`| structure settings | …`) do not match.
ROW_ID = re.compile(r"^\|\s*([A-Z][1-9][0-9]*)\s*\|")
ID = re.compile(r"[A-Z][1-9][0-9]*")


def documented_ids(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := ROW_ID.match(line))]


def _is_rule_mark(node: ast.AST) -> bool:
    """`pytest.mark.rule` itself (called or not)."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "rule"
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "pytest"
    )


def rule_marks(source: str, filename: str) -> tuple[dict[str, set[str]], list[str]]:
    """The ids each `pytest.mark.rule(...)` decorator of a test function names, by id →
    "module::test", and the problems found: a mark that is not a decorator of a test
    function, has no id, or names an id by anything but a string literal."""
    tree = ast.parse(source, filename)
    found: dict[str, set[str]] = {}
    problems: list[str] = []
    placed: set[int] = set()  # the `pytest.mark.rule` nodes called as a test's decorator
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not node.name.startswith("test_"):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and _is_rule_mark(decorator.func)):
                continue
            placed.add(id(decorator.func))
            where = f"{filename}::{node.name}"
            if not decorator.args or decorator.keywords:
                problems.append(f"{where}: pytest.mark.rule takes one or more ids, positionally")
            for arg in decorator.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and ID.fullmatch(arg.value):
                    found.setdefault(arg.value, set()).add(where)
                else:
                    problems.append(f"{where}: not a row id literal: {ast.unparse(arg)}")
    for node in ast.walk(tree):
        if _is_rule_mark(node) and id(node) not in placed:
            line = getattr(node, "lineno", "?")
            problems.append(f"{filename}:{line}: pytest.mark.rule used elsewhere than on a test function")
    return found, problems


def referenced_ids() -> tuple[dict[str, set[str]], list[str]]:
    found: dict[str, set[str]] = {}
    problems: list[str] = []
    for path in sorted(TESTS.glob("test_*.py")):
        marks, trouble = rule_marks(path.read_text(encoding="utf-8"), path.name)
        for rule, tests in marks.items():
            found.setdefault(rule, set()).update(tests)
        problems += trouble
    return found, problems


def test_the_documented_ids_are_read_from_the_tables() -> None:
    text = DOC.read_text(encoding="utf-8")
    ids = documented_ids(text)
    assert "A1" in ids, "no row id found: has the table format of docs/permissions.md changed?"
    assert len(ids) == len(set(ids)), f"ids documented twice: {sorted({i for i in ids if ids.count(i) > 1})}"
    # A first cell that looks like an id once decorated (`S3`, **S3**, s3) would be missed: none may.
    loose = re.compile(r"^\|\s*[`*_]*([A-Za-z][0-9]+)[`*_]*\s*\|")
    lookalikes = [line for line in text.splitlines() if loose.match(line) and not ROW_ID.match(line)]
    assert not lookalikes, f"table rows whose id is not written `| X9 |`: {lookalikes}"


def test_the_parser_reads_rows_only() -> None:
    text = "\n".join(
        [
            "| id | channel | result |",
            "|---|---|---|",
            "| S1 | `structure:<S>` | allow |",
            "|S12|x|",
            "| change | announced |",
            "| logout, password change | `sessions` (I1, I2) |",
            "Rows S3 and T2 are named in prose.",
            "- | A1 | in a list item",
        ]
    )
    assert documented_ids(text) == ["S1", "S12"]


def test_the_mark_reader_finds_decorators_and_flags_the_rest() -> None:
    source = "\n".join(
        [
            "import pytest",
            '@pytest.mark.rule("S1", "P1")',
            '@pytest.mark.parametrize("x", [1])',
            "def test_a(x: int) -> None: ...",
            '@pytest.mark.rule("T5")',
            "async def test_b() -> None: ...",
            "RULE = 'S2'",
            "@pytest.mark.rule(RULE)",
            "def test_c() -> None: ...",
            '@pytest.mark.rule("S3")',
            "def helper() -> None: ...",
            'pytestmark = pytest.mark.rule("S4")',
        ]
    )
    found, problems = rule_marks(source, "m.py")
    assert found == {"S1": {"m.py::test_a"}, "P1": {"m.py::test_a"}, "T5": {"m.py::test_b"}}
    assert len(problems) == 3
    assert "m.py::test_c: not a row id literal: RULE" in problems


def test_every_row_is_checked_by_a_test_and_every_marked_id_is_a_row() -> None:
    documented = set(documented_ids(DOC.read_text(encoding="utf-8")))
    found, problems = referenced_ids()
    assert not problems, "\n".join(problems)
    missing = sorted(documented - set(found), key=lambda i: (i[0], int(i[1:])))
    stale = {rule: sorted(found[rule]) for rule in sorted(set(found) - documented)}
    assert (missing, stale) == ([], {}), (
        f"rows of docs/permissions.md no test is marked with: {missing or 'none'}; "
        f"ids marked on tests but not in the docs: {stale or 'none'}"
    )
