"""Atomic writes and tolerant reads (.json / .json.gz) shared by every step."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import gzip
import json
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

from qabench.errors import InputError


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_umask_gives(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp make 0600 files and 0700 directories whatever the umask; give the finished
    output the mode a plain open()/mkdir() would (0644/0755 under umask 022, 0664/0775 under 002).
    A directory's whole tree: libraries save through temporaries of their own (transformers writes
    model.safetensors 0600). An executable file stays executable (for whom the umask allows)."""
    mask = current_umask()
    if not directory:
        executable = os.stat(path).st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)
        return
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                os.chmod(file, (0o777 if os.stat(file).st_mode & 0o111 else 0o666) & ~mask)


def _remove_stale_temporaries(path: Path, directory: bool) -> None:
    """Temporaries of ``path`` that a killed writer left (``.NAME.XXXXXXXX[.tmp]``): a job killed with
    -9 runs no cleanup, and a half-saved model directory is large. Only one job writes an output at a
    time (Snakemake, and jobs stop when their Snakemake dies), so those that exist now are stale."""
    pattern = re.compile(re.escape(f".{path.name}.") + (r"[A-Za-z0-9_]{8}$" if directory else r"[A-Za-z0-9_]{8}\.tmp$"))
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
        if pattern.match(stale.name):
            if directory and stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            elif not directory and stale.is_file():
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.
    The file gets the permissions the umask gives a new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path, directory=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            _as_umask_gives(tmp_path, directory=False)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds.
    The directory gets the permissions the umask gives a new directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path, directory=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        _as_umask_gives(tmp, directory=True)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Strict JSON: NaN or infinity is an error here rather than a file other readers reject."""
    text = json.dumps(obj, indent=indent, sort_keys=False, ensure_ascii=False, allow_nan=False)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_parquet(path: str | os.PathLike, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_json(path: str | os.PathLike) -> Any:
    """Read a .json or .json.gz file; any decoding problem becomes a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(path, f"corrupt gzip data ({err})") from None
    elif path.suffix == ".gz":
        raise InputError(path, "named .gz but is not gzip-compressed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(path, f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None


def first_line(err: BaseException) -> str:
    """An exception as one short line: its first line of text, else its type's name."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn any failure to decode ``path`` inside the block into one InputError naming it (a truncated
    or garbage parquet file raises pyarrow's errors, a bad table pandas' ValueError/TypeError/KeyError)."""
    try:
        yield
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError) as err:
        raise InputError(path, f"not a readable {what} ({first_line(err)})") from None
    except Exception as err:  # pyarrow.ArrowException and kin that derive from Exception only
        if type(err).__module__.startswith(("pyarrow", "fastparquet", "safetensors")):
            raise InputError(path, f"not a readable {what} ({first_line(err)})") from None
        raise


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None, what: str = "parquet table"):
    """A parquet table; a missing, truncated or garbage file, or missing ``columns``, is one InputError."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    with reading(path, f"{what} (parquet)"):
        frame = pd.read_parquet(path)
    missing = [c for c in columns or [] if c not in frame.columns]
    if missing:
        raise InputError(path, f"not a {what}: missing columns {missing}")
    return frame


# Numbers given on the command line (their natural home would be qabench/cli.py): each refusal is one
# InputError naming the option, before any file is read or written.

def check_positive(option: str, value: float | int | None) -> None:
    """``value`` (None: not given) must be a finite number above 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(option, f"must be a positive number, got {value}")


def check_fraction(option: str, value: float | None) -> None:
    """``value`` (None: not given) must be a share, in [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:  # also refuses nan
        raise InputError(option, f"must be between 0 and 1, got {value}")


def check_finite(option: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise InputError(option, f"must be a finite number, got {value}")


# ------------------------------------------------------------------ jobs and their Snakemake

log = logging.getLogger(__name__)


def _process_info(pid: int) -> tuple[int, str, list[str]] | None:
    """(parent pid, start time, argv) of a Linux process, None when it is gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[19], [a.decode(errors="replace") for a in argv if a]


def _is_snakemake(argv: list[str]) -> bool:
    names = [os.path.basename(a) for a in argv[:3]]
    return "snakemake" in names or (len(argv) > 2 and argv[1] == "-m" and argv[2] == "snakemake")


def snakemake_ancestor() -> tuple[int, str] | None:
    """(pid, start time) of the Snakemake process this one runs under (a job's shell and perhaps
    torchrun in between), None when there is none."""
    pid = os.getppid()
    while pid > 1:
        info = _process_info(pid)
        if info is None:
            return None
        parent, started, argv = info
        if _is_snakemake(argv):
            return pid, started
        pid = parent
    return None


def stop_with_snakemake(poll_s: float = 0.5, grace_s: float = 30.0) -> threading.Thread | None:
    """A job whose Snakemake is killed (kill -9 of Snakemake alone) would go on writing its outputs with
    nobody to record them, and race the job a rerun starts. Under Snakemake, watch it: when it is gone,
    send this process SIGTERM, which (from here on) raises SystemExit in the main thread: atomic writes
    clean up, nothing is moved into place, resume state stays; if that has not ended it within
    ``grace_s``, exit hard. Call from the main thread. Returns the watching thread, or None when not
    under Snakemake (nothing is changed then)."""
    ancestor = snakemake_ancestor()
    if ancestor is None:
        return None
    pid, started = ancestor

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            info = _process_info(pid)
            if info is None or info[1] != started:
                break
        log.error("Snakemake (pid %d) is gone: stopping this job so that it writes no output; "
                  "rerun Snakemake (see docs/reliability.md) to resume", pid)
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal: it also ends a sleep or a wait
        time.sleep(grace_s)
        os._exit(3)

    def stop(signum, frame):  # in the main thread: finally blocks run, atomic writes are undone
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    thread = threading.Thread(target=watch, name="stop-with-snakemake", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, wait_s: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (its ``.lock`` file): a second process that would write
    the same resume state (an orphan still stopping, a second Snakemake) waits up to ``wait_s`` for
    the first to end, then gives up with one InputError. The kernel drops the lock when its holder
    dies, even by kill -9."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InputError(directory, f"another process has been using it for over {wait_s:.0f} s "
                                                "(a second run of the same job?)") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
