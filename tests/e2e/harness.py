"""Black-box harness for the recordd end-to-end tests.

Everything here talks to the real binary over real gRPC:

- ``pb``            the generated Python protobuf modules (protoc runs once per
                    test session, into ``$RECORDD_BUILD/py``);
- ``Server``        one recordd process on a free port with its own database,
                    initialised by ``recordctl init`` (its admin API key is
                    ``Server.admin_key``; every call carries it unless told
                    otherwise, see ``Server.call`` and ``Server.as_``);
- ``BACKEND``       the database the servers run on: "sqlite" (a file in the
                    server's temp dir), or with RECORDD_TEST_BACKEND=postgres a
                    database of its own in a session-wide throw-away cluster
                    (tests/pg/pgcluster.py); ``Server.sql`` queries either;
- ``error_details`` / ``expect_error``  decode ``grpc-status-details-bin``;
- small builders for Structs, schemas and requests.

Nothing here knows the server's internals: only the proto contract
(proto/recordd/v1) and DESIGN.md.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "build" / "node"  # npm tools of tests/node/package.json (make node-deps)
BIN = Path(os.environ.get("RECORDD_BIN") or REPO / "build" / "recordd")
BUILD = Path(os.environ.get("RECORDD_BUILD") or REPO / "build")
RECORDCTL = BUILD / "recordctl"
PY_OUT = BUILD / "py"

GOOGLEAPIS = Path("/usr/share/gocode/src/github.com/gogo/googleapis")
GRPC_PROTO = Path("/usr/share/grpc-proto")

# The storage backend every harness server runs on: RECORDD_TEST_BACKEND
# ("sqlite", the default, or "postgres"; `make e2e-pg`).
BACKEND = os.environ.get("RECORDD_TEST_BACKEND") or "sqlite"
if BACKEND not in ("sqlite", "postgres"):
    raise RuntimeError(f"RECORDD_TEST_BACKEND={BACKEND!r}: expected sqlite or postgres")

# Generous guards against a hung server; no assertion depends on them.
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0

# Client-side message limits out of the way, so the server's limits are what
# the tests observe.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.enable_retries", 0),
]

# ---------------------------------------------------------------------------
# Generated protobuf modules
# ---------------------------------------------------------------------------

_GOOGLE_DEPS = [
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
    "google/rpc/code.proto",
]
_GRPC_DEPS = [
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
]


def generate_protos(out: Path = PY_OUT) -> Path:
    """Runs protoc --python_out for the recordd protos and the google/api,
    google/rpc and grpc protos they (and the tests) need. google/protobuf is
    not generated: python3-protobuf ships it. Files are generated into a
    scratch directory and moved into place one by one, so a concurrent session
    never imports a half-written module."""
    own = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto" / "recordd" / "v1").glob("*.proto"))
    if not own:
        raise RuntimeError(f"no .proto files under {REPO / 'proto/recordd/v1'}")
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gen-", dir=out.parent))
    try:
        cmd = [
            "protoc",
            f"-I{REPO / 'proto'}",
            f"-I{GOOGLEAPIS}",
            f"-I{GRPC_PROTO}",
            "-I/usr/include",
            f"--python_out={scratch}",
            *own,
            *_GOOGLE_DEPS,
            *_GRPC_DEPS,
        ]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"protoc failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
        for src in scratch.rglob("*.py"):
            dst = out / src.relative_to(scratch)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _load_by_path(name: str, path: Path):
    """Imports a generated module from its file under a private name. Used for
    grpc/... modules: the installed grpcio package owns the name `grpc`."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class _Protos:
    """The generated modules, produced on first use:
    records, schema, status, error_details, code, health, refl_v1, refl_v1alpha,
    struct, wrappers, timestamp, any, descriptor."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._ready = False

    def ensure(self) -> "_Protos":
        with self._lock:
            if self._ready:
                return self
            generate_protos(PY_OUT)
            if str(PY_OUT) not in sys.path:
                sys.path.insert(0, str(PY_OUT))
            importlib.invalidate_caches()
            from google.protobuf import any_pb2, descriptor_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
            from google.rpc import code_pb2, error_details_pb2, status_pb2
            from recordd.v1 import claims_pb2, records_pb2, schema_pb2, tokens_pb2

            self.records = records_pb2
            self.schema = schema_pb2
            self.tokens = tokens_pb2
            self.claims = claims_pb2
            self.status = status_pb2
            self.error_details = error_details_pb2
            self.code = code_pb2
            self.struct = struct_pb2
            self.wrappers = wrappers_pb2
            self.timestamp = timestamp_pb2
            self.any = any_pb2
            self.descriptor = descriptor_pb2
            self.health = _load_by_path("rd_e2e_health_pb2", PY_OUT / "grpc/health/v1/health_pb2.py")
            self.refl_v1 = _load_by_path("rd_e2e_reflection_v1_pb2", PY_OUT / "grpc/reflection/v1/reflection_pb2.py")
            self.refl_v1alpha = _load_by_path(
                "rd_e2e_reflection_v1alpha_pb2", PY_OUT / "grpc/reflection/v1alpha/reflection_pb2.py"
            )
            self._ready = True
            return self

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        self.ensure()
        return object.__getattribute__(self, name)


pb = _Protos()

# ---------------------------------------------------------------------------
# RPC table
# ---------------------------------------------------------------------------

# method name -> (full service name, request class getter, response class getter)
_RPCS: dict[str, tuple[str, Callable[[], Any], Callable[[], Any]]] = {
    "CreateRecord": ("recordd.v1.Records", lambda: pb.records.CreateRecordRequest, lambda: pb.records.CommitReceipt),
    "GetRecord": ("recordd.v1.Records", lambda: pb.records.GetRecordRequest, lambda: pb.records.Record),
    "ListRecords": ("recordd.v1.Records", lambda: pb.records.ListRecordsRequest, lambda: pb.records.ListRecordsResponse),
    "UpdateRecord": ("recordd.v1.Records", lambda: pb.records.UpdateRecordRequest, lambda: pb.records.CommitReceipt),
    "ReplaceRecord": ("recordd.v1.Records", lambda: pb.records.ReplaceRecordRequest, lambda: pb.records.CommitReceipt),
    "DeleteRecord": ("recordd.v1.Records", lambda: pb.records.DeleteRecordRequest, lambda: pb.records.CommitReceipt),
    "BulkMutate": ("recordd.v1.Records", lambda: pb.records.BulkMutateRequest, lambda: pb.records.BulkMutateResponse),
    "PushSchema": ("recordd.v1.Schemas", lambda: pb.schema.PushSchemaRequest, lambda: pb.schema.PushSchemaResponse),
    "GetSchema": ("recordd.v1.Schemas", lambda: pb.schema.GetSchemaRequest, lambda: pb.schema.Schema),
    "GetOpenApi": ("recordd.v1.Schemas", lambda: pb.schema.GetOpenApiRequest, lambda: pb.schema.OpenApiDocument),
    "AcquireClaim": ("recordd.v1.Claims", lambda: pb.claims.AcquireClaimRequest, lambda: pb.claims.Claim),
    "ReleaseClaim": ("recordd.v1.Claims", lambda: pb.claims.ReleaseClaimRequest, lambda: pb.claims.ReleaseClaimResponse),
    "MintToken": ("recordd.v1.Tokens", lambda: pb.tokens.MintTokenRequest, lambda: pb.tokens.MintTokenResponse),
    "Check": ("grpc.health.v1.Health", lambda: pb.health.HealthCheckRequest, lambda: pb.health.HealthCheckResponse),
}


def rpc_path(method: str) -> str:
    return f"/{_RPCS[method][0]}/{method}"


# ---------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------

# Every call the suite makes carries the server's admin API key unless it asks
# for something else, so tests written before auth existed run unchanged:
# Server.channel adds it, and so does any grpc.insecure_channel() a test opens
# to a harness server's address (the function is wrapped below). A call that
# already carries `authorization` metadata keeps it.

DEFAULT = object()
"""Server.call(auth=DEFAULT): the server's admin key (the default)."""

