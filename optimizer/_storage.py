"""Where studies live: the default journal under ``runs/<study>/``, or any Optuna storage URL."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._file import BaseJournalFileLock, get_lock_file
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from optimizer._errors import UserError

__all__ = [
    "DEFAULT_RUNS_DIR",
    "JOURNAL_FILE",
    "FlockJournalLock",
    "Journal",
    "JournalFile",
    "StorageError",
    "StudyNotFoundError",
    "batched_writes",
    "default_journal_path",
    "load_study",
    "open_storage",
    "safe_url",
    "storage_lock",
    "study_names",
]

DEFAULT_RUNS_DIR = Path("runs")
JOURNAL_FILE = "journal.log"
_JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
_LOCK_SUFFIX = ".moa-lock"

LockFactory = Callable[[], AbstractContextManager[None]]
_LOCKS: weakref.WeakKeyDictionary[BaseStorage, LockFactory] = weakref.WeakKeyDictionary()


class FlockJournalLock(BaseJournalFileLock):
    """The journal's write lock as an ``fcntl`` lock, which the kernel drops when its process dies.

    Optuna's default symlink lock outlives a process killed with SIGKILL while it was
    appending, and every later process then waits out a 30 s grace period before breaking
    it. All processes writing one journal must use the same kind of lock; moa-opt always
    does (through :func:`open_storage`).

    Args:
        filepath: The journal file; the lock file is ``<filepath>.flock``.
    """

    def __init__(self, filepath: str) -> None:
        self._lock_file = filepath + ".flock"
        self._threads = threading.Lock()
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Blocks until this process holds the lock."""
        self._threads.acquire()
        try:
            handle = open(self._lock_file, "a")  # noqa: SIM115 - closed in release()
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        self._handle = handle
        return True

    def release(self) -> None:
        """Releases the lock."""
        handle, self._handle = self._handle, None
        try:
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        finally:
            self._threads.release()


_UNSYNCED_OPS = frozenset(
    {
        JournalOperation.SET_TRIAL_PARAM,
        JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
        JournalOperation.SET_TRIAL_USER_ATTR,
        JournalOperation.SET_TRIAL_SYSTEM_ATTR,
    }
)


def _needs_sync(log: dict[str, Any]) -> bool:
    """Whether ``log`` finishes a trial or changes a study (the records worth an fsync)."""
    op = log["op_code"]
    if op in _UNSYNCED_OPS:
        return False
    if op in (JournalOperation.CREATE_TRIAL, JournalOperation.SET_TRIAL_STATE_VALUES):
        return bool(log.get("state", TrialState.RUNNING) != TrialState.RUNNING)
    return True


class JournalFile(JournalFileBackend):
    """Optuna's journal file, with an fsync only where a trial finishes or a study changes.

    Optuna's backend fsyncs every record, about 35 per trial here (its parameters and user
    attrs one by one), which was most of the optimizer's own time per trial. Every record is
    still written to the file at once, so a process killed with SIGKILL loses nothing it
    wrote; the fsync of the record that finishes a trial (and of study changes such as the
    prompt pool) also flushes all earlier records, so after a power cut every finished
    trial is complete on disk, as with Optuna's backend. Only records of trials still
    running can be lost, and those trials are lost anyway.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Appends ``logs``; fsyncs if one of them finishes a trial or changes a study."""
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "ab") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            if any(_needs_sync(log) for log in logs):
                os.fsync(handle.fileno())


class Journal(JournalStorage):
    """Optuna's journal storage, whose writes within :meth:`batch` go in one append.

    A trial's parameters and user attrs are one record each; written one by one, each
    takes the file lock, appends and reads the file back.
    """

    def __init__(self, backend: JournalFileBackend) -> None:
        super().__init__(backend)
        self._batches = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Holds this thread's writes and appends them at once when the block ends."""
        if getattr(self._batches, "logs", None) is not None:  # already batching
            yield
            return
        self._batches.logs = []
        try:
            yield
        finally:
            logs, self._batches.logs = self._batches.logs, None
            if logs:
                with self._thread_lock:
                    self._backend.append_logs(logs)
                    self._sync_with_backend()

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        logs = getattr(self._batches, "logs", None)
        if logs is None:
            super()._write_log(op_code, extra_fields)
            return
        worker = self._replay_result.worker_id
        logs.append({"op_code": op_code, "worker_id": worker, **extra_fields})


