"""The layers point one way (pyproject's import-linter contracts), and a broken contract is reported."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([LINT_IMPORTS, "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_layer_contract_is_kept():
    done = lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract is live: a copy of the package whose domain imports the store fails it, naming the line."""
    import shutil

    shutil.copytree(ROOT / "cass_pipelines", tmp_path / "cass_pipelines",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    rules = tmp_path / "cass_pipelines" / "domain" / "phases.py"
    rules.write_text(rules.read_text() + "\nfrom cass_pipelines.store.db import Store  # noqa: E402,F401\n")
    done = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})
    assert done.returncode != 0
    assert "cass_pipelines.domain.phases -> cass_pipelines.store.db" in done.stdout