_real_insecure_channel = grpc.insecure_channel
_DEFAULT_KEYS: dict[str, str] = {}  # address -> admin key of the server there


class _Details(
    collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _DefaultAuth(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <key()>` to calls that carry none."""

    def __init__(self, key: Callable[[], Optional[str]]) -> None:
        self._key = key

    def _details(self, d):
        md = list(d.metadata or ())
        key = self._key()
        if key and not any(k == "authorization" for k, _ in md):
            md.append(("authorization", f"Bearer {key}"))
        return _Details(d.method, d.timeout, md, d.credentials, getattr(d, "wait_for_ready", None),
                        getattr(d, "compression", None))

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_unary(self, cont, d, it):
        return cont(self._details(d), it)

    def intercept_stream_stream(self, cont, d, it):
        return cont(self._details(d), it)


def _insecure_channel(target, options=None, compression=None):
    ch = _real_insecure_channel(target, options=options, compression=compression)
    if target in _DEFAULT_KEYS:
        ch = grpc.intercept_channel(ch, _DefaultAuth(lambda: _DEFAULT_KEYS.get(target)))
    return ch


grpc.insecure_channel = _insecure_channel


def bearer(credential: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {credential}")]


class CtlError(RuntimeError):
    pass


def recordctl(*args: str, check: bool = True, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs build/recordctl with args; raises CtlError (with its stderr) on a
    non-zero exit when check is set. env (default: ours) gains what the
    backend needs, see child_env."""
    if not RECORDCTL.exists():
        pytest.fail(f"recordctl not found at {RECORDCTL} (build it with `make`)")
    res = subprocess.run([str(RECORDCTL), *args], capture_output=True, text=True, timeout=60, env=child_env(env))
    if check and res.returncode != 0:
        raise CtlError(f"recordctl {' '.join(args)} exited {res.returncode}:\n{res.stderr}")
    return res


# ---------------------------------------------------------------------------
# Backends: where a server's database lives
# ---------------------------------------------------------------------------


class _PgDatabases:
    """The session's PostgreSQL cluster, started when the first server needs
    a database (a run on SQLite never starts one), and the databases handed
    out: "r1", "r2", ... one per Server, never reused by another, so each
    server starts as empty as a new SQLite file. They are made BATCH at a
    time (one psql for several saves about a third of the ~0.16 s each
    costs) and not dropped: the whole cluster goes at the end of the
    session (stop(), called by conftest.py; PgCluster's atexit hook covers
    any other way out)."""

    BATCH = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cluster = None
        self._count = 0
        self._ready: list[str] = []  # made, not handed out yet

    def cluster(self):
        with self._lock:
            if self._cluster is None:
                pgcluster = _load_by_path("rd_e2e_pgcluster", REPO / "tests" / "pg" / "pgcluster.py")
                _stop_on_sigterm()
                self._cluster = pgcluster.PgCluster().start()
            return self._cluster

    def new_database(self) -> str:
        """A database no server has used; returns its URI (no password in it)."""
        cluster = self.cluster()
        with self._lock:
            if not self._ready:
                names = [f"r{self._count + i}" for i in range(1, self.BATCH + 1)]
                cluster.create_database(*names)
                self._count += self.BATCH
                self._ready = names
            return cluster.uri(self._ready.pop(0))

    def stop(self) -> None:
        with self._lock:
            cluster, self._cluster = self._cluster, None
            self._ready = []  # made in that cluster
        if cluster is not None:
            cluster.stop()


_pg = _PgDatabases()


def _stop_on_sigterm() -> None:
    """Makes SIGTERM (a CI timeout, say) end the session like Ctrl-C does, so
    fixtures are torn down and the cluster is stopped: the default action
    would kill us outright, skipping atexit. Only when nobody else handles
    SIGTERM, and only from the main thread (where signal handlers live)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def interrupt(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupt)


def stop_backend() -> None:
    """End of session: stops the PostgreSQL cluster if one was started."""
    _pg.stop()


def fresh_db(workdir: Path) -> str:
    """The --db value of a new, empty database: <workdir>/r.db on SQLite, a
    new database of the session's cluster on PostgreSQL. For tests that run
    recordd or recordctl themselves; pass child_env() to them as well."""
    if BACKEND == "postgres":
        return _pg.new_database()
    return str(Path(workdir) / "r.db")


def child_env(base: Optional[dict] = None) -> Optional[dict]:
    """The environment for a recordd or recordctl process: base (default:
    ours) plus what the backend needs to log in (PGPASSFILE). On SQLite
    base as given: None (inherit ours) stays None."""
    if BACKEND != "postgres":
        return base
    return {**(os.environ if base is None else base), **_pg.cluster().env()}


def _pg_dbname(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


# ---------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    pass


@dataclasses.dataclass
class ClientTLS:
    """How the harness reaches a TLS server: the CA it trusts and, for
    mutual TLS, its client certificate and key (PEM files)."""

    ca_file: Path
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes(),
            private_key=Path(self.key_file).read_bytes() if self.key_file else None,
            certificate_chain=Path(self.cert_file).read_bytes() if self.cert_file else None,
        )


class Server:
    """One recordd process: ``build/recordd --grpc-listen 127.0.0.1:0 --db
    <dir>/r.db --workers 2``. ``start()`` waits for the "listening" log line
    (the bound address is its "grpc" member) and for health Check == SERVING.
    stderr goes to ``<dir>/stderr-N.log`` (one file per start).

    On PostgreSQL ``--db`` is instead the URI of a database made for this
    Server just before its first start (``db``); restarts reuse it, like
    the file. ``db_path`` (the SQLite file) then raises: a test that needs
    the file is marked sqlite_only; ``sql()`` reads either backend."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = (), tls: Optional["ClientTLS"] = None) -> None:
        self.tls = tls  # set: the server runs with --tls-*; the harness connects with these
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._db: Optional[str] = None  # the --db value, see db
        self.var = self.dir / "var"  # recordctl init --dir: pepper, keys, admin.key
        self.admin_key: Optional[str] = None
        self.extra_args = tuple(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None
        self.http_url: Optional[str] = None  # "http://127.0.0.1:<port>" of the HTTP/JSON gateway
        self.channel: Optional[grpc.Channel] = None  # carries admin_key by default
        self.raw_channel: Optional[grpc.Channel] = None  # carries nothing
        self._auth = DEFAULT
        self.starts = 0
        self.log_path: Optional[Path] = None
        self.startup: dict = {}

    # -- the database ---------------------------------------------------------

    @property
    def db(self) -> str:
        """The --db value this server (and recordctl on its behalf) uses: made
        on first use (fresh_db), then kept, so a restart finds the same data."""
        if self._db is None:
            self._db = fresh_db(self.dir)
        return self._db

    @property
    def db_path(self) -> Path:
        """The SQLite database file (on SQLite only)."""
        if BACKEND != "sqlite":
            raise RuntimeError(f"db_path is the SQLite file, and this run is on {BACKEND}: mark the test "
                               "@pytest.mark.sqlite_only(reason) or use Server.sql()")
        return self.dir / "r.db"

    def sql(self, query: str) -> list[tuple]:
        """The rows of one read-only query on this server's database, on
        either backend (the tables are the store's own, e.g. _rd_sync_log):
        SQLite opens the file read-only beside the running server, PostgreSQL
        runs the query through psql in a read-only transaction. Plain column
        values (integers, reals, text) come back alike from both; on
        PostgreSQL each row goes through JSON, so give columns distinct names."""
        if BACKEND == "sqlite":
            import sqlite3

            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
            try:
                return db.execute(query).fetchall()
            finally:
                db.close()
        wrapped = f"SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM ({query}) q"
        out = _pg.cluster().psql(wrapped, dbname=_pg_dbname(self.db), read_only=True)
        return [tuple(row.values()) for row in json.loads(out)]

    def sql_write(self, statement: str) -> None:
        """Runs one statement that changes this server's database and commits
        it (what an operator or a pruner might do behind the server's back)."""
        if BACKEND == "sqlite":
            import sqlite3

            db = sqlite3.connect(str(self.db_path), timeout=10)
            try:
                db.execute(statement)
                db.commit()
            finally:
                db.close()
            return
        _pg.cluster().psql(statement, dbname=_pg_dbname(self.db))

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "Server":
        if not BIN.exists():
            pytest.fail(f"recordd binary not found at {BIN} (build it with `make`, or set RECORDD_BIN)")
        assert self.proc is None, "server already running"
        self.starts += 1
        self.init()
        self.log_path = self.dir / f"stderr-{self.starts}.log"
        log = open(self.log_path, "wb")
        cmd = [str(BIN), "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
               "--db", self.db, "--workers", "2",
               "--pepper-file", str(self.var / "pepper"), "--signing-key", str(self.var / "signing.key"),
               "--trusted-keys", str(self.var / "trusted-keys"), *self.extra_args]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
                                         env=child_env())
        finally:
            log.close()
        try:
            self.address = self._wait_listening()
            _DEFAULT_KEYS[self.address] = self.admin_key
            if self.tls is not None:
                self.raw_channel = grpc.secure_channel(self.address, self.tls.credentials(), options=CHANNEL_OPTIONS)
            else:
                self.raw_channel = _real_insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self.channel = grpc.intercept_channel(self.raw_channel, _DefaultAuth(lambda: self.admin_key))
            self._wait_serving()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict) and obj.get("msg") == "listening" and obj.get("grpc"):
                    self.startup = obj
                    http = obj.get("http")
                    scheme = "https" if self.tls is not None else "http"
                    self.http_url = f"{scheme}://{http}" if http and http != "off" else None
                    return obj["grpc"]
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(f"recordd exited with {rc} before listening:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"recordd printed no 'listening' line in {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def _wait_serving(self) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        serving = pb.health.HealthCheckResponse.SERVING
        while True:
            resp = self.call("Check", pb.health.HealthCheckRequest(service=""), wait_for_ready=True)
            if resp.status == serving:
                return
            if time.monotonic() > deadline:
                raise ServerStartError(f"health never became SERVING (last: {resp.status}):\n{self.log_tail()}")
            time.sleep(0.02)

    def _close_channel(self) -> None:
        if self.raw_channel is not None:
            self.raw_channel.close()
        self.channel = self.raw_channel = None
        if self.address is not None:
            _DEFAULT_KEYS.pop(self.address, None)

    # -- credentials ---------------------------------------------------------

    def init(self) -> None:
        """`recordctl init` into self.var once (the database, the server's
        secrets, the admin key of organisation "default")."""
        if self.admin_key is None:
            if not (self.var / "admin.key").exists():
                self.ctl("init")
            self.admin_key = (self.var / "admin.key").read_text().strip()

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """recordctl on this server's database and key files."""
        return recordctl(*args, "--dir", str(self.var), "--db", self.db, check=check)

    def create_key(self, org: str = "default", role: str = "admin", caps: Any = None, test: bool = False) -> dict:
        """`recordctl key create`: {"key_id", "org", "role", "key"}."""
        if caps is None:
            caps = [{"can": ["read", "create", "update", "delete", "admin"], "model": "*", "group": "*"}]
        args = ["key", "create", "--org", org, "--role", role, "--caps", json.dumps(caps), "--json"]
        if test:
            args.append("--test")
        return json.loads(self.ctl(*args).stdout)

    def mint_offline(self, caps: Any, *, key_id: Optional[str] = None, org: str = "default", sub: str = "offline",
                     ttl: int = 0, issued_at: Optional[str] = None, signing_key: Optional[Path] = None) -> dict:
        """`recordctl token mint`: {"token", "jti", "expires_at"}."""
        args = ["token", "mint", "--caps", json.dumps(caps), "--ttl", str(ttl), "--json"]
        args += ["--key-id", key_id] if key_id else ["--org", org, "--sub", sub]
        if issued_at:
            args += ["--issued-at", issued_at]
        if signing_key:
            args += ["--signing-key", str(signing_key)]
        return json.loads(self.ctl(*args).stdout)

    def as_(self, auth) -> "Server":
        """A view of this server whose calls (and record helpers) carry auth
        instead of the admin key: a credential string, or None for no
        `authorization` at all. Lifecycle methods belong to the original."""
        view = copy.copy(self)
        view._auth = auth
        return view

    def stop(self) -> int:
        """SIGTERM, wait, and assert a clean exit (status 0)."""
        assert self.proc is not None, "server not running"
        self._close_channel()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"recordd did not exit within {STOP_TIMEOUT}s of SIGTERM:\n{self.log_tail()}")
        self.proc = None
        assert rc == 0, f"recordd exited with {rc} after SIGTERM:\n{self.log_tail()}"
        return rc

    def restart(self) -> "Server":
        """A clean stop, then a new process on the same database."""
        self.stop()
        return self.start()

    def kill(self) -> Optional[str]:
        """Teardown: ends the process whatever its state (SIGTERM, then
        SIGKILL when it lingers). Never raises; returns a description of
        anything wrong (the process had died, exited non-zero after SIGTERM,
        or ignored it), else None."""
        self._close_channel()
        p, self.proc = self.proc, None
        if p is None:
            return None
        rc = p.poll()
        if rc is not None:
            return f"recordd had already exited with {rc} before teardown:\n{self.log_tail()}"
        try:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return f"recordd ignored SIGTERM for 20 s and was killed:\n{self.log_tail()}"
        if rc != 0:
            return f"recordd exited with {rc} after SIGTERM at teardown:\n{self.log_tail()}"
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    # -- calls --------------------------------------------------------------

    def call(self, method: str, request, *, timeout: float = CALL_TIMEOUT, metadata=None, wait_for_ready=None,
             auth=DEFAULT):
        """Calls a unary RPC by name (see _RPCS) through
        channel.unary_unary("/pkg.Service/Method", ...). auth: DEFAULT (the
        admin key, or the view's credential, see as_), a credential sent as
        `Bearer <auth>`, or None for no `authorization` metadata. metadata
        that already holds `authorization` is sent as is."""
        service, req_cls, resp_cls = _RPCS[method]
        assert isinstance(request, req_cls()), f"{method} takes {req_cls().__name__}, got {type(request).__name__}"
        if auth is DEFAULT:
            auth = self._auth
        channel = self.channel
        if auth is not DEFAULT:
            channel = self.raw_channel
            md = list(metadata or ())
            if auth is not None and not any(k == "authorization" for k, _ in md):
                md += bearer(auth)
            metadata = md
        fn = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=resp_cls().FromString,
        )
        return fn(request, timeout=timeout, metadata=metadata, wait_for_ready=wait_for_ready)

    def http(self, method: str, path: str, *, json_body: Any = None, body: Optional[bytes] = None,
             headers: Optional[dict] = None, auth=DEFAULT, **kw):
        """One request to the HTTP/JSON gateway (python3-requests): json_body
        is sent as application/json, body as is. auth as for call()."""
        import requests

        if auth is DEFAULT:
            auth = self._auth if self._auth is not DEFAULT else self.admin_key
        hdrs = dict(headers or {})
        if auth is not None and not any(k.lower() == "authorization" for k in hdrs):
            hdrs["Authorization"] = f"Bearer {auth}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        kw.setdefault("timeout", CALL_TIMEOUT)
        if self.tls is not None:
            kw.setdefault("verify", str(self.tls.ca_file))
            if self.tls.cert_file is not None:
                kw.setdefault("cert", (str(self.tls.cert_file), str(self.tls.key_file)))
        return requests.request(method, self.http_url + path, data=body, headers=hdrs, **kw)

    def call_raw(self, path: str, body: bytes, *, timeout: float = CALL_TIMEOUT) -> bytes:
        """Sends body as the request message bytes, unchanged."""
        fn = self.channel.unary_unary(path, request_serializer=lambda x: x, response_deserializer=lambda x: x)
        return fn(body, timeout=timeout)

    def health(self, service: str = "") -> int:
        return self.call("Check", pb.health.HealthCheckRequest(service=service)).status

    # -- record helpers (thin: a request built from keyword arguments) ------

    def push_schema(self, models: list[dict], force: bool = False):
        req = pb.schema.PushSchemaRequest(schema=schema_msg(models), force=force)
        return self.call("PushSchema", req)

    def get_schema(self):
        return self.call("GetSchema", pb.schema.GetSchemaRequest())

    def create(self, model: str, data: dict, *, id: str = "", **kw):
        return self.call("CreateRecord", pb.records.CreateRecordRequest(model=model, id=id, data=struct(data), **kw))

    def get(self, model: str, id: str):
        return self.call("GetRecord", pb.records.GetRecordRequest(model=model, id=id))

    def get_data(self, model: str, id: str) -> dict:
        return to_dict(self.get(model, id).data)

    def update(self, model: str, id: str, data: dict, *, expected_version: Optional[int] = None, **kw):
        if expected_version is not None:
            kw["expected_version"] = pb.wrappers.Int64Value(value=expected_version)
        return self.call(
            "UpdateRecord", pb.records.UpdateRecordRequest(model=model, id=id, data=struct(data), **kw)
        )

    def replace(self, model: str, id: str, data: dict, *, expected_version: Optional[int] = None, **kw):
        if expected_version is not None:
            kw["expected_version"] = pb.wrappers.Int64Value(value=expected_version)
        return self.call(
            "ReplaceRecord", pb.records.ReplaceRecordRequest(model=model, id=id, data=struct(data), **kw)
        )

    def delete(self, model: str, id: str, *, expected_version: Optional[int] = None, **kw):
        if expected_version is not None:
            kw["expected_version"] = pb.wrappers.Int64Value(value=expected_version)
        return self.call("DeleteRecord", pb.records.DeleteRecordRequest(model=model, id=id, **kw))

    def assert_not_found(self, model: str, id: str) -> None:
        expect_error(grpc.StatusCode.NOT_FOUND, self.get, model, id, reason="not_found")

    def assert_healthy(self) -> None:
        assert self.alive(), f"recordd is gone:\n{self.log_tail()}"
        assert self.health() == pb.health.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------------
# WatchChanges
# ---------------------------------------------------------------------------

WATCH_PATH = "/recordd.v1.Records/WatchChanges"


class Watch:
    """One WatchChanges stream read by a background thread into events."""

    def __init__(self, srv, since=0, models=(), groups=(), auth=None, timeout=120, channel=None):
        req = pb.records.WatchChangesRequest(since_sync_id=since, models=list(models), groups=list(groups))
        ch = channel or (srv.raw_channel if auth else srv.channel)
        fn = ch.unary_stream(WATCH_PATH, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=pb.records.ChangeEvent.FromString)
        self.call = fn(req, timeout=timeout, metadata=bearer(auth) if auth else None)
        self.events = []
        self.error = None
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self.events.append(ev)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.ended.set()

    def wait_for(self, n, timeout=30.0):
        """Waits for n events."""
        return self.wait_until(lambda evs: len(evs) >= n, timeout)

    def wait_until(self, pred, timeout=30.0):
        """Waits until pred(events) holds (or the stream ends)."""
        end = time.monotonic() + timeout
        while not pred(self.events) and time.monotonic() < end and not self.ended.is_set():
            time.sleep(0.01)
        assert pred(self.events), f"{len(self.events)} events (error: {self.error})"
        return self.events

    def settle(self, seconds=0.5):
        """Waits a little so that anything extra would have arrived."""
        time.sleep(seconds)
        return list(self.events)

    def cancel(self):
        self.call.cancel()
        self.ended.wait(10)


# ---------------------------------------------------------------------------
# Error details
# ---------------------------------------------------------------------------

TYPE_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
TYPE_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
TYPE_RECEIPT = "type.googleapis.com/recordd.v1.CommitReceipt"


@dataclasses.dataclass
class ErrorDetails:
    code: grpc.StatusCode
    message: str
    status: Any = None  # google.rpc.Status, or None when the trailer is absent
    error_info: Any = None  # google.rpc.ErrorInfo
    bad_request: Any = None  # google.rpc.BadRequest
    receipt: Any = None  # recordd.v1.CommitReceipt
    other: list = dataclasses.field(default_factory=list)  # Anys of other types

    @property
    def reason(self) -> Optional[str]:
        return self.error_info.reason if self.error_info is not None else None

    @property
    def field(self) -> Optional[str]:
        if self.error_info is None:
            return None
        return dict(self.error_info.metadata).get("field")

    @property
    def violation_fields(self) -> list[str]:
        if self.bad_request is None:
            return []
        return [v.field for v in self.bad_request.field_violations]

    def __str__(self) -> str:
        parts = [f"{self.code.name}: {self.message!r}"]
        if self.error_info is not None:
            parts.append(f"reason={self.reason} domain={self.error_info.domain} metadata={dict(self.error_info.metadata)}")
        if self.bad_request is not None:
            parts.append(f"violations={[(v.field, v.description) for v in self.bad_request.field_violations]}")
        if self.receipt is not None:
            parts.append(f"receipt=<{short(self.receipt)}>")
        return "; ".join(parts)


def error_details(err: grpc.RpcError) -> ErrorDetails:
    """Decodes grpc-status-details-bin from the trailing metadata of err into
    google.rpc.Status and unpacks the details recordd sends."""
    d = ErrorDetails(code=err.code(), message=err.details() or "")
    raw = None
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            raw = value
    if raw is None:
        return d
    st = pb.status.Status.FromString(raw)
    d.status = st
    for any_msg in st.details:
        if any_msg.type_url == TYPE_ERROR_INFO:
            d.error_info = pb.error_details.ErrorInfo.FromString(any_msg.value)
        elif any_msg.type_url == TYPE_BAD_REQUEST:
            d.bad_request = pb.error_details.BadRequest.FromString(any_msg.value)
        elif any_msg.type_url == TYPE_RECEIPT:
            d.receipt = pb.records.CommitReceipt.FromString(any_msg.value)
        else:
            d.other.append(any_msg)
    return d


def expect_error(code: grpc.StatusCode, fn: Callable, *args, reason: Optional[str] = None,
                 field: Optional[str] = None, **kwargs) -> ErrorDetails:
    """Calls fn and asserts it fails with code. Every recordd error must carry
    grpc-status-details-bin whose google.rpc.Status agrees with the call's
    status and holds an ErrorInfo in domain "recordd". When reason is given it
    must be the ErrorInfo reason; when field is given it must be ErrorInfo
    metadata "field" (or a path below it, "profile.a") and, for
    INVALID_ARGUMENT, appear in BadRequest field_violations."""
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kwargs)
    d = error_details(ei.value)
    assert d.code == code, f"expected {code.name}, got {d}"
    assert d.status is not None, f"no grpc-status-details-bin on {d}"
    assert d.status.code == code.value[0], f"details status code {d.status.code} != {code.name}"
    assert d.status.message == d.message, f"details message {d.status.message!r} != status message {d.message!r}"
    assert d.error_info is not None, f"no google.rpc.ErrorInfo in details: {d}"
    assert d.error_info.domain == "recordd", f"ErrorInfo domain {d.error_info.domain!r}"
    if reason is not None:
        assert d.reason == reason, f"expected reason {reason!r}, got {d}"
    if field is not None:
        assert names_field(d.field, field), f"expected ErrorInfo metadata field {field!r}, got {d}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert any(names_field(f, field) for f in d.violation_fields), f"{field!r} not in BadRequest: {d}"
    return d


def names_field(reported: Optional[str], field: str) -> bool:
    """True when reported names field itself or a path inside it."""
    if not reported:
        return False
    return reported == field or reported.startswith(field + ".") or reported.startswith(field + "[")


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def struct(d: Optional[dict]):
    s = pb.struct.Struct()
    if d:
        s.update(d)
    return s


def to_dict(s) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(s)


def schema_msg(models: list[dict]):
    """A recordd.v1.Schema from its proto3 JSON form (DESIGN.md §3)."""
    from google.protobuf import json_format

    return json_format.ParseDict({"models": models}, pb.schema.Schema())


def uid(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def ts_us(ts) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def wait_clock_past(t_us: int) -> None:
    """Waits until the wall clock is at least 1 ms past t_us, so a write made
    afterwards must carry a later timestamp (at millisecond resolution)."""
    while time.time_ns() // 1000 <= t_us + 1000:
        time.sleep(0.001)


def rss_allowance_mb() -> int:
    """Extra peak RSS to allow in memory-bound tests when the server runs
    under AddressSanitizer (`make check` sets ASAN_OPTIONS): its quarantine
    keeps up to 256 MB of freed memory, plus shadow memory."""
    return 320 if os.environ.get("ASAN_OPTIONS") else 0


def short(msg) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(msg, as_one_line=True)


# ---------------------------------------------------------------------------
# The schema the tests use (DESIGN.md §3)
# ---------------------------------------------------------------------------

STUDENTS = {
    "name": "students",
    "fields": [
        {"name": "firstName", "type": "STRING", "required": True, "maxLength": 100},
        {"name": "email", "type": "STRING", "unique": True},
        {"name": "age", "type": "INTEGER", "min": 0, "max": 150},
        {"name": "isActive", "type": "BOOLEAN", "defaultValue": True},
        {"name": "status", "type": "ENUM", "enumValues": ["active", "inactive"]},
        {"name": "profile", "type": "JSON"},
        {"name": "enrolledAt", "type": "TIMESTAMP"},
    ],
    "uniqueTogether": [{"fields": ["firstName", "email"]}],
}

# A second, independent model: its own fields, a non-unique "email" and a
# composite unique constraint that is not implied by a single-field one.
ENROLLMENTS = {
    "name": "enrollments",
    "fields": [
        {"name": "studentId", "type": "STRING", "required": True},
        {"name": "course", "type": "STRING", "required": True},
        {"name": "email", "type": "STRING"},
        {"name": "grade", "type": "NUMBER", "min": 0, "max": 100},
    ],
    "uniqueTogether": [{"fields": ["studentId", "course"]}],
}

SCHOOL = [STUDENTS, ENROLLMENTS]

SYSTEM_FIELDS = ["id", "createdAt", "updatedAt", "organizationId", "createdBy", "version", "syncId", "group"]


def node_tools(*needed: str) -> Path:
    """The npm tools of tests/node/package.json in build/node (node_modules
    paths such as ".bin/tsc" or "openapi-fetch"), installed the way `make
    node-deps` does when one is missing. Skips the test only when npm itself
    is missing; a failed install fails it. Returns build/node/node_modules."""
    import pytest

    mods = NODE_DIR / "node_modules"
    if all((mods / n).exists() for n in needed):
        return mods
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the npm test tools cannot be installed (apt-get install npm)")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests" / "node" / "package.json", NODE_DIR / "package.json")
    res = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
                         capture_output=True, text=True, timeout=900)
    missing = [n for n in needed if not (mods / n).exists()]
    if res.returncode != 0 or missing:
        pytest.fail(f"npm install into {NODE_DIR} failed ({res.returncode}; missing {missing}):\n{res.stdout}\n{res.stderr}")
    return mods
