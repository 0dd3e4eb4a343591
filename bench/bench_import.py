"""Import throughput and memory: generate JSONL files of 10k / 100k / 1M lines and import each into a
fresh CASS_HOME through `import_file` (the code path of `cass-pipelines import-conversations`).

Each size runs in its own subprocess so its peak RSS (ru_maxrss) is its own.

    .venv/bin/python bench/bench_import.py                 # 10k, 100k, 1M
    .venv/bin/python bench/bench_import.py 10000 50000     # chosen sizes
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

SIZES = [10_000, 100_000, 1_000_000]
WORDS = ("the quick brown fox jumps over a lazy dog while cass wonders about recursion memory "
         "and the shape of a good question").split()


def generate(path: Path, lines: int, per_conversation: int = 20) -> None:
    """Messages of each conversation are interleaved with others (spread over the file)."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    conversations = max(1, lines // per_conversation)
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            conv, seq = i % conversations, i // conversations
            content = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(30))
            out.write(json.dumps({
                "conversation_id": f"conv_{conv:07d}", "message_id": f"m{seq:04d}",
                "role": "user" if seq % 2 == 0 else "assistant", "content": content,
                "created_at": (start + timedelta(minutes=seq, seconds=conv % 3600)).isoformat(),
                **({"title": f"Conversation {conv}"} if seq == 0 else {})}) + "\n")


def child(path: str) -> None:
    """Import one file into the CASS_HOME of the environment; print a JSON result line."""
    from cass_pipelines.cli.setup_cmds import import_file
    from cass_pipelines.core.settings import load_settings
    from cass_pipelines.store.db import Store
    from cass_pipelines.store.schema import migrate

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_path)
    migrate(store)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    report = import_file(store, Path(path))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kb": peak, "base_kb": base,
                      "messages": report.messages_added, "bad": report.bad_line_count}))


def main(sizes: list[int]) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cass-bench-") as tmp:
        for n in sizes:
            data = Path(tmp) / f"conv_{n}.jsonl"
            generate(data, n)
            env = {**os.environ, "CASS_HOME": str(Path(tmp) / f"home_{n}"), "CASS_LLM": "offline"}
            env.pop("CASS_ACTIONS_FILE", None)
            proc = subprocess.run([sys.executable, __file__, "--child", str(data)], env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"import of {n} lines failed:\n{proc.stderr}")
            out = proc.stdout
            res = json.loads(out.strip().splitlines()[-1])
            assert res["messages"] == n and res["bad"] == 0, res
            mb = data.stat().st_size / 1e6
            rows.append([f"{n:,}", f"{mb:.1f}", f"{res['seconds']:.1f}", f"{n / res['seconds']:,.0f}",
                         f"{res['peak_kb'] / 1024:.0f}", f"{(res['peak_kb'] - res['base_kb']) / 1024:.0f}"])
            data.unlink()
    header = ["lines", "MB", "seconds", "lines/s", "peak RSS MB", "RSS growth MB"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main([int(a) for a in sys.argv[1:]] or SIZES)
