"""Fixtures for the recordd end-to-end suite (see README.md).

- pb               (session) the generated protobuf modules
- server_factory   (function) starts servers; each on its own port and temp dir
- server           (function) one fresh server with an empty database
- school           (module)   one server per test module with the students +
                              enrollments schema pushed; tests sharing it use
                              unique ids and emails

The marker sqlite_only(reason) skips a test when the suite runs on
PostgreSQL (RECORDD_TEST_BACKEND=postgres): it tests the SQLite file itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def pytest_configure(config):
    # Generate the protobuf modules before collection, so test modules can use
    # the message classes at import time (parametrize lists etc.).
    harness.pb.ensure()
    config.addinivalue_line(
        "markers", "sqlite_only(reason): tests the SQLite database file itself (its modes, WAL, backups, a "
        "full disk under it); skipped when RECORDD_TEST_BACKEND=postgres")


def _sqlite_only_reason(item) -> "str | None":
    """The reason of item's sqlite_only marker; a marker without one is a
    usage error on every backend, so it is caught before a PostgreSQL run."""
    m = item.get_closest_marker("sqlite_only")
    if m is None:
        return None
    reason = m.kwargs.get("reason") or (m.args[0] if m.args else "")
    if not reason:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.sqlite_only needs a reason")
    return reason


def pytest_collection_modifyitems(config, items):
    """Skips the sqlite_only tests on another backend."""
    for item in items:
        reason = _sqlite_only_reason(item)
        if reason is not None and harness.BACKEND != "sqlite":
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


def pytest_report_header(config):
    if harness.BACKEND != "sqlite":
        return f"recordd storage backend: {harness.BACKEND}"
    return None


def pytest_sessionfinish(session, exitstatus):
    # After every fixture's teardown: no server is left using the cluster.
    harness.stop_backend()


@pytest.fixture(scope="session")
def pb():
    return harness.pb.ensure()


class _Factory:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.servers: list[harness.Server] = []

    def __call__(self, *extra_args: str, name: str = "", tls: "harness.ClientTLS | None" = None) -> harness.Server:
        d = self.base / (name or f"srv{len(self.servers)}")
        srv = harness.Server(d, extra_args, tls=tls)
        self.servers.append(srv)
        return srv.start()

    def close(self) -> None:
        """Stops every server; fails (after stopping them all) when one had
        crashed or did not exit 0 on SIGTERM, e.g. a sanitizer report."""
        problems = [p for p in (srv.kill() for srv in self.servers) if p]
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(*extra_flags) -> a started harness.Server (own port, own
    temp dir with r.db and stderr-N.log). All are killed at teardown."""
    f = _Factory(tmp_path)
    yield f
    f.close()


@pytest.fixture
def server(server_factory):
    """A fresh server on an empty database (no schema)."""
    return server_factory(name="recordd")


@pytest.fixture(scope="module")
def school(tmp_path_factory):
    """A server shared by one test module, with harness.SCHOOL pushed."""
    f = _Factory(tmp_path_factory.mktemp("school"))
    srv = f(name="recordd")
    srv.push_schema(harness.SCHOOL)
    yield srv
    f.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of each involved server's stderr."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    servers = [(n, funcargs.get(n)) for n in ("server", "school", "bare")]
    factory = funcargs.get("server_factory")
    if isinstance(factory, _Factory):
        servers += [("server_factory", s) for s in factory.servers if s is not funcargs.get("server")]
    for name, srv in servers:
        if isinstance(srv, harness.Server):
            rep.sections.append((f"recordd stderr ({name}, {srv.log_path})", srv.log_tail(30)))