def batched_writes(storage: BaseStorage) -> AbstractContextManager[None]:
    """Groups this thread's writes to ``storage`` into one append on a :class:`Journal`.

    Other storages write as they go. Within the block, this thread's reads of the storage
    do not see its own writes yet (an ``optuna.Trial`` keeps its own copy of them).
    """
    return storage.batch() if isinstance(storage, Journal) else nullcontext()


class StorageError(UserError):
    """A storage URL is invalid or the storage cannot be opened."""


class StudyNotFoundError(UserError):
    """The named study is not in the storage; the message lists the studies that are."""


def default_journal_path(study_name: str, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """The default storage of ``study_name``: ``<runs_dir>/<study>/journal.log``."""
    return runs_dir / study_name / JOURNAL_FILE


def _journal_path(url: str) -> Path | None:
    """The journal file a ``--storage`` value names, if it names one."""
    if url.startswith("journal:"):
        rest = url.removeprefix("journal:")
        return Path(rest.removeprefix("//"))
    if "://" not in url and url.endswith(_JOURNAL_SUFFIXES):
        return Path(url)
    return None


def open_storage(
    study_name: str,
    storage_url: str | None = None,
    *,
    runs_dir: Path = DEFAULT_RUNS_DIR,
    create: bool = True,
    heartbeat: tuple[int, int] | None = None,
) -> BaseStorage:
    """Opens the storage of ``study_name``.

    With no URL it is the journal file ``runs/<study>/journal.log`` (safe for several
    processes on one machine). ``storage_url`` may name a journal file (``journal:PATH`` or a
    path ending in ``.log``) or be any Optuna RDB URL (``sqlite:///f.db``,
    ``postgresql://user:pw@host/db``: workers on several machines join one study by name).

    Args:
        study_name: The study, which names the default journal's directory.
        storage_url: ``--storage``, or None for the default journal.
        runs_dir: Parent of the per-study directories.
        create: Create a missing journal file; if False, a missing file raises.
        heartbeat: For an RDB storage: the heartbeat interval and the grace period in
            seconds (Optuna's heartbeats; see :mod:`optimizer._stale`). Journals have none.

    Raises:
        StorageError: Unknown URL form, a missing database driver, or a failed connection.
        StudyNotFoundError: ``create`` is False and the study's default journal does not
            exist (the message lists the studies under ``runs_dir``).
    """
    path = default_journal_path(study_name, runs_dir) if storage_url is None else None
    if storage_url is not None:
        path = _journal_path(storage_url)
    if path is not None:
        if not path.exists():
            if not create and storage_url is not None:
                raise StorageError(f"--storage: no journal file at {path}")
            if not create:
                raise StudyNotFoundError(_not_found(study_name, _journal_studies(runs_dir)))
            path.parent.mkdir(parents=True, exist_ok=True)
        return _journal(path)
    assert storage_url is not None
    if "://" not in storage_url:
        raise StorageError(
            f"--storage: {storage_url!r} is neither a database URL (sqlite:///f.db, "
            "postgresql://...) nor a journal file (journal:PATH or a path ending in .log)"
        )
    try:
        rdb = _rdb_storage(storage_url, heartbeat)
    except ImportError as error:
        postgres = storage_url.startswith("postgres") or "psycopg" in str(error)
        hint = "psycopg (pip install 'moa-optimizer[postgres]')" if postgres else str(error)
        raise StorageError(f"--storage: missing database driver: {hint}") from None
    except Exception as error:  # SQLAlchemy's connection and URL errors
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StorageError(f"--storage: cannot open {safe_url(storage_url)}: {first}") from None
    _LOCKS[rdb] = _rdb_lock(rdb)
    return rdb


_SCHEMA_LOCK = 0x6D6F6173  # "moas": creating Optuna's tables on PostgreSQL


def _rdb_storage(url: str, heartbeat: tuple[int, int] | None = None) -> RDBStorage:
    """Optuna's RDB storage on ``url``; on PostgreSQL its tables are made by one worker at a time.

    Optuna creates missing tables when a storage opens; two workers doing so at the same
    instant on a fresh database collide in PostgreSQL's catalog (``UniqueViolation`` on
    ``pg_type_typname_nsp_index``). A session-level advisory lock held while the storage
    opens makes later workers wait, then find the tables made.
    """

    def rdb() -> RDBStorage:
        interval, grace = heartbeat if heartbeat is not None else (None, None)
        with warnings.catch_warnings():  # heartbeat_interval is an experimental argument
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=interval, grace_period=grace)

    if not url.startswith("postgres"):
        return rdb()
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            key = {"k": _SCHEMA_LOCK}
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), key)
            try:
                return rdb()
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), key)
    finally:
        engine.dispose()


