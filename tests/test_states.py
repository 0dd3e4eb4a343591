"""States live in domain/states.py: no state literal anywhere else in the package, in Python or in SQL."""
import ast
import re
from pathlib import Path

from cass_pipelines.domain import states

PACKAGE = Path(__file__).resolve().parent.parent / "cass_pipelines"
# Status words are distinctive: flagged anywhere. The other states share words with ordinary prose and
# names ("open", "budget", "action"), so they are flagged where SQL compares a state column with them.
STATUS_VALUES = {m.value for enum in (states.UnitStatus, states.ActionStatus, states.ReservationStatus) for m in enum}
OTHER_VALUES = {m.value for enum in (states.DeferKind, states.ClaimState, states.DeadLetterState) for m in enum}
SQL = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE|VALUES|CASE)\b")
QUOTED = re.compile(r"'(" + "|".join(sorted(STATUS_VALUES)) + r")'"
                    + r"|\b(?:state|defer_kind)\s*(?:=|<>|!=|IN\s*\()\s*'(" + "|".join(sorted(OTHER_VALUES)) + r")'")
MIGRATIONS = PACKAGE / "store" / "schema.py"   # history: a migration is never edited


def names(tree: ast.AST) -> set[int]:
    """Strings used as names, not values: dict keys, subscripts and `.get()` keys (a column `held`, a count
    `failed` in metadata)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            ids |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            ids.add(id(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
            ids.add(id(node.args[0]))
    return ids


def literals(path: Path) -> list[str]:
    """`"deferred"` as a Python string value, or `'deferred'` inside an SQL string."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    keys = names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys:
            if node.value in STATUS_VALUES:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
            elif SQL.search(node.value):
                found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: SQL {m.group(0).split()[-1]}"
                          for m in QUOTED.finditer(node.value)]
    return found


def test_no_state_literal_outside_the_domain():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py"))
                 if "domain" not in path.parts and path != MIGRATIONS for hit in literals(path)]
    assert offenders == [], "use the enums of cass_pipelines/domain/states.py:\n" + "\n".join(offenders)


def test_the_check_sees_a_literal(tmp_path):
    sample = PACKAGE / "_sample_for_test.py"
    try:
        sample.write_text('X = "deferred"\nQ = "UPDATE work_units SET status = \'failed\'"\n'
                          'R = "SELECT * FROM dead_letters WHERE state = \'open\'"\nS = "an open question"\n')
        assert [hit.split(": ", 1)[1] for hit in literals(sample)] == ["'deferred'", "SQL 'failed'", "SQL 'open'"]
    finally:
        sample.unlink()
