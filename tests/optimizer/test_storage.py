from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest

from optimizer._errors import UserError
from optimizer._storage import (
    StorageError,
    StudyNotFoundError,
    default_journal_path,
    load_study,
    open_storage,
    storage_lock,
    study_names,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_default_storage_is_a_journal_under_runs(tmp_path: Path) -> None:
    storage = open_storage("demo", runs_dir=tmp_path / "runs")
    assert isinstance(storage, optuna.storages.JournalStorage)
    optuna.create_study(study_name="demo", storage=storage)
    assert default_journal_path("demo", tmp_path / "runs") == tmp_path / "runs/demo/journal.log"
    assert (tmp_path / "runs/demo/journal.log").stat().st_size > 0
    loaded = load_study("demo", runs_dir=tmp_path / "runs")
    assert loaded.study_name == "demo"


@pytest.mark.parametrize("form", ["journal:{path}", "{path}"])
def test_journal_urls(tmp_path: Path, form: str) -> None:
    path = tmp_path / "elsewhere" / "j.log"
    path.parent.mkdir()
    storage = open_storage("x", form.format(path=path))
    optuna.create_study(study_name="x", storage=storage)
    assert path.exists()
    assert study_names(open_storage("other", str(path))) == ["x"]


def test_sqlite_url_goes_through_rdb_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage("s", url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    optuna.create_study(study_name="s", storage=storage)
    assert load_study("s", url).study_name == "s"


def test_missing_study_lists_the_existing_ones(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("alpha", "beta"):
        optuna.create_study(study_name=name, storage=open_storage(name, runs_dir=runs))
    with pytest.raises(StudyNotFoundError) as caught:
        load_study("gamma", runs_dir=runs)
    message = str(caught.value)
    assert message == "--study: no study named 'gamma'; existing studies: alpha, beta"
    assert isinstance(caught.value, UserError)
    assert not (runs / "gamma").exists()  # looking does not create anything
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    optuna.create_study(study_name="inside", storage=open_storage("inside", url))
    with pytest.raises(StudyNotFoundError, match=r"existing studies: inside$"):
        load_study("gamma", url)
    with pytest.raises(StudyNotFoundError, match=r"existing studies: none$"):
        load_study("gamma", runs_dir=tmp_path / "empty")


def test_bad_urls_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="neither a database URL"):
        open_storage("x", "not-a-url")
    with pytest.raises(
        StorageError, match="--storage: cannot open nosuchdb://user:\\*\\*\\*@host"
    ) as caught:
        open_storage("x", "nosuchdb://user:secret@host/db")
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_postgres_url_works_when_a_server_is_available(postgres_url: str) -> None:
    storage = open_storage("pg", postgres_url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    optuna.create_study(study_name="pg-storage-test", storage=storage, load_if_exists=True)
    assert "pg-storage-test" in study_names(storage)
    with storage_lock(storage)():
        pass


def test_journal_lock_excludes_other_holders(tmp_path: Path) -> None:
    storage = open_storage("l", str(tmp_path / "j.log"))
    lock = storage_lock(storage)
    wrapped = optuna.create_study(study_name="l", storage=storage)
    assert storage_lock(wrapped._storage) is lock
    entered = threading.Event()

    def other() -> None:
        with lock():
            entered.set()

    with lock():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.3)
        assert not entered.is_set()  # blocked while we hold it
    thread.join(timeout=10)
    assert entered.is_set()


def test_missing_postgres_driver_names_the_extra() -> None:
    import subprocess
    import sys

    from moa_cli import ROOT

    script = (
        "import sys; sys.modules['psycopg'] = sys.modules['psycopg2'] = None\n"
        "from optimizer._storage import StorageError, open_storage\n"
        "try:\n"
        "    open_storage('x', 'postgresql://user:pw@127.0.0.1:1/db')\n"
        "except StorageError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "missing database driver" in done.stdout
    assert "moa-optimizer[postgres]" in done.stdout
    assert "pw" not in done.stdout


def test_a_missing_journal_file_url_is_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"--storage: no journal file at .*nope\.log$"):
        load_study("x", str(tmp_path / "nope.log"))
    assert not (tmp_path / "nope.log").exists()


def test_a_writer_killed_holding_the_journal_lock_blocks_nobody(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from moa_cli import ROOT

    journal = tmp_path / "runs" / "k" / "journal.log"
    holder = (
        "import sys, time\n"
        "from optimizer._storage import FlockJournalLock\n"
        "FlockJournalLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    journal.parent.mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(journal.absolute())],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    process.kill()  # SIGKILL while holding the lock
    process.wait()
    writer = (
        "import optuna\n"
        "from optimizer._storage import open_storage\n"
        "optuna.create_study(study_name='k', storage=open_storage('k'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", writer], cwd=tmp_path, env=env, timeout=60, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert study_names(open_storage("k", runs_dir=tmp_path / "runs")) == ["k"]


def test_journal_fsyncs_where_a_trial_finishes_or_the_study_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    storage = open_storage("f", runs_dir=tmp_path)
    study = optuna.create_study(study_name="f", storage=storage)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_int("n", 1, 3)
    trial.set_user_attr("mean", 1.0)
    assert synced == []  # a running trial's records: written, not synced
    # ... yet already in the file: another process's storage sees them
    other = optuna.load_study(study_name="f", storage=open_storage("f", runs_dir=tmp_path))
    running = other.get_trials(deepcopy=False)[0]
    assert set(running.params) == {"x", "n"} and running.user_attrs == {"mean": 1.0}
    study.tell(trial, 0.5)
    assert len(synced) == 1  # the tell flushes the trial's records with it
    study.set_user_attr("pool", [1, 2])
    assert len(synced) == 2
    study.enqueue_trial({"x": 0.1, "n": 2})
    assert len(synced) == 3
    reloaded = optuna.load_study(study_name="f", storage=open_storage("f", runs_dir=tmp_path))
    assert reloaded.trials[0].value == 0.5 and reloaded.user_attrs == {"pool": [1, 2]}


def test_batched_writes_go_in_one_append_and_read_back_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimizer._storage import JournalFile, batched_writes

    storage = open_storage("b", runs_dir=tmp_path)
    study = optuna.create_study(study_name="b", storage=storage)
    trial = study.ask()
    appends: list[int] = []
    real_append = JournalFile.append_logs

    def counting_append(self: JournalFile, logs: list[dict[str, object]]) -> None:
        appends.append(len(logs))
        real_append(self, logs)

    monkeypatch.setattr(JournalFile, "append_logs", counting_append)
    with batched_writes(trial.storage):
        x = trial.suggest_float("x", 0.0, 1.0)
        with batched_writes(trial.storage):  # nested: still the one batch
            trial.set_user_attr("a", [1, 2])
        trial.set_user_attr("b", {"c": "d"})
        assert appends == []
        assert trial.params == {"x": x} and trial.user_attrs == {"a": [1, 2], "b": {"c": "d"}}
    assert appends == [3]
    with pytest.raises(RuntimeError), batched_writes(trial.storage):
        trial.set_user_attr("e", 5)
        raise RuntimeError("the trial failed")
    assert appends == [3, 1]  # what was written before the failure is kept
    study.tell(trial, 1.0)
    reloaded = optuna.load_study(study_name="b", storage=open_storage("b", runs_dir=tmp_path))
    [done] = reloaded.trials
    assert done.params == {"x": x} and done.value == 1.0
    assert done.user_attrs == {"a": [1, 2], "b": {"c": "d"}, "e": 5}


def test_batched_writes_on_other_storages_write_as_they_go(tmp_path: Path) -> None:
    from optimizer._storage import batched_writes

    storage = open_storage("s", f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    with batched_writes(trial.storage):
        trial.set_user_attr("a", 1)
        assert study.trials[0].user_attrs == {"a": 1}
