"""Import throughput and memory as a user sees it: generate JSONL files of 10k / 100k / 1M lines and
run `cass-pipelines import-conversations FILE --json` on each, in a fresh initialised CASS_HOME.

The wall is the whole subprocess (interpreter start, imports, schema check, import); peak RSS is
the child's (RUSAGE_CHILDREN of a process that runs only that child). Prints JSON.

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

from machine import cpu_s, machine_after, machine_before

SIZES = [10_000, 100_000, 1_000_000]
CLI = str(Path(sys.executable).parent / "cass-pipelines")   # the installed entry point
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


def main(sizes: list[int]) -> None:
    machine = machine_before()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cass-bench-") as tmp:
        for n in sizes:
            data = Path(tmp) / f"conv_{n}.jsonl"
            generate(data, n)
            env = {**os.environ, "CASS_HOME": str(Path(tmp) / f"home_{n}"), "CASS_LLM": "offline"}
            env.pop("CASS_ACTIONS_FILE", None)
            subprocess.run([CLI, "init"], env=env, check=True, capture_output=True)
            proc = subprocess.run([sys.executable, __file__, "--child", str(data)], env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"import of {n} lines failed:\n{proc.stderr}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            assert res["report"]["messages_added"] == n and res["report"]["bad_line_count"] == 0, res
            rows.append({"lines": n, "mb": round(data.stat().st_size / 1e6, 1), "seconds": round(res["seconds"], 2),
                         "lines_per_s": round(n / res["seconds"]), "cpu_s": round(res["cpu_s"], 2), "peak_rss_mb": round(res["peak_kb"] / 1024)})
            data.unlink()
    print(json.dumps({"bench": "import", "machine": machine_after(machine), "sizes": rows}, indent=1))


def child(path: str) -> None:
    """Run the CLI import as a subprocess of this otherwise idle process; print wall and its peak RSS."""
    started = time.perf_counter()
    proc = subprocess.run([CLI, "import-conversations", path, "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(proc.stderr)
    print(json.dumps({"seconds": seconds, "cpu_s": cpu_s(), "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                      "report": json.loads(proc.stdout)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main([int(a) for a in sys.argv[1:]] or SIZES)
