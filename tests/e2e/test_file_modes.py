"""Files that hold records or secrets are private, and recordctl leaves the
modes of directories it did not create alone: the database, its -wal and
-shm files and backups are created 0600 whatever the umask; `recordctl init
--dir` on an existing directory keeps that directory's mode."""
import os
import stat

import harness as h
import pytest


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # what most shells and container runtimes use
    yield
    os.umask(old)


def test_init_keeps_the_mode_of_an_existing_directory(tmp_path, loose_umask):
    d = tmp_path / "home"
    d.mkdir()
    os.chmod(d, 0o755)
    h.recordctl("init", "--dir", str(d))
    assert mode(d) == 0o755, f"recordctl init changed {d} to {oct(mode(d))}"
    assert mode(d / "admin.key") == 0o600
    assert mode(d / "pepper") == 0o600


def test_init_creates_a_missing_directory_private(tmp_path, loose_umask):
    d = tmp_path / "a" / "var"
    h.recordctl("init", "--dir", str(d))
    assert mode(d) == 0o700


@pytest.mark.sqlite_only("modes of the SQLite file, its -wal and -shm files and a `recordctl backup` copy")
def test_database_wal_shm_and_backup_are_0600(tmp_path, loose_umask):
    srv = h.Server(tmp_path / "recordd").start()
    try:
        srv.push_schema([{"name": "m", "fields": [{"name": "a", "type": "STRING"}]}])
        srv.create("m", {"a": "x"})
        db = srv.db_path
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert p.exists(), p
            assert mode(p) == 0o600, f"{p.name} is {oct(mode(p))}"
        out = tmp_path / "backup.db"
        h.recordctl("backup", "--db", str(db), "--out", str(out))
        assert mode(out) == 0o600, f"the backup is {oct(mode(out))}"
    finally:
        problem = srv.kill()
    assert not problem, problem
