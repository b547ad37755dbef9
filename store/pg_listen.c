/* pg_listen.c: what the other recordd processes on the same PostgreSQL
 * database did, as this one learns it.
 *
 * A batch that changed something the others must act on ends with a
 * NOTIFY on channel "recordd" (writer.c, pg_batch_end), sent inside its
 * transaction: PostgreSQL delivers it only once the transaction committed,
 * so a notification never precedes its data. Its payload is lines:
 *
 *   o <origin>            the process that sent it (first line)
 *   c <org>               org's change feed advanced: the commit hook runs
 *                         (WatchChanges streams read the log)
 *   s <org>               a schema was pushed: org's snapshot is read again
 *   r <org> <model> <id>  a claim was released: the remote hook runs
 *                         (waiting AcquireClaim calls try again)
 *   *                     anything may have changed (more than a payload
 *                         holds)
 *
 * and a trigger on the key and revocation tables sends "a" (credentials
 * changed: the remote hook drops cached credentials), also for changes
 * recordctl makes. A process skips the c, s and r lines of its own
 * notifications (it acted on them when it committed).
 *
 * The thread LISTENs on a connection of its own and waits on its socket
 * and on a pipe that store_pg_listen_stop writes to. After every
 * (re)connection, once LISTEN is in place, it treats everything as changed
 * (one catch-up: the feed's streams look at the log, every schema is read,
 * waiting claims try again, credential caches are dropped), so nothing
 * announced while it was away is missed. Reconnection waits 100 ms,
 * doubling to 1 s, between attempts. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/pg_int.h"
#include "store/store_int.h"

#define LISTEN_BACKOFF_MIN_MS 100
#define LISTEN_BACKOFF_MAX_MS 1000

struct store_pg_listener {
    store *s;
    pthread_t thread;
    int wake[2]; /* the stop pipe: [0] polled, [1] written */
    _Atomic bool connected;
};

static void remote(store *s, store_remote_kind kind, const char *org, const char *model,
                   const char *id)
{
    pthread_mutex_lock(&s->cmu);
    if (s->remote_fn != NULL)
        s->remote_fn(s->remote_arg, kind, org, model, id);
    pthread_mutex_unlock(&s->cmu);
}

void store_on_remote(store *s, store_remote_fn fn, void *arg)
{
    pthread_mutex_lock(&s->cmu);
    s->remote_fn = fn;
    s->remote_arg = arg;
    pthread_mutex_unlock(&s->cmu);
}

/* Reads org's schema again (NULL: every organisation's) on a pooled read
 * connection. A failure is left to the next notification or catch-up:
 * writes check the schema under their organisation's lock anyway. */
static void reload_schema(store *s, const char *org)
{
    rd_err err;
    rd_err_clear(&err);
    store_conn *c = store_thread_conn(s, &err);
    if (c != NULL)
        store_schema_reload(s, &c->cache, org, &err);
    store_conn_release(s);
}

/* Everything may have changed. */
static void catch_up(store *s)
{
    store_commit_signal(s);
    reload_schema(s, NULL);
    remote(s, STORE_REMOTE_CLAIM_RELEASED, NULL, NULL, NULL);
    remote(s, STORE_REMOTE_CREDENTIALS, NULL, NULL, NULL);
}

/* Splits the next line of *p into up to n space-separated words (in place);
 * returns how many. */
static int words(char **p, char **w, int n)
{
    char *line = *p, *end = strchr(line, '\n');
    if (end != NULL) {
        *end = '\0';
        *p = end + 1;
    } else {
        *p = line + strlen(line);
    }
    int k = 0;
    for (char *save = NULL, *t = strtok_r(line, " ", &save); t != NULL && k < n;
         t = strtok_r(NULL, " ", &save))
        w[k++] = t;
    return k;
}