def _journal(path: Path) -> Journal:
    """A journal storage on ``path`` with the kernel-released write lock."""
    path = path.absolute()
    journal = Journal(JournalFile(str(path), lock_obj=FlockJournalLock(str(path))))
    _LOCKS[journal] = _file_lock(path)
    return journal


def study_names(storage: BaseStorage) -> list[str]:
    """Names of the studies in ``storage``, sorted."""
    return sorted(optuna.get_all_study_names(storage))


def load_study(
    study_name: str, storage_url: str | None = None, *, runs_dir: Path = DEFAULT_RUNS_DIR
) -> optuna.Study:
    """Loads an existing study.

    Raises:
        StudyNotFoundError: No such study; the message lists the existing ones.
        StorageError: As :func:`open_storage`.
    """
    storage = open_storage(study_name, storage_url, runs_dir=runs_dir, create=False)
    names = study_names(storage)
    if study_name not in names:
        if storage_url is None:
            names = _journal_studies(runs_dir)
        raise StudyNotFoundError(_not_found(study_name, names))
    return optuna.load_study(study_name=study_name, storage=storage)


def storage_lock(storage: BaseStorage | None) -> LockFactory:
    """Returns a lock that serialises read-check-write steps on ``storage`` across processes.

    Journal files and SQLite databases get an ``fcntl`` lock on a file beside them,
    PostgreSQL an advisory lock; other storages (in-memory, MySQL) a lock within this
    process only.
    """
    inner = getattr(storage, "_backend", None)  # optuna wraps RDBStorage in _CachedStorage
    for candidate in (storage, inner):
        if candidate is not None and candidate in _LOCKS:
            return _LOCKS[candidate]
    if isinstance(storage, JournalStorage) and isinstance(inner, JournalFileBackend):
        return _file_lock(Path(getattr(inner, "_file_path", "journal.log")))
    rdb = inner if isinstance(inner, RDBStorage) else storage
    if isinstance(rdb, RDBStorage):
        return _rdb_lock(rdb)
    return _process_lock()


def _process_lock() -> LockFactory:
    """A lock within this process only (storages with no cross-process lock of their own)."""
    lock = threading.Lock()

    @contextmanager
    def local() -> Iterator[None]:
        with lock:
            yield

    return local


def _file_lock(path: Path) -> LockFactory:
    lock_path = path.with_name(path.name + _LOCK_SUFFIX)

    @contextmanager
    def locked() -> Iterator[None]:
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return locked


def _rdb_lock(storage: RDBStorage) -> LockFactory:
    url = storage.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return _file_lock(Path(url.database))
    if url.get_backend_name() == "postgresql":
        import sqlalchemy

        key = 0x6D6F61  # "moa": one advisory lock for read-check-write steps

        @contextmanager
        def advisory() -> Iterator[None]:
            with storage.engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

        return advisory
    return _process_lock()


def _journal_studies(runs_dir: Path) -> list[str]:
    """Studies with a default journal under ``runs_dir``."""
    if not runs_dir.is_dir():
        return []
    found: set[str] = set()
    for journal in sorted(runs_dir.glob(f"*/{JOURNAL_FILE}")):
        try:
            found.update(optuna.get_all_study_names(_journal(journal)))
        except Exception:  # an unreadable journal is not worth failing the message over
            found.add(journal.parent.name)
    return sorted(found)


def _not_found(study_name: str, names: list[str]) -> str:
    known = ", ".join(names) if names else "none"
    return f"--study: no study named {study_name!r}; existing studies: {known}"


def safe_url(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
