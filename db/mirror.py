"""The ``runs/<id>/events.jsonl`` mirror: a line-per-event copy of the database's event log.

The database is the truth; the mirror follows it. Writers append after their commit, so
lines from two processes can arrive out of order; every append therefore runs under an
exclusive ``flock`` of the file, reads the mirror's last seq, fills any gap from the
database first and skips lines already written. The mirror is thus always a contiguous
prefix of the run's events: never ahead, never out of order, never duplicated. A line torn
by a writer that died mid-write is cut off by the next writer (under the lock no live
writer can be mid-line).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

#: Reads committed lines of a run: (run_id, after_seq, upto_seq) -> [(seq, line bytes)].
LineReader = Callable[[str, int, int], list[tuple[int, bytes]]]


class _SeqOnly(msgspec.Struct):
    seq: int


_decode_seq = msgspec.json.Decoder(_SeqOnly).decode
_TAIL_CHUNK = 64 * 1024


@dataclass
class _Handle:
    fd: int
    inode: int
    path: str
    size: int = -1  # size at which last_seq was known; -1 = unknown
    last_seq: int = 0


@dataclass(frozen=True)
class MirrorState:
    """What a mirror file holds: its last complete seq and whether a torn tail was cut."""

    last_seq: int
    repaired_tail: bool


class JsonlMirror:
    """Appends committed event lines to per-run ``events.jsonl`` files, in seq order."""

    def __init__(self, path_for: Callable[[str], Path], read_lines: LineReader, cache: int = 128):
        self._path_for = path_for
        self._read_lines = read_lines
        self._handles: OrderedDict[str, _Handle] = OrderedDict()
        self._cache_size = cache
        # flock excludes other processes; this lock serialises our own threads (flock is
        # per open file description, which our threads share).
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every cached file descriptor."""
        with self._lock:
            for handle in self._handles.values():
                os.close(handle.fd)
            self._handles.clear()

    def append(self, run_id: str, lines: Sequence[tuple[int, bytes]]) -> None:
        """Append ``lines`` (seq-ordered, committed) to the run's mirror, filling gaps first."""
        if not lines:
            return
        with self._lock, self._locked(run_id) as handle:
            last = self._last_seq(handle)
            first_new = lines[0][0]
            chunks: list[bytes] = []
            if last < first_new - 1:
                chunks.extend(line for _, line in self._read_lines(run_id, last, first_new - 1))
            chunks.extend(line for seq, line in lines if seq > last)
            if chunks:
                data = b"".join(chunks)
                _write_all(handle.fd, data)
                handle.size += len(data)
            handle.last_seq = max(last, lines[-1][0])

    def sync(self, run_id: str, upto_seq: int) -> MirrorState:
        """Make the mirror hold exactly seqs 1..``upto_seq`` (the reconciler's repair step).

        Lines past ``upto_seq`` (a mirror ahead of the database) are cut; missing lines are
        appended from the database; a torn last line is removed first.
        """
        with self._lock, self._locked(run_id) as handle:
            size_before = os.fstat(handle.fd).st_size
            last = self._last_seq(handle)
            repaired = handle.size != size_before
            if last > upto_seq:
                self._truncate_after(handle, upto_seq)
                last = upto_seq
                repaired = True
            if last < upto_seq:
                data = b"".join(line for _, line in self._read_lines(run_id, last, upto_seq))
                _write_all(handle.fd, data)
                handle.size += len(data)
            handle.last_seq = upto_seq
            return MirrorState(last_seq=upto_seq, repaired_tail=repaired)

    def rewrite(self, run_id: str, upto_seq: int) -> None:
        """Replace the mirror with a fresh copy of seqs 1..``upto_seq`` from the database."""
        path = self._path_for(run_id)
        data = b"".join(line for _, line in self._read_lines(run_id, 0, upto_seq))
        with self._lock, self._locked(run_id) as handle:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            # Our cached descriptor points at the replaced inode: the next lock reopens.
            handle.inode = -1

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self, run_id: str) -> Iterator[_Handle]:
        while True:
            handle = self._open(run_id)
            fcntl.flock(handle.fd, fcntl.LOCK_EX)
            try:
                current = os.stat(handle.path).st_ino  # noqa: PTH116 - str path, hot path
            except FileNotFoundError:
                current = -1
            if current == handle.inode:
                break
            # The file was replaced (by rewrite) or removed since we opened it: reopen.
            fcntl.flock(handle.fd, fcntl.LOCK_UN)
            self._forget(run_id, handle)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fd, fcntl.LOCK_UN)

    def _open(self, run_id: str) -> _Handle:
        handle = self._handles.get(run_id)
        if handle is not None:
            self._handles.move_to_end(run_id)
            return handle
        path = self._path_for(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        handle = _Handle(fd=fd, inode=os.fstat(fd).st_ino, path=str(path))
        self._handles[run_id] = handle
        while len(self._handles) > self._cache_size:
            _, old = self._handles.popitem(last=False)
            os.close(old.fd)
        return handle

    def _forget(self, run_id: str, handle: _Handle) -> None:
        if self._handles.get(run_id) is handle:
            del self._handles[run_id]
        os.close(handle.fd)

    def _last_seq(self, handle: _Handle) -> int:
        size = os.fstat(handle.fd).st_size
        if size == handle.size:
            return handle.last_seq
        last, complete_size = _scan_tail(handle.fd, size)
        if complete_size != size:
            os.ftruncate(handle.fd, complete_size)
        handle.size = complete_size
        handle.last_seq = last
        return last

    def _truncate_after(self, handle: _Handle, upto_seq: int) -> None:
        size = os.fstat(handle.fd).st_size
        keep = 0
        for seq, end in _iter_lines(handle.fd, size):
            if seq > upto_seq:
                break
            keep = end
        os.ftruncate(handle.fd, keep)
        handle.size = keep
        handle.last_seq = upto_seq


def read_mirror(path: Path) -> list[int]:
    """Return the seqs of the complete lines of a mirror file (for checks and tests)."""
    if not path.exists():
        return []
    fd = os.open(path, os.O_RDONLY)
    try:
        return [seq for seq, _ in _iter_lines(fd, os.fstat(fd).st_size)]
    finally:
        os.close(fd)


def mirror_is_sound(path: Path) -> bool:
    """True when every complete line of the mirror parses and seqs run 1, 2, 3, … (a torn
    last line is allowed: appending repairs it). False means it must be rewritten."""
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        parsed_up_to = 0
        for expected, (seq, line_end) in enumerate(_iter_lines(fd, size), start=1):
            if seq != expected:
                return False
            parsed_up_to = line_end
        # Every complete line must have parsed: a damaged line stops _iter_lines early.
        return parsed_up_to == _last_newline_end(fd, size)
    finally:
        os.close(fd)


def _last_newline_end(fd: int, size: int) -> int:
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(fd, end - start, start)
        position = chunk.rfind(b"\n")
        if position != -1:
            return start + position + 1
        end = start
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _scan_tail(fd: int, size: int) -> tuple[int, int]:
    """Return (seq of the last complete line, size up to and including its newline)."""
    end = size
    buffer = b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        buffer = os.pread(fd, end - start, start) + buffer
        end = start
        last_newline = buffer.rfind(b"\n")
        if last_newline == -1:
            continue
        complete = end + last_newline + 1
        previous_newline = buffer.rfind(b"\n", 0, last_newline)
        if previous_newline == -1 and end > 0:
            continue  # the whole last line is not in the buffer yet
        line = buffer[previous_newline + 1 : last_newline]
        try:
            return _decode_seq(line).seq, complete
        except msgspec.DecodeError:
            # A corrupt complete line: treat everything from it on as torn.
            return _scan_tail(fd, end + previous_newline + 1) if previous_newline >= 0 else (0, 0)
    return 0, 0


def _iter_lines(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield (seq, end offset) for each complete, parseable line from the start of the file."""
    offset = 0
    pending = b""
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            break
        base = offset - len(pending)
        pending += chunk
        offset += len(chunk)
        position = 0
        while True:
            newline = pending.find(b"\n", position)
            if newline == -1:
                break
            try:
                seq = _decode_seq(pending[position:newline]).seq
            except msgspec.DecodeError:
                return
            yield seq, base + newline + 1
            position = newline + 1
        pending = pending[position:]