static void handle(store *s, char *payload)
{
    bool mine = false, commit = false;
    char *p = payload, *w[4];
    while (*p != '\0') {
        int n = words(&p, w, 4);
        if (n == 0)
            continue;
        if (strcmp(w[0], "a") == 0) {
            remote(s, STORE_REMOTE_CREDENTIALS, NULL, NULL, NULL);
        } else if (strcmp(w[0], "o") == 0 && n == 2) {
            mine = strcmp(w[1], s->origin) == 0;
        } else if (mine) {
            continue;
        } else if (strcmp(w[0], "c") == 0) {
            commit = true;
        } else if (strcmp(w[0], "s") == 0 && n == 2) {
            reload_schema(s, w[1]);
        } else if (strcmp(w[0], "r") == 0 && n == 4) {
            remote(s, STORE_REMOTE_CLAIM_RELEASED, w[1], w[2], w[3]);
        } else if (strcmp(w[0], "*") == 0) {
            catch_up(s);
        }
    }
    if (commit)
        store_commit_signal(s);
}

/* Waits up to ms for the stop pipe; true when it was written to. */
static bool stop_requested(struct store_pg_listener *l, int ms)
{
    struct pollfd pf = {.fd = l->wake[0], .events = POLLIN};
    return poll(&pf, 1, ms) > 0;
}

static PGconn *listen_connect(store *s)
{
    char msg[512];
    PGconn *conn = store_pg_connect(s->path, msg, sizeof msg);
    if (conn == NULL)
        return NULL;
    PGresult *res = PQexec(conn, "LISTEN " STORE_PG_CHANNEL);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok || PQsetnonblocking(conn, 1) != 0) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static void *listen_main(void *arg)
{
    struct store_pg_listener *l = arg;
    store *s = l->s;
    int backoff = 0;
    pthread_setname_np(pthread_self(), "rd-listen");
    for (;;) {
        PGconn *conn = listen_connect(s);
        if (conn == NULL) {
            backoff = backoff == 0 ? LISTEN_BACKOFF_MIN_MS : 2 * backoff;
            if (backoff > LISTEN_BACKOFF_MAX_MS)
                backoff = LISTEN_BACKOFF_MAX_MS;
            if (stop_requested(l, backoff))
                return NULL;
            continue;
        }
        backoff = 0;
        atomic_store(&l->connected, true);
        catch_up(s);
        bool stop = false;
        while (!stop) {
            struct pollfd pf[2] = {{.fd = PQsocket(conn), .events = POLLIN},
                                   {.fd = l->wake[0], .events = POLLIN}};
            if (poll(pf, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            if (pf[1].revents != 0) {
                stop = true;
                break;
            }
            if (!PQconsumeInput(conn))
                break; /* the connection was lost: connect again */
            for (PGnotify *n; (n = PQnotifies(conn)) != NULL; PQfreemem(n))
                handle(s, n->extra);
        }
        atomic_store(&l->connected, false);
        PQfinish(conn);
        if (stop)
            return NULL;
    }
}

rd_code store_pg_listen_start(store *s, rd_err *err)
{
    if (store_db_dialect(s->wdb) != STORE_DIALECT_POSTGRES)
        return RD_OK;
    struct store_pg_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    l->s = s;
    if (pipe2(l->wake, O_CLOEXEC) != 0) {
        free(l);
        return rd_errf(err, RD_INTERNAL, NULL, "cannot create the listener's pipe");
    }
    if (pthread_create(&l->thread, NULL, listen_main, l) != 0) {
        close(l->wake[0]);
        close(l->wake[1]);
        free(l);
        return rd_errf(err, RD_INTERNAL, NULL, "cannot start the listener thread");
    }
    s->listener = l;
    return RD_OK;
}

void store_pg_listen_stop(store *s)
{
    struct store_pg_listener *l = s != NULL ? s->listener : NULL;
    if (l == NULL)
        return;
    ssize_t n;
    do
        n = write(l->wake[1], "x", 1);
    while (n < 0 && errno == EINTR);
    pthread_join(l->thread, NULL);
    close(l->wake[0]);
    close(l->wake[1]);
    free(l);
    s->listener = NULL;
}

bool store_pg_listening(store *s)
{
    return s->listener != NULL && atomic_load(&s->listener->connected);
}
