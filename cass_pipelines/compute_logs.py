"""The compute logs of the shipped dagster.yaml: Dagster's local compute logs (the same files under
$DAGSTER_HOME/storage, read by the UI the same way), captured without child processes.

Dagster's LocalComputeLogManager points a run's stdout and stderr at their files and copies the files
on to the terminal with a `tail -F` per stream and a Python watcher per tail (four processes per run,
each stopped and waited for at the run's end): a run of one empty op took 0.21-0.22 s with it and
0.15 s with this class (bench/bench_memory.py, `floor`, side by side; bench/results/2026-12-02c). This class points the streams at the same files and copies them on
with a thread of the run's process, so nothing is left behind if the process dies. Without this
file's entry in dagster.yaml an instance uses Dagster's own class on the same files.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import IO, Any, Iterator, Sequence

from dagster import Field, Float, StringSource
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._utils import ensure_file, touch_file

COPY_EVERY_S = 0.25   # how often the copy to the terminal looks for more (`tail -F` looks every second)
DRAIN_S = 2.0         # at the capture's end, the longest wait for that copy to catch up


class TeeComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose copy to the terminal is a thread per stream. `base_dir`
    defaults to Dagster's own place, $DAGSTER_HOME/storage."""

    @classmethod
    def config_type(cls) -> Any:
        return {"base_dir": Field(StringSource, is_required=False), "polling_timeout": Field(Float, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> "TeeComputeLogManager":
        config = dict(config_value)
        base_dir = config.pop("base_dir", None) or os.path.join(os.environ["DAGSTER_HOME"], "storage")
        return cls(base_dir, inst_data=inst_data, **config)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with tee(sys.stdout, out), tee(sys.stderr, err):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))   # the UI's sign that the capture is complete


@contextmanager
def tee(stream: IO[str], path: str) -> Iterator[None]:
    """Everything written to `stream`'s file descriptor (Python's writes, a library's or a child
    process's own) goes straight into `path`, as with Dagster's class, and a thread copies what arrives
    there on to where the stream went before. The copy never holds a writer up: a terminal that does
    not read only delays the copy, and a process killed mid-run has its output in the file. A stream
    without a descriptor (a test's capture) is not captured, as in Dagster's class."""
    ensure_file(path)
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    stream.flush()
    before = os.dup(fd)
    with open(path, "ab") as file:   # appending: writers sharing the descriptor never overwrite each other
        start = file.tell()
        os.dup2(file.fileno(), fd)
    done = threading.Event()
    copier = threading.Thread(target=_copy, args=(path, start, before, done), name="cass-compute-log", daemon=True)
    copier.start()
    try:
        yield
    finally:
        stream.flush()
        os.dup2(before, fd)
        done.set()
        copier.join(DRAIN_S)   # (a terminal that does not read: the copy goes on alone, and ends with it)


def _copy(path: str, start: int, out: int, done: threading.Event) -> None:
    """Copy what `path` gains from `start` on to `out` until `done` (and what came before it); the
    descriptor `out` is this thread's to close."""
    try:
        with os.fdopen(out, "wb") as terminal, open(path, "rb") as file:
            file.seek(start)
            while True:
                last = done.is_set()
                end = os.fstat(file.fileno()).st_size   # what the file has gained so far, no more
                while chunk := file.read(min(65536, max(0, end - file.tell()))):
                    terminal.write(chunk)
                terminal.flush()
                if last:
                    return
                done.wait(COPY_EVERY_S)
    except OSError:   # where the stream went is gone (a closed terminal): the file has it all
        pass
