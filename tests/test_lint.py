"""No unused imports or variables, no undefined names, imports in order (ruff), and types that check (mypy)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "cass_pipelines", "tests", "bench"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_type_checker_passes():
    """mypy over the package, at the strictness pyproject.toml sets ([tool.mypy])."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_insert_names_its_columns():
    """`INSERT INTO t VALUES (...)` shifts values silently when a column is added; every INSERT in the
    package lists its columns (migrations, which are history, excepted)."""
    import re

    bare = re.compile(r"INSERT\s+(?:OR\s+\w+\s+)?INTO\s+\w+\s+(?:VALUES|SELECT)\b", re.IGNORECASE)
    offenders = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in sorted((ROOT / "cass_pipelines").rglob("*.py"))
                 if path.name != "schema.py" for m in bare.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []
