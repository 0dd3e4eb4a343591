"""The compute logs of the shipped dagster.yaml: Dagster's local compute logs (the same files under
$DAGSTER_HOME/storage, read by the UI the same way), captured without child processes.

Dagster's LocalComputeLogManager mirrors a run's stdout and stderr to their files with a `tail -F`
per stream and a Python watcher per tail (four processes per run, each stopped and waited for at the
run's end): 30-85 ms of wall and 40-60 ms of CPU per run here (bench/bench_memory.py, `floor`). This
class copies each stream through a pipe and a thread of the run's process into its file and on to
where the stream went before, so nothing is left behind if the process dies. Without this file's
entry in dagster.yaml an instance uses Dagster's own class on the same files.
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

DRAIN_S = 5.0   # at the capture's end, the longest wait for the copy to reach the end of what was written


class TeeComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager whose capture is a pipe and a copying thread per stream. `base_dir`
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
    """Everything written to `stream`'s file descriptor (Python's writes and a library's own) goes to
    the end of `path` and still to where it went before. A stream without a descriptor (a test's
    capture) is not captured, as in Dagster's own class."""
    ensure_file(path)
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    stream.flush()
    before = os.dup(fd)
    read_end, write_end = os.pipe()
    copier = threading.Thread(target=_copy, args=(read_end, path, before), name="cass-compute-log", daemon=True)
    copier.start()
    os.dup2(write_end, fd)
    os.close(write_end)
    try:
        yield
    finally:
        stream.flush()
        os.dup2(before, fd)   # the pipe's last writer closed: the copy reads to its end
        copier.join(DRAIN_S)
        if not copier.is_alive():   # (a child process still holding the pipe keeps it; it ends with it)
            os.close(read_end)
            os.close(before)


def _copy(read_end: int, path: str, before: int) -> None:
    with open(path, "ab", buffering=0) as file:
        while chunk := os.read(read_end, 65536):
            file.write(chunk)
            try:
                _write_all(before, chunk)
            except OSError:   # where the stream went is gone (a closed terminal): the file still gets it
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
