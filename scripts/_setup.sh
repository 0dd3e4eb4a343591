# Sourced by scripts/demo.sh and scripts/test.sh: create .venv (Python >= 3.11) and install the project
# with its dev extra. Re-running is cheap: the install is redone only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    PY="$(find_python)"
    echo "==> creating .venv with $("$PY" --version)"
    "$PY" -m venv .venv
fi

STAMP=".venv/.cass-installed"
WANT="$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "==> installing cass-pipelines and its dev tools into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input -e ".[dev]"
    echo "$WANT" > "$STAMP"
fi

# A regular install is compiled to bytecode by pip; an editable one only at first import, and not at
# all where PYTHONDONTWRITEBYTECODE is set (as on these machines): then every command compiles the
# package from source again (~50 ms of a 250 ms read command). Quick when nothing changed.
.venv/bin/python -m compileall -q -j 0 cass_pipelines >/dev/null
