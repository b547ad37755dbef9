"""Expired idempotency keys are pruned at least as fast as new keys are
stored: under a sustained rate of keyed writes the table does not grow
beyond the keys still live (--idempotency-ttl). The test counts the rows in
the database the server writes, beside it (Server.sql: a concurrent reader
of the SQLite file, or a PostgreSQL session)."""
import concurrent.futures
import time

import pytest

import harness as h
from harness import pb

R = pb.records


def rows(srv):
    return srv.sql("SELECT count(*) AS n FROM _rd_idempotency")[0][0]


def keyed_updates(srv, prefix, n):
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda i: srv.update("items", "one", {"n": i}, idempotency_key=f"{prefix}-{i}"), range(n)))


def test_expired_keys_do_not_pile_up(tmp_path):
    # a TTL the first 600 writes outlast even under ASan on a busy machine
    # (with 1 s, the first ones expired and were pruned before the count)
    srv = h.Server(tmp_path / "recordd", extra_args=("--idempotency-ttl", "5")).start()
    try:
        srv.push_schema([{"name": "items", "fields": [{"name": "n", "type": "INTEGER"}]}])
        srv.create("items", {"n": 0}, id="one")
        keyed_updates(srv, "old", 600)
        assert rows(srv) >= 600
        time.sleep(6)  # they expire
        keyed_updates(srv, "new", 400)
        # at most the 400 live keys (and a few old ones, pruned by the next writes)
        assert rows(srv) <= 420, "expired keys were not pruned as fast as new ones came"
    finally:
        problem = srv.kill()
    assert not problem, problem
