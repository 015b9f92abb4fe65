"""One writer per run folder: an exclusive lock that every writing ``digr`` command holds while it runs.

The lock is ``{run}/.lock``, taken with the well-kept ``filelock`` library (``flock`` on POSIX), so the operating system
releases it when the holding process ends, however it ends (a SIGKILL included): a stale lock never blocks a rerun.
Beside it, ``{run}/.lock.json`` says who holds it (command, process id, host, start time) so that a refused second
writer can name the holder. Whoever takes the lock removes the temporary files (``.*.tmp``) a killed writer left.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from digr.checkpoint import write_json_atomic
from digr.errors import NotWritableError, RunLockedError, StageError

__all__ = ["RunLock"]


class RunLock:
    """Exclusive write lock of one run folder, as a context manager: ``with RunLock(folder_root): ...``.

    :param root: the run folder (created if it does not exist yet).
    :param command: what the holder is doing, shown to a refused second writer (default: this process's command line).
    :param create: create the run folder if it does not exist (commands that start a run); otherwise a missing folder
        is an error.
    :raises RunLockedError: another process holds the lock (its command and process id are named); nothing is written.
    :raises NotWritableError: the run folder cannot be written (read-only file system or missing permission).
    :raises StageError: the folder does not exist and ``create`` is False.
    """

    def __init__(self, root: str | Path, command: str | None = None, create: bool = True):
        self.root, self.create = Path(root), create
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._lock: FileLock | None = None

    @property
    def path(self) -> Path:
        return self.root / ".lock"

    @property
    def holder_path(self) -> Path:
        return self.root / ".lock.json"

    def holder(self) -> dict:
        """What ``.lock.json`` says of the current holder ({} if it cannot be read)."""
        try:
            return json.loads(self.holder_path.read_text())
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> RunLock:
        if not self.create and not self.root.is_dir():
            raise StageError(f"no run folder {self.root}; run `digr run CONFIG` (or `digr teacher` and `digr distill`) first")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # no soft fallback: an existence-file lock would outlive a killed holder
            lock = FileLock(self.path, timeout=0, thread_local=False, fallback_to_soft=False)
            lock.acquire()
        except Timeout:
            h = self.holder()
            who = f"`{h.get('command', '?')}` (process {h.get('pid', '?')} on {h.get('host', '?')}"
            who += f", since {h.get('started', '?')})"
            raise RunLockedError(
                f"run folder {self.root} is in use by {who}; one command writes to a run at a time. Wait for it to end "
                "(or stop it), then rerun; or give this run another `name:`. Nothing was written."
            ) from None
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise NotWritableError(
                    e.errno,
                    f"run folder {self.root} is not writable ({os.strerror(e.errno)}); make it writable, or set another "
                    "run_dir/name. Nothing was written.",
                ) from e
            raise
        self._lock = lock
        info = {"command": self.command, "pid": os.getpid(), "host": socket.gethostname()}
        info["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            write_json_atomic(self.holder_path, info)
            for stale in self.root.rglob(".*.tmp"):  # temporary files of a killed writer (only a writer makes them)
                stale.unlink(missing_ok=True)
        except BaseException:
            lock.release()
            self._lock = None
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self.holder_path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
