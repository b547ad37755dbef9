/* gw_http: the HTTP/JSON transport of the call core (svc_transport.h), on
 * libmicrohttpd in epoll thread-pool mode with suspend/resume. One gw_req
 * per HTTP request (MHD's con_cls). The access handler gathers the body,
 * matches the route and starts a call of the core for it (svc_call_new,
 * svc_call_admit, svc_call_dispatch), then suspends the connection, so no
 * MHD thread waits for a handler. The call decodes the JSON on its worker
 * after the auth step (decode_request) and runs the handler; its outcome
 * comes back through the finish callback, which renders it at once — the
 * reply message straight to JSON, a failure straight to problem+json —
 * into the gw_req's answer and resumes the connection; the access handler
 * then queues the answer. Server streams are Server-Sent Events: each
 * message is rendered to an event when it is sent and queued for the
 * content reader.
 *
 * Lifetimes: a gw_req has two references, MHD's (dropped in the request
 * completed callback) and the call's (dropped by the transport's release
 * callback when the call is freed). The gateway holds a reference on the
 * call (r->call) until it has rendered the outcome or the client went
 * away; whoever takes r->call out under r->mu releases it. Lock order:
 * gw->mu, then r->mu; svc_call_cancel is never called with r->mu held (a
 * stream's end callback may finish the call, which takes r->mu). */
#include "service/gw_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "google/protobuf/field_mask.pb-c.h"
#include "service/config.h"
#include "service/gw_json.h"
#include "service/gw_problem.h"
#include "service/gw_render.h"
#include "service/gw_route.h"
#include "service/svc_log.h"
#include "service/svc_metrics.h"
#include "service/svc_net.h"
#include "service/svc_tls.h"
#include "service/svc_transport.h"

extern unsigned char rd_descriptor_set[];
extern unsigned int rd_descriptor_set_len;

/* The gateway's own strings for one request (path, query, headers). */
#define REQ_ARENA_BYTES ((size_t)1 << 20)
#define MAX_QUERY_PARAMS 64
#define REQUEST_ID_MAX 128
#define CONNECTION_TIMEOUT_S 60
#define CONNECTION_LIMIT 1024 /* when the options leave it 0 */
#define TICK_MS 200

/* One Server-Sent Event, rendered. */
typedef struct sse_item {
    struct sse_item *next;
    size_t cost; /* the message's packed size: what the send queue limits count */
    char *text;  /* "id: …\ndata: {…}\n\n" (malloc'd) */
} sse_item;

typedef struct gw_req gw_req;

struct gw_http {
    struct MHD_Daemon *d;
    svc_ctx *ctx;
    gw_routes *routes;
    const char **route_names; /* "PATCH /v1/models/{model}/{id}" per route */
    size_t n_routes;
    int keepalive_ms;
    size_t max_message_bytes; /* 0: no limit */
    svc_tls *tls;             /* NULL: plain HTTP */
    char *cors_buf;           /* --cors-origins, its entries NUL-terminated in place */
    const char *cors[SVC_CORS_ORIGINS_MAX];
    size_t cors_len[SVC_CORS_ORIGINS_MAX];
    size_t n_cors; /* 0: CORS off, no CORS header on any answer */

    pthread_mutex_t mu; /* guards the gate, the stream list and the ticker */
    pthread_cond_t cv;
    bool closed;     /* gw_http_close: new requests get 503 */
    bool tick_stop;  /* the ticker exits */
    gw_req *streams; /* SSE responses being served */
    pthread_t ticker;
    bool ticker_started;
};

typedef enum req_kind { REQ_API, REQ_HEALTHZ, REQ_READYZ, REQ_METRICS, REQ_DOCS } req_kind;

struct gw_req {
    gw_http *gw;
    struct MHD_Connection *conn;
    int64_t start_us;
    size_t route; /* metrics row; gw->n_routes = "other" */
    int status;   /* HTTP status queued, for metrics */
    req_kind kind;
    rd_arena *arena; /* strings of the request (MHD thread, read by decode) */
    const char *path;
    const char *peer_ids;      /* the verified client certificate's names, or NULL */
    bool queued;               /* a response is queued */
    bool close;                /* answered before the body: close the connection after */
    auth_principal *principal; /* check_credential_early's, handed to the call */
    bool begun;                /* begin ran (once the body is in) */

    /* request, filled on the MHD thread before the call starts */
    gw_match match;
    bool matched;
    char *body;
    size_t body_len, body_cap;
    bool too_large;
    gw_var query[MAX_QUERY_PARAMS];
    size_t n_query;
    bool query_overflow;
    gw_render_req q; /* what of the request shapes its answer (gw_render.h) */
    const char *last_event_id;
    char request_id[REQUEST_ID_MAX + 1];
    svc_kv md[3]; /* request metadata the call reads (r->arena) */
    size_t n_md;

    pthread_mutex_t mu; /* everything below */
    int refs;
    svc_call *call; /* the gateway's reference; NULL once released */
    bool suspended;
    bool finished; /* the outcome is in */
    bool started;  /* a stream was accepted */
    int grpc_code;
    int rd_code;           /* for the log line: the outcome's or send_err's row */
    char principal_id[64]; /* for the log line, "" before authentication */
    char server_tx_id[40]; /* for the log line, "" when nothing was written */
    gw_answer ans;         /* the outcome, rendered (a stream's failure: its body is the event) */
    /* SSE */
    bool sse;
    sse_item *q_head, *q_tail;
    size_t q_len, q_bytes;
    bool ka_due;
    int64_t last_write_us;
    bool sse_ended;          /* the final event was produced */
    int64_t deadline_us;     /* Grpc-Timeout, 0 = none */
    bool expired;            /* the deadline ended the stream (ticker) */
    bool conn_gone;          /* MHD completed the request */
    gw_req *s_prev, *s_next; /* gw->streams (gw->mu) */
    bool s_listed;
    /* SSE output being written (MHD thread) */
    char *out;
    size_t out_len, out_off;
};

/* ---- small helpers ------------------------------------------------------------- */

static void req_unref(gw_req *r)
{
    pthread_mutex_lock(&r->mu);
    bool dead = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!dead)
        return;
    while (r->q_head != NULL) {
        sse_item *it = r->q_head;
        r->q_head = it->next;
        free(it->text);
        free(it);
    }
    free(r->out);
    gw_answer_free(&r->ans);
    free(r->body);
    auth_principal_free(r->principal); /* answered before its call started */
    rd_arena_free(r->arena);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Takes the gateway's call reference out of r (NULL when gone). */
static svc_call *take_call(gw_req *r)
{
    pthread_mutex_lock(&r->mu);
    svc_call *c = r->call;
    r->call = NULL;
    pthread_mutex_unlock(&r->mu);
    return c;
}

static void resume_locked(gw_req *r)
{
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
}

static const char *header(gw_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes a query component ('+' is a space) into a; NULL when
 * malformed, not UTF-8 or holding a NUL. */
static char *query_decode(rd_arena *a, const char *s)
{
    size_t n = strlen(s), j = 0;
    char *out = rd_arena_alloc(a, n + 1);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return NULL;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return NULL;
            out[j++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[j++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[j] = '\0';
    if (memchr(out, '\0', j) != NULL || !rd_utf8_valid(out, j))
        return NULL;
    return out;
}

/* ---- responses ------------------------------------------------------------------- */

/* CORS (docs/API.md, Browser access): the request headers the gateway
 * reads, which a browser may send across origins, and the response
 * headers it sets beyond the safelisted ones, which a page may read. */
#define CORS_ALLOW_HEADERS                                                                         \
    "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, Prefer, "              \
    "Last-Event-ID, X-Request-Id, Grpc-Timeout"
#define CORS_EXPOSE_HEADERS                                                                        \
    "ETag, Location, X-Request-Id, Idempotent-Replayed, Preference-Applied, Retry-After, "         \
    "WWW-Authenticate, Allow, X-Sync-Id, X-Server-Tx-Id, X-Client-Tx-Id"
#define CORS_MAX_AGE "600"

/* The request's Origin when it is in --cors-origins (the list's copy),
 * else NULL. Compared byte for byte: an origin is case-sensitive as
 * browsers serialize it, and the list holds that form only. */
static const char *cors_origin(gw_req *r)
{
    gw_http *gw = r->gw;
    if (gw->n_cors == 0)
        return NULL;
    const char *o = header(r, "Origin");
    if (o == NULL)
        return NULL;
    size_t n = strnlen(o, SVC_ORIGIN_MAX + 1);
    for (size_t i = 0; n <= SVC_ORIGIN_MAX && i < gw->n_cors; i++)
        if (gw->cors_len[i] == n && memcmp(gw->cors[i], o, n) == 0)
            return gw->cors[i];
    return NULL;
}

static void add_common_headers(gw_req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->gw->n_cors > 0) {
        /* with CORS on, every answer depends on Origin: caches must key on it */
        MHD_add_response_header(resp, "Vary", "Origin");
        const char *origin = cors_origin(r);
        if (origin != NULL) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
            MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
        }
    }
}

/* Queues a response with body (malloc'd, taken; may be NULL) and status. */
static enum MHD_Result queue(gw_req *r, int status, const char *content_type, char *body,
                             size_t len, struct MHD_Response **out)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body != NULL ? body : (void *)"",
        body != NULL ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    if (content_type != NULL)
        MHD_add_response_header(resp, "Content-Type", content_type);
    add_common_headers(r, resp);
    if (out != NULL) {
        *out = resp; /* the caller adds headers, queues and destroys */
        r->status = status;
        return MHD_YES;
    }
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->queued = true;
    return ok;
}

static enum MHD_Result finish_queue(gw_req *r, struct MHD_Response *resp)
{
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    return ok;
}

/* Queues answer a (consumed). */
static enum MHD_Result send_answer(gw_req *r, gw_answer *a)
{
    struct MHD_Response *resp;
    char *body = a->body;
    a->body = NULL;
    enum MHD_Result ok = queue(r, a->status, a->ctype, body, a->len, &resp);
    if (ok == MHD_YES) {
        for (size_t i = 0; i < a->n_headers; i++)
            MHD_add_response_header(resp, a->headers[i].name, a->headers[i].value);
        if (r->close)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        ok = finish_queue(r, resp);
    }
    gw_answer_free(a);
    return ok;
}

/* Sends problem p (its body consumed). */
static enum MHD_Result send_problem(gw_req *r, gw_problem *p, const char *allow)
{
    gw_answer a = {0};
    gw_answer_problem(&a, p);
    if (allow != NULL)
        gw_answer_header(&a, "Allow", allow);
    return send_answer(r, &a);
}

/* Whether an Allow list ("GET, PATCH") names verb. */
static bool allow_has(const char *allow, const char *verb)
{
    size_t n = strlen(verb);
    for (const char *p = allow; (p = strstr(p, verb)) != NULL; p += n)
        if ((p == allow || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

static enum MHD_Result send_err(gw_req *r, rd_code code, int status, const char *field,
                                const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_err(gw_req *r, rd_code code, int status, const char *field,
                                const char *allow, const char *fmt, ...)
{
    rd_err err;
    va_list ap;
    va_start(ap, fmt);
    rd_err_clear(&err);
    err.code = code;
    r->rd_code = (int)code; /* for the log line */
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    if (field != NULL)
        snprintf(err.field, sizeof err.field, "%s", field);
    gw_problem p;
    gw_problem_from_err(&err, status, r->path, &p);
    return send_problem(r, &p, allow);
}

static enum MHD_Result send_text(gw_req *r, int status, const char *content_type, const char *text)
{
    char *copy = strdup(text);
    if (copy == NULL)
        return MHD_NO;
    return queue(r, status, content_type, copy, strlen(copy), NULL);
}

/* ---- the transport --------------------------------------------------------------- */

/* A new message of d in a (protobuf-c init in arena memory). */
static ProtobufCMessage *new_message(rd_arena *a, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = rd_arena_alloc(a, d->sizeof_message);
    if (m != NULL)
        protobuf_c_message_init(d, m);
    return m;
}

static const ProtobufCFieldDescriptor *field_of(const ProtobufCMessageDescriptor *d,
                                                const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(d, name);
}

/* Whether a query parameter names the field (proto or json name). */
static bool names(const ProtobufCMessageDescriptor *d, const char *param, const char *proto_name)
{
    const ProtobufCFieldDescriptor *f = field_of(d, proto_name);
    if (f == NULL)
        return false;
    if (strcmp(param, f->name) == 0)
        return true;
    /* the lowerCamelCase json name: "expected_version" → "expectedVersion" */
    const char *p = param;
    for (const char *s = f->name; *s != '\0'; s++, p++) {
        if (*s == '_' && s[1] != '\0') {
            s++;
            if (*p != (*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s))
                return false;
        } else if (*p != *s) {
            return false;
        }
    }
    return *p == '\0';
}

/* The top-level field a query parameter names (proto or json name); NULL
 * for a dotted path or no such field. */
static const ProtobufCFieldDescriptor *query_field(const ProtobufCMessageDescriptor *d,
                                                   const char *param)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (names(d, param, d->fields[i].name))
            return &d->fields[i];
    return NULL;
}

/* The list parameters of the record reads: ?expand=a,b.c (comma-separated
 * and/or repeated) into the repeated `expand`, and ?fields=a,b.c (also
 * readMask / read_mask) into read_mask's paths verbatim: they are record
 * field names, not the lowerCamelCase proto field names the JSON form of a
 * FieldMask converts. 1 when param was one of them (appended), 0 when not,
 * -1 on error (err set). */
static int list_param(ProtobufCMessage *m, const char *param, const char *value, rd_arena *a,
                      rd_err *err)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const ProtobufCFieldDescriptor *f = NULL;
    bool mask = false;
    if (strcmp(param, "expand") == 0) {
        f = field_of(d, "expand");
        if (f == NULL || f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_STRING)
            return 0;
    } else if (strcmp(param, "fields") == 0 || names(d, param, "read_mask")) {
        f = field_of(d, "read_mask");
        if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE ||
            f->descriptor != &google__protobuf__field_mask__descriptor)
            return 0;
        mask = true;
    } else {
        return 0;
    }
    size_t n = 0;
    for (const char *p = value; *p != '\0'; p++)
        n += *p == ',';
    n += 1;
    char ***items;
    size_t *count;
    if (mask) {
        Google__Protobuf__FieldMask **fm = (void *)((char *)m + f->offset);
        if (*fm == NULL) {
            *fm = rd_arena_alloc(a, sizeof **fm);
            if (*fm == NULL)
                goto oom;
            google__protobuf__field_mask__init(*fm);
        }
        items = &(*fm)->paths;
        count = &(*fm)->n_paths;
    } else {
        items = (void *)((char *)m + f->offset);
        count = (void *)((char *)m + f->quantifier_offset);
    }
    char **all = rd_arena_alloc(a, (*count + n) * sizeof *all);
    if (all == NULL)
        goto oom;
    if (*count > 0)
        memcpy(all, *items, *count * sizeof *all);
    size_t k = *count;
    for (const char *p = value;;) {
        size_t len = strcspn(p, ",");
        if (len > 0 && (all[k++] = rd_arena_strndup(a, p, len)) == NULL)
            goto oom;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *items = all;
    *count = k;
    return 1;
oom:
    rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    return -1;
}

/* svc_transport.decode: on the worker after the auth step. Builds the
 * request message from the body (per the rule's body), the query
 * parameters, the path variables and the headers that map to fields. */
static ProtobufCMessage *decode_request(void *arg, svc_call *call, rd_err *err)
{
    gw_req *r = arg;
    rd_arena *a = svc_call_arena(call);
    const ProtobufCMessageDescriptor *d = r->match.method->req;
    ProtobufCMessage *m = NULL;
    json_t *body = NULL;
    const char *rule = r->match.body;

    if (rule != NULL && r->body_len > 0 && gw_json_parse(r->body, r->body_len, &body, err) != RD_OK)
        return NULL;
    if (rule != NULL && strcmp(rule, "*") == 0) {
        if (r->n_query > 0) {
            rd_errf(err, RD_INVALID_BODY, r->query[0].field,
                    "this route takes its fields in the body, not as query parameters");
            goto fail;
        }
        if (body != NULL) {
            if (gw_json_decode(d, body, a, &m, err) != RD_OK)
                goto fail;
        } else if ((m = new_message(a, d)) == NULL) {
            goto oom;
        }
    } else {
        if ((m = new_message(a, d)) == NULL)
            goto oom;
        for (size_t i = 0; i < r->n_query; i++) {
            const char *k = r->query[i].field;
            for (size_t v = 0; v < r->match.n_vars; v++)
                if (names(d, k, r->match.vars[v].field)) {
                    rd_errf(err, RD_INVALID_BODY, k, "%s is part of the path", k);
                    goto fail;
                }
            if (rule != NULL && names(d, k, rule)) {
                rd_errf(err, RD_INVALID_BODY, k, "%s is the request body", k);
                goto fail;
            }
            int lp = list_param(m, k, r->query[i].value, a, err);
            if (lp < 0)
                goto fail;
            if (lp > 0)
                continue;
            const ProtobufCFieldDescriptor *qf = query_field(d, k);
            for (size_t j = 0; qf != NULL && qf->label != PROTOBUF_C_LABEL_REPEATED && j < i; j++)
                if (query_field(d, r->query[j].field) == qf) {
                    rd_errf(err, RD_INVALID_BODY, k,
                            "%s is given more than once; only a repeated field may be", k);
                    goto fail;
                }
            if (r->q.has_if_match &&
                (names(d, k, "expected_version") || names(d, k, "expected_versions"))) {
                rd_errf(err, RD_VALIDATION_FAILED, k,
                        "give the expected version in If-Match or in %s, not both", k);
                goto fail;
            }
            if (gw_json_set(m, k, r->query[i].value, a, err) != RD_OK)
                goto fail;
        }
        if (body != NULL && gw_json_set_value(m, rule, body, a, err) != RD_OK)
            goto fail;
    }
    for (size_t v = 0; v < r->match.n_vars; v++)
        if (gw_json_set(m, r->match.vars[v].field, r->match.vars[v].value, a, err) != RD_OK)
            goto fail;
    if (r->q.has_if_match && !r->q.if_match_any && field_of(d, "expected_version") != NULL) {
        /* one tag: expectedVersion; several: expectedVersions; none that
         * can match: version 0, which no record has (versions start at 1) */
        char v[32];
        if (r->q.n_if_match <= 1) {
            snprintf(v, sizeof v, "%lld", (long long)(r->q.n_if_match ? r->q.if_match[0] : 0));
            if (gw_json_set(m, "expected_version", v, a, err) != RD_OK)
                goto fail;
        }
        for (size_t i = 0; r->q.n_if_match > 1 && i < r->q.n_if_match; i++) {
            snprintf(v, sizeof v, "%lld", (long long)r->q.if_match[i]);
            if (gw_json_set(m, "expected_versions", v, a, err) != RD_OK)
                goto fail;
        }
    }
    if (r->q.has_if_match && !r->q.if_match_any && field_of(d, "expected_revision") != NULL) {
        /* the schema's revision: one tag; none that can match: -1 */
        const ProtobufCFieldDescriptor *f = field_of(d, "expected_revision");
        char v[32];
        if (*(void *const *)(const void *)((const char *)m + f->offset) != NULL) {
            rd_errf(err, RD_VALIDATION_FAILED, "expectedRevision",
                    "give the expected revision in If-Match or in expectedRevision, not both");
            goto fail;
        }
        if (r->q.n_if_match > 1) {
            rd_errf(err, RD_INVALID_BODY, "If-Match", "If-Match on the schema takes one revision");
            goto fail;
        }
        snprintf(v, sizeof v, "%lld", (long long)(r->q.n_if_match ? r->q.if_match[0] : -1));
        if (gw_json_set(m, "expected_revision", v, a, err) != RD_OK)
            goto fail;
    }
    if (r->q.want_repr && field_of(d, "return_record") != NULL &&
        gw_json_set(m, "return_record", "true", a, err) != RD_OK)
        goto fail;
    if (r->last_event_id != NULL && field_of(d, "since_sync_id") != NULL &&
        gw_json_set(m, "since_sync_id", r->last_event_id, a, err) != RD_OK) {
        snprintf(err->field, sizeof err->field, "Last-Event-ID");
        goto fail;
    }
    /* what a gRPC client could not send, nobody could read back (GetRecord,
     * the change feed): the same limit on the encoded message */
    size_t packed = protobuf_c_message_get_packed_size(m);
    if (r->gw->max_message_bytes > 0 && packed > r->gw->max_message_bytes) {
        rd_errf(err, RD_BODY_TOO_LARGE, NULL,
                "the request is %zu bytes once encoded, more than the server's message limit "
                "(%zu bytes, --max-message-bytes)",
                packed, r->gw->max_message_bytes);
        goto fail;
    }
    /* the id a create was given, for Location (MHD is waiting: the arena is ours) */
    const ProtobufCFieldDescriptor *idf = field_of(d, "id");
    if (idf != NULL && idf->type == PROTOBUF_C_TYPE_STRING &&
        idf->label != PROTOBUF_C_LABEL_REPEATED) {
        const char *id = *(const char *const *)(const void *)((const char *)m + idf->offset);
        if (id != NULL && id[0] != '\0')
            r->q.create_id = rd_arena_strdup(r->arena, id);
    }
    json_decref(body);
    return m;
oom:
    rd_errf(err, RD_INTERNAL, NULL, "out of memory");
fail:
    json_decref(body);
    return NULL;
}

static bool on_metadata(void *arg, const char *key, const char **value, size_t *len)
{
    gw_req *r = arg;
    for (size_t i = 0; i < r->n_md; i++)
        if (strcmp(r->md[i].key, key) == 0) {
            *value = r->md[i].value;
            *len = strlen(*value);
            return true;
        }
    return false;
}

static bool on_peer_presents(void *arg, const char *id)
{
    gw_req *r = arg;
    return r->peer_ids != NULL && svc_tls_ids_contain(r->peer_ids, id);
}

/* A stream message: rendered to its event now (msg is the sender's), then
 * queued for the content reader. */
static rd_code on_send(void *arg, svc_call *call, const ProtobufCMessage *msg, size_t len)
{
    gw_req *r = arg;
    (void)call;
    sse_item *it = malloc(sizeof *it);
    char *text = it != NULL ? gw_render_event(msg) : NULL;
    if (text == NULL) {
        free(it);
        return RD_INTERNAL;
    }
    it->next = NULL;
    it->cost = len;
    it->text = text;
    rd_code rc = RD_OK;
    pthread_mutex_lock(&r->mu);
    if (r->conn_gone) {
        rc = RD_UNAVAILABLE;
    } else if (r->q_len >= SVC_SEND_QUEUE_MAX || r->q_bytes + len > SVC_SEND_QUEUE_MAX_BYTES) {
        rc = RD_RATE_LIMITED;
    } else {
        if (r->q_tail != NULL)
            r->q_tail->next = it;
        else
            r->q_head = it;
        r->q_tail = it;
        r->q_len++;
        r->q_bytes += len;
        it = NULL;
        resume_locked(r);
    }
    pthread_mutex_unlock(&r->mu);
    if (it != NULL) {
        free(it->text);
        free(it);
    }
    return rc;
}

/* On the thread that finished the call: renders the outcome (o and the
 * reply it points to are alive until the call is released, which is after
 * this returns) into r->ans, notes what the log line needs and resumes
 * the connection. */
static void on_finish(void *arg, svc_call *call, const svc_outcome *o)
{
    gw_req *r = arg;
    gw_answer a = {0};
    rd_code code = gw_render_outcome(&r->q, r->match.method, o, svc_call_arena(call), &a);
    const auth_principal *p = svc_call_principal(call);
    pthread_mutex_lock(&r->mu);
    r->grpc_code = rd_code_grpc(o->err.code);
    r->rd_code = (int)code;
    snprintf(r->principal_id, sizeof r->principal_id, "%s", p ? auth_principal_id(p) : "");
    snprintf(r->server_tx_id, sizeof r->server_tx_id, "%s", svc_call_tx_id(call));
    gw_answer_free(&r->ans);
    r->ans = a;
    r->finished = true;
    resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

static void on_started(void *arg, svc_call *call)
{
    gw_req *r = arg;
    (void)call;
    pthread_mutex_lock(&r->mu);
    r->started = true;
    resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

static void on_release(void *arg, svc_call *call)
{
    (void)call;
    req_unref(arg);
}

static const svc_transport TRANSPORT = {
    .kind = SVC_TRANSPORT_HTTP,
    .metadata = on_metadata,
    .peer_presents = on_peer_presents,
    .decode = decode_request,
    .send = on_send,
    .finish = on_finish,
    .started = on_started,
    .release = on_release,
};

/* ---- Server-Sent Events ------------------------------------------------------------- */

static void set_out(gw_req *r, char *text)
{
    free(r->out);
    r->out = text;
    r->out_len = text ? strlen(text) : 0;
    r->out_off = 0;
}

/* The final event of a stream that ended with an error: its problem (the
 * rendered outcome), or the deadline's. */
static char *error_event(gw_req *r)
{
    gw_problem p;
    char *json = NULL;
    if (r->expired) {
        rd_err err;
        rd_errf(&err, RD_DEADLINE_EXCEEDED, NULL, "the Grpc-Timeout of the stream passed");
        gw_problem_from_err(&err, 0, r->path, &p);
        json = p.body != NULL ? gw_json_dump(p.body, NULL) : NULL;
        json_decref(p.body);
    }
    char *out = gw_render_error_event(json != NULL ? json : r->ans.body);
    free(json);
    return out;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    gw_req *r = cls;
    (void)pos;
    for (;;) {
        if (r->out_off < r->out_len) {
            size_t n = r->out_len - r->out_off;
            if (n > max)
                n = max;
            memcpy(buf, r->out + r->out_off, n);
            r->out_off += n;
            pthread_mutex_lock(&r->mu);
            r->last_write_us = rd_now_us();
            pthread_mutex_unlock(&r->mu);
            return (ssize_t)n;
        }
        pthread_mutex_lock(&r->mu);
        sse_item *it = r->q_head;
        if (it != NULL) {
            r->q_head = it->next;
            if (r->q_head == NULL)
                r->q_tail = NULL;
            r->q_len--;
            r->q_bytes -= it->cost;
            pthread_mutex_unlock(&r->mu);
            set_out(r, it->text);
            free(it);
            continue;
        }
        if (r->finished && !r->sse_ended) {
            r->sse_ended = true;
            int code = r->grpc_code;
            bool expired = r->expired;
            pthread_mutex_unlock(&r->mu);
            set_out(r, code != 0 || expired ? error_event(r) : NULL);
            svc_call *c = take_call(r);
            if (c != NULL)
                svc_call_release(c);
            continue;
        }
        if (r->sse_ended) {
            pthread_mutex_unlock(&r->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (r->ka_due) {
            r->ka_due = false;
            pthread_mutex_unlock(&r->mu);
            set_out(r, strdup(": keep-alive\n\n"));
            continue;
        }
        r->suspended = true;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
}

static void stream_list(gw_req *r, bool add)
{
    gw_http *gw = r->gw;
    pthread_mutex_lock(&gw->mu);
    if (add && !r->s_listed) {
        r->s_listed = true;
        r->s_prev = NULL;
        r->s_next = gw->streams;
        if (gw->streams != NULL)
            gw->streams->s_prev = r;
        gw->streams = r;
    } else if (!add && r->s_listed) {
        r->s_listed = false;
        if (r->s_prev != NULL)
            r->s_prev->s_next = r->s_next;
        else
            gw->streams = r->s_next;
        if (r->s_next != NULL)
            r->s_next->s_prev = r->s_prev;
    }
    pthread_mutex_unlock(&gw->mu);
}

static enum MHD_Result start_sse(gw_req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, r, NULL);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    add_common_headers(r, resp);
    set_out(r, strdup(": stream open\n\n")); /* headers and a first byte go out now */
    r->sse = true;
    r->status = 200;
    pthread_mutex_lock(&r->mu);
    r->last_write_us = rd_now_us();
    pthread_mutex_unlock(&r->mu);
    stream_list(r, true);
    enum MHD_Result ok = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    r->queued = true;
    return ok;
}

/* ---- the access handler -------------------------------------------------------------- */

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    gw_req *r = cls;
    (void)kind;
    if (r->n_query == MAX_QUERY_PARAMS) {
        r->query_overflow = true;
        return MHD_NO;
    }
    char *k = query_decode(r->arena, key);
    char *v = query_decode(r->arena, value != NULL ? value : "");
    if (k == NULL || v == NULL) {
        r->query_overflow = true;
        return MHD_NO;
    }
    r->query[r->n_query].field = k;
    r->query[r->n_query].value = v;
    r->n_query++;
    return MHD_YES;
}

/* Parses If-Match: "<version>" (a strong entity tag holding the version). */
/* If-Match (RFC 9110 13.1.1): "*" or a comma-separated list of entity tags.
 * Our tags are strong and hold a record version ("3"); a weak tag (W/"3")
 * never matches under the strong comparison If-Match uses, nor does a
 * strong tag that is not a version, so both are skipped. False on a syntax
 * error or more than GW_IF_MATCH_MAX tags. */
static bool parse_if_match(gw_req *r, const char *v)
{
    const char *p = v;
    while (*p == ' ' || *p == '\t')
        p++;
    if (p[0] == '*') {
        for (p++; *p == ' ' || *p == '\t'; p++)
            ;
        r->q.if_match_any = true;
        return *p == '\0';
    }
    size_t tags = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return tags > 0;
        bool weak = p[0] == 'W' && p[1] == '/';
        if (weak)
            p += 2;
        if (*p != '"')
            return false;
        const char *open = ++p;
        while (*p != '"' && *p != '\0') {
            if ((unsigned char)*p < 0x21 || *p == 0x7f)
                return false;
            p++;
        }
        if (*p != '"' || ++tags > GW_IF_MATCH_MAX)
            return false;
        size_t n = (size_t)(p - open);
        p++;
        int64_t x = 0;
        bool version = n > 0 && !weak;
        for (size_t i = 0; version && i < n; i++) {
            if (open[i] < '0' || open[i] > '9' || x > (INT64_MAX - 9) / 10)
                version = false;
            else
                x = x * 10 + (open[i] - '0');
        }
        if (version)
            r->q.if_match[r->q.n_if_match++] = x;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != ',' && *p != '\0')
            return false;
    }
}

/* Parses a Grpc-Timeout value ("5S", "250m": digits and a unit H M S m u
 * n) into µs; 0 when malformed. */
static int64_t parse_timeout(const char *v)
{
    int64_t x = 0;
    size_t i = 0;
    for (; v[i] >= '0' && v[i] <= '9' && i < 8; i++)
        x = x * 10 + (v[i] - '0');
    if (i == 0 || v[i] == '\0' || v[i + 1] != '\0')
        return 0;
    switch (v[i]) {
    case 'H':
        return x * 3600 * 1000000;
    case 'M':
        return x * 60 * 1000000;
    case 'S':
        return x * 1000000;
    case 'm':
        return x * 1000;
    case 'u':
        return x;
    case 'n':
        return x / 1000 > 0 ? x / 1000 : 1;
    default:
        return 0;
    }
}

/* Reads Prefer (return=minimal / return=representation). */
static void parse_prefer(gw_req *r, const char *v)
{
    for (const char *p = v; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == ',' || *p == ';')
            p++;
        size_t n = strcspn(p, ",;");
        if (n == 14 && strncasecmp(p, "return=minimal", 14) == 0)
            r->q.want_minimal = true;
        else if (n == 21 && strncasecmp(p, "return=representation", 21) == 0)
            r->q.want_repr = true;
        p += n;
    }
    if (r->q.want_minimal && r->q.want_repr)
        r->q.want_minimal = r->q.want_repr = false; /* contradictory: neither applies */
}

static bool media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n) != 0)
        return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static enum MHD_Result serve_health(gw_req *r)
{
    gw_http *gw = r->gw;
    if (r->kind == REQ_HEALTHZ)
        return send_text(r, 200, "application/json", "{\"status\":\"ok\"}");
    if (r->kind == REQ_READYZ) {
        pthread_mutex_lock(&gw->mu); /* see start_call: the server only with the gate open */
        bool ready = !gw->closed && gw->ctx->db != NULL && svc_server_serving(gw->ctx->server);
        pthread_mutex_unlock(&gw->mu);
        /* the store's probe may take a round trip to the database: not under
         * the lock (the store outlives the gateway's listener) */
        ready = ready && store_ready(gw->ctx->db);
        return ready ? send_text(r, 200, "application/json", "{\"status\":\"ready\"}")
                     : send_text(r, 503, "application/json", "{\"status\":\"not ready\"}");
    }
    size_t len = 0;
    char *text = svc_metrics_render(gw->ctx->db, &len);
    if (text == NULL)
        return send_err(r, RD_INTERNAL, 0, NULL, NULL, "out of memory");
    return queue(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
}

/* GET /problems (the error catalogue) and /problems/{code} (one entry), as
 * Markdown: what a problem's type urn:recordd:problem:<code> means. Static
 * text, so no credential is asked. */
static enum MHD_Result serve_problems(gw_req *r, const char *code)
{
    if (code == NULL) {
        char *md = rd_code_catalogue_md();
        if (md == NULL)
            return send_err(r, RD_INTERNAL, 0, NULL, NULL, "out of memory");
        return queue(r, 200, "text/markdown; charset=utf-8", md, strlen(md), NULL);
    }
    rd_code c = rd_code_from_str(code);
    if (strcmp(rd_code_str(c), code) != 0)
        return send_err(r, RD_NOT_FOUND, 0, NULL, NULL, "no problem type '%.64s'", code);
    char buf[4096];
    rd_code_entry_md(c, buf, sizeof buf);
    return send_text(r, 200, "text/markdown; charset=utf-8", buf);
}

static bool is_probe_path(const char *url)
{
    return strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
           strcmp(url, "/metrics") == 0;
}

static bool is_problems_path(const char *url)
{
    return strncmp(url, "/problems", 9) == 0 && (url[9] == '\0' || url[9] == '/');
}

/* A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)
 * with CORS on: answered here, before any credential or handler. An
 * allowed origin gets 204 with the path's methods and the headers the
 * gateway reads; another origin 403; a path without routes 404. */
static enum MHD_Result serve_preflight(gw_req *r, const char *url)
{
    char allow[136];
    if (is_probe_path(url) || is_problems_path(url)) {
        snprintf(allow, sizeof allow, "GET, HEAD");
    } else {
        gw_match m;
        char verbs[128] = "";
        if (gw_routes_match(r->gw->routes, "OPTIONS", url, r->arena, &m, verbs, sizeof verbs) ==
            GW_ROUTE_NOT_FOUND)
            return send_err(r, RD_NOT_FOUND, 0, NULL, NULL, "no route for %.200s", url);
        snprintf(allow, sizeof allow, "%s%s", verbs, allow_has(verbs, "GET") ? ", HEAD" : "");
    }
    if (cors_origin(r) == NULL)
        return send_err(r, RD_PERMISSION_DENIED, 0, "Origin", NULL,
                        "origin %.200s may not call this API from a browser (it is not in "
                        "--cors-origins)",
                        header(r, "Origin"));
    struct MHD_Response *resp;
    if (queue(r, 204, NULL, NULL, 0, &resp) != MHD_YES)
        return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
    MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
    return finish_queue(r, resp);
}

/* The first call for a request: headers are in, the body is not. Sets up
 * r and answers what needs no body (health, metrics, no route). */
static enum MHD_Result begin(gw_req *r, const char *url, const char *verb)
{
    gw_http *gw = r->gw;
    const char *rid = header(r, "X-Request-Id");
    bool rid_ok = rid != NULL && rid[0] != '\0' && strlen(rid) <= REQUEST_ID_MAX;
    for (const char *p = rid; rid_ok && *p != '\0'; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            rid_ok = false;
    if (rid_ok)
        snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    else
        rd_random_id("req_", r->request_id, 20);
    r->path = rd_arena_strdup(r->arena, url);
    if (r->path == NULL)
        return MHD_NO;

    if (gw->n_cors > 0 && strcmp(verb, "OPTIONS") == 0 && header(r, "Origin") != NULL &&
        header(r, "Access-Control-Request-Method") != NULL)
        return serve_preflight(r, url);
    bool get = strcmp(verb, "GET") == 0 || strcmp(verb, "HEAD") == 0;
    if (is_probe_path(url)) {
        if (!get)
            return send_err(r, RD_METHOD_NOT_ALLOWED, 0, NULL, "GET, HEAD",
                            "%s answers GET and HEAD only", url);
        r->kind = url[1] == 'h' ? REQ_HEALTHZ : url[1] == 'r' ? REQ_READYZ : REQ_METRICS;
        return serve_health(r);
    }
    if (is_problems_path(url)) {
        if (!get)
            return send_err(r, RD_METHOD_NOT_ALLOWED, 0, NULL, "GET, HEAD",
                            "%s answers GET and HEAD only", "/problems");
        r->kind = REQ_DOCS;
        return serve_problems(r, url[9] == '/' ? url + 10 : NULL);
    }
    char allow[128];
    gw_route_result rr = gw_routes_match(gw->routes, strcmp(verb, "HEAD") == 0 ? "GET" : verb, url,
                                         r->arena, &r->match, allow, sizeof allow);
    if (rr == GW_ROUTE_NOT_FOUND)
        return send_err(r, RD_NOT_FOUND, 0, NULL, NULL, "no route for %.200s", url);
    if (rr == GW_ROUTE_METHOD_NOT_ALLOWED) {
        /* HEAD is served wherever GET is */
        char with_head[sizeof allow + 8];
        snprintf(with_head, sizeof with_head, "%s%s", allow,
                 allow_has(allow, "GET") ? ", HEAD" : "");
        return send_err(r, RD_METHOD_NOT_ALLOWED, 0, NULL, with_head, "%s is not allowed on %.200s",
                        verb, url);
    }
    r->matched = true;
    r->route = r->match.index;
    r->q.path = r->path;
    r->q.response_body = r->match.response_body;

    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_query, r);
    if (r->query_overflow)
        return send_err(r, RD_INVALID_BODY, 0, NULL, NULL,
                        "malformed query string (bad percent-encoding, not UTF-8, or more than "
                        "%d parameters)",
                        MAX_QUERY_PARAMS);
    const char *im = header(r, "If-Match");
    if (im != NULL) {
        if (!parse_if_match(r, im))
            return send_err(r, RD_INVALID_BODY, 0, "If-Match", NULL,
                            "If-Match must be * or a comma-separated list of at most %d entity "
                            "tags, such as \"3\", \"4\"",
                            GW_IF_MATCH_MAX);
        r->q.has_if_match = true;
        /* ignoring it would run the method unconditionally (RFC 9110 13.1.1) */
        if (field_of(r->match.method->req, "expected_version") == NULL &&
            field_of(r->match.method->req, "expected_revision") == NULL &&
            !r->match.method->http_if_match_on_reply)
            return send_err(r, RD_INVALID_BODY, 0, "If-Match", NULL,
                            "If-Match applies to one record (read, update, replace, delete) or the "
                            "schema (push); "
                            "this route takes none");
    }
    const char *inm = header(r, "If-None-Match");
    if (inm != NULL && strlen(inm) <= 1024)
        r->q.if_none_match = rd_arena_strdup(r->arena, inm);
    const char *prefer = header(r, "Prefer");
    if (prefer != NULL)
        parse_prefer(r, prefer);
    const char *lei = header(r, "Last-Event-ID");
    if (lei != NULL && lei[0] != '\0')
        r->last_event_id = rd_arena_strdup(r->arena, lei);
    return MHD_YES;
}

static enum MHD_Result respond(gw_req *r);

/* The body is in: checks it and starts the call. */
static enum MHD_Result start_call(gw_req *r, const char *verb)
{
    gw_http *gw = r->gw;
    if (r->too_large)
        return send_err(r, RD_BODY_TOO_LARGE, 0, NULL, NULL,
                        "the request body is larger than %zu bytes", GW_JSON_MAX_BODY);
    if (r->match.body == NULL && r->body_len > 0) /* ignoring it could drop a guard */
        return send_err(r, RD_INVALID_BODY, 0, NULL, NULL,
                        "this route takes no request body; send its fields as query "
                        "parameters (expectedVersion also as If-Match)");
    if (r->match.body != NULL && r->body_len > 0) {
        const char *ct = header(r, "Content-Type");
        bool ok =
            ct != NULL &&
            (media_type_is(ct, "application/json") ||
             (strcmp(verb, "PATCH") == 0 && media_type_is(ct, "application/merge-patch+json")));
        if (!ok)
            return send_err(r, RD_UNSUPPORTED_MEDIA_TYPE, 0, "Content-Type", NULL,
                            "the body must be application/json%s",
                            strcmp(verb, "PATCH") == 0 ? " or application/merge-patch+json" : "");
    }
    int64_t deadline = 0;
    const char *to = header(r, "Grpc-Timeout");
    if (to != NULL) {
        int64_t us = parse_timeout(to);
        if (us <= 0)
            return send_err(r, RD_INVALID_BODY, 0, "Grpc-Timeout", NULL,
                            "Grpc-Timeout must be digits and a unit (H, M, S, m, u, n)");
        deadline = rd_now_us() + us;
        r->deadline_us = deadline;
    }

    /* what the call reads of the request, copied: the call may outlive
     * the connection */
    static const char *const forwarded[][2] = {{"Authorization", "authorization"},
                                               {"Idempotency-Key", "idempotency-key"}};
    r->md[r->n_md++] = (svc_kv){"x-request-id", r->request_id};
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        const char *v = header(r, forwarded[i][0]);
        if (v != NULL)
            r->md[r->n_md++] = (svc_kv){forwarded[i][1], rd_arena_strdup(r->arena, v)};
    }
    bool oom = false;
    for (size_t i = 0; i < r->n_md; i++)
        oom = oom || r->md[i].value == NULL;
    if (r->peer_ids != NULL)
        oom = oom || (r->peer_ids = rd_arena_strdup(r->arena, r->peer_ids)) == NULL;
    if (oom)
        return send_err(r, RD_INTERNAL, 0, NULL, NULL, "out of memory starting the call");

    /* The server is touched only with the gate open, under gw->mu: main
     * closes the gate before svc_server_stop, which frees the server. */
    svc_call *c = NULL;
    pthread_mutex_lock(&gw->mu);
    bool closed = gw->closed;
    if (!closed)
        c = svc_call_new(gw->ctx->server, r->match.method, &TRANSPORT, r, deadline);
    pthread_mutex_unlock(&gw->mu);
    if (closed)
        return send_err(r, RD_UNAVAILABLE, 0, NULL, NULL, "server is shutting down");
    if (c == NULL)
        return send_err(r, RD_INTERNAL, 0, NULL, NULL, "out of memory starting the call");
    pthread_mutex_lock(&r->mu);
    r->refs++;   /* the call's, dropped by on_release */
    r->call = c; /* the transport's reference */
    pthread_mutex_unlock(&r->mu);
    if (r->principal != NULL) {
        svc_call_set_principal(c, r->principal);
        r->principal = NULL;
    }
    if (svc_call_admit(c))
        svc_call_dispatch(c, false);
    pthread_mutex_lock(&r->mu);
    bool ready = r->finished || r->started || r->q_head != NULL;
    if (!ready) {
        r->suspended = true;
        MHD_suspend_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
    return ready ? respond(r) : MHD_YES; /* else the response comes when resumed */
}

/* Resumed (or the call was already done): renders what came back. */
static enum MHD_Result respond(gw_req *r)
{
    pthread_mutex_lock(&r->mu);
    bool finished = r->finished, started = r->started, msgs = r->q_head != NULL;
    int code = r->grpc_code;
    pthread_mutex_unlock(&r->mu);
    if (r->match.method->kind == SVC_SERVER_STREAM && (started || msgs || (finished && code == 0)))
        return start_sse(r);
    if (!finished) { /* spurious wake-up */
        pthread_mutex_lock(&r->mu);
        r->suspended = true;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    gw_answer a = r->ans; /* finished: nothing else touches it */
    memset(&r->ans, 0, sizeof r->ans);
    enum MHD_Result ok = send_answer(r, &a);
    svc_call *c = take_call(r);
    if (c != NULL)
        svc_call_release(c);
    return ok;
}

/* A request with a body: its credential is checked from the headers, before
 * a byte of the body is buffered, so an unauthenticated client cannot make
 * the gateway hold GW_JSON_MAX_BODY per connection. A missing or bad
 * credential is answered 401 at once and the connection closed (the body
 * is never read). The principal found is handed to the call
 * (svc_call_set_principal), whose auth step then only applies the rate
 * limit. Health endpoints,
 * unknown routes and public methods wait for the body as before. */
static enum MHD_Result check_credential_early(gw_req *r, const char *url, const char *verb)
{
    gw_http *gw = r->gw;
    gw_match m;
    char allow[128];
    if (gw_routes_match(gw->routes, verb, url, r->arena, &m, allow, sizeof allow) != GW_ROUTE_OK ||
        m.method->public)
        return MHD_YES;
    const char *cred = header(r, "Authorization");
    rd_err err;
    rd_err_clear(&err);
    auth_principal *p = NULL;
    rd_code code = RD_UNAUTHENTICATED;
    if (gw->ctx->auth == NULL)
        rd_errf(&err, RD_UNAUTHENTICATED, NULL, "this server is configured without credentials");
    else
        code = auth_authenticate(gw->ctx->auth, cred, cred != NULL ? strlen(cred) : 0, &p, &err);
    if (code == RD_OK) {
        r->principal = p; /* the call's auth step uses it: one verification */
        return MHD_YES;
    }
    auth_principal_free(p);
    if (err.code != RD_UNAUTHENTICATED && err.code != RD_TOKEN_EXPIRED) {
        /* the key store could not be read: let the call's auth step answer */
        return MHD_YES;
    }
    rd_random_id("req_", r->request_id, 20);
    r->path = rd_arena_strdup(r->arena, url);
    r->close = true;
    return send_err(r, err.code, 0, NULL, NULL, "%s", err.msg);
}

/* A TLS connection's state (its MHD socket context): the certificate
 * version it was accepted with, held until it closes, and the verdict on
 * its client certificate. */
typedef struct gw_conn {
    svc_tls_snap *snap;
    int peer;            /* 0: not checked yet, 1: accepted, -1: refused */
    char peer_ids[1024]; /* its verified certificate's URI/DNS names, one per line */
} gw_conn;

/* MHD_OPTION_NOTIFY_CONNECTION with TLS: a new connection, before its
 * handshake, gets the current certificate and the client-certificate
 * policy. With `require` GnuTLS verifies the client certificate against
 * the snapshot's CA during the handshake and fails it without one; with
 * `request` a certificate sent is checked by peer_ok on the first request
 * (GnuTLS's handshake verification would also turn away clients that send
 * none). */
static void tls_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code)
{
    gw_http *gw = cls;
    gw_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (c != NULL) {
            svc_tls_snap_release(c->snap);
            free(c);
        }
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci == NULL || ci->tls_session == NULL || (c = calloc(1, sizeof *c)) == NULL)
        return; /* keeps the daemon's certificate */
    gnutls_session_t session = ci->tls_session;
    c->snap = svc_tls_current(gw->tls);
    if (gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, svc_tls_snap_gnutls(c->snap)) < 0) {
        svc_tls_snap_release(c->snap);
        free(c);
        return;
    }
    *socket_context = c;
    switch (svc_tls_client_auth_mode(gw->tls)) {
    case SVC_TLS_CLIENT_NONE:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_IGNORE);
        break;
    case SVC_TLS_CLIENT_REQUEST:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUEST);
        break;
    case SVC_TLS_CLIENT_REQUIRE:
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(session, NULL, 0);
        break;
    }
}

/* The connection's client certificate, checked once per connection: false
 * when one was sent that does not verify (or none under `require`). The
 * verified identities, when any, go to *peer_ids (svc_tls_check_peer). */
static bool peer_ok(gw_req *r, const char **peer_ids)
{
    *peer_ids = NULL;
    if (r->gw->tls == NULL)
        return true;
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gw_conn *c = sc != NULL ? sc->socket_context : NULL;
    if (c == NULL || ci == NULL || ci->tls_session == NULL)
        return false;
    if (c->peer == 0)
        c->peer = svc_tls_check_peer(ci->tls_session, svc_tls_client_auth_mode(r->gw->tls),
                                     c->peer_ids, sizeof c->peer_ids)
                      ? 1
                      : -1;
    if (c->peer_ids[0] != '\0')
        *peer_ids = c->peer_ids;
    return c->peer == 1;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *verb, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    gw_http *gw = cls;
    gw_req *r = *con_cls;
    (void)version;
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        r->gw = gw;
        r->conn = conn;
        r->start_us = rd_now_us();
        r->route = gw->n_routes;
        r->refs = 1; /* MHD's, dropped in request_completed */
        pthread_mutex_init(&r->mu, NULL);
        r->arena = rd_arena_new(REQ_ARENA_BYTES);
        *con_cls = r;
        if (r->arena == NULL)
            return MHD_NO;
        if (!peer_ok(r, &r->peer_ids)) {
            rd_random_id("req_", r->request_id, 20);
            r->path = rd_arena_strdup(r->arena, url);
            r->close = true;
            return send_err(r, RD_UNAUTHENTICATED, 0, NULL, NULL,
                            "the client certificate is not signed by a trusted CA");
        }
        /* Everything else waits for the end of the body: a response queued
         * before it costs the connection, and a client still sending gets a
         * reset instead of the answer. Only a body announced far over the
         * limit is refused at once (the connection then closes). */
        const char *cl = header(r, "Content-Length");
        if (cl != NULL && strtoull(cl, NULL, 10) > 4 * GW_JSON_MAX_BODY) {
            rd_random_id("req_", r->request_id, 20);
            r->path = rd_arena_strdup(r->arena, url);
            return send_err(r, RD_BODY_TOO_LARGE, 0, NULL, NULL,
                            "the request body is larger than %zu bytes", GW_JSON_MAX_BODY);
        }
        bool has_body =
            (cl != NULL && strtoull(cl, NULL, 10) > 0) || header(r, "Transfer-Encoding") != NULL;
        if (has_body)
            return check_credential_early(r, url, verb);
        return MHD_YES;
    }
    if (r->queued)
        return MHD_YES; /* answered early; MHD discards the rest of the body */
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->too_large || r->body_len + n > GW_JSON_MAX_BODY) {
            r->too_large = true;
            return MHD_YES;
        }
        if (r->body_len + n > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 1024;
            while (cap < r->body_len + n)
                cap *= 2;
            char *b = realloc(r->body, cap);
            if (b == NULL)
                return MHD_NO;
            r->body = b;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }
    if (!r->begun) {
        r->begun = true;
        enum MHD_Result rc = begin(r, url, verb);
        if (rc != MHD_YES || r->queued || !r->matched)
            return rc;
        return start_call(r, verb);
    }
    return respond(r);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    gw_http *gw = cls;
    gw_req *r = *con_cls;
    (void)conn;
    if (r == NULL)
        return;
    *con_cls = NULL;
    /* no answer went out: 499 (as nginx) when the client left, else 500 */
    bool client_left =
        toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT || toe == MHD_REQUEST_TERMINATED_READ_ERROR;
    int status = r->status ? r->status : client_left ? 499 : 500;
    int64_t duration_us = rd_now_us() - r->start_us;
    svc_metrics_http(r->route, status, duration_us);
    pthread_mutex_lock(&r->mu);
    svc_log_request(&(svc_log_req){
        .transport = "http",
        .method = r->route < gw->n_routes ? gw->route_names[r->route] : "other",
        .rd_code = r->rd_code, /* RD_OK (calloc) unless send_err or the outcome set it */
        .grpc_code = r->finished ? r->grpc_code : -1,
        .http_status = status,
        .duration_us = duration_us,
        .principal_id = r->principal_id[0] ? r->principal_id : NULL,
        .server_tx_id = r->server_tx_id,
        .request_id = r->request_id,
        .probe = r->kind != REQ_API});
    pthread_mutex_unlock(&r->mu);
    if (r->sse)
        stream_list(r, false);
    pthread_mutex_lock(&r->mu);
    r->conn_gone = true;
    pthread_mutex_unlock(&r->mu);
    svc_call *c = take_call(r);
    if (c != NULL) { /* the client went away before the outcome was rendered */
        svc_call_cancel(c);
        svc_call_release(c);
    }
    req_unref(r);
}

/* MHD would percent-decode the path; the route matcher wants it raw (an id
 * may hold an encoded '/'), and query components are decoded by
 * query_decode. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* ---- keep-alive ticker ---------------------------------------------------------------- */

static void *ticker_main(void *arg)
{
    gw_http *gw = arg;
    pthread_setname_np(pthread_self(), "rd-http-tick");
    pthread_mutex_lock(&gw->mu);
    while (!gw->tick_stop) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += TICK_MS * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&gw->cv, &gw->mu, &t);
        int64_t now = rd_now_us();
        svc_call *expired[16];
        size_t n_expired = 0;
        for (gw_req *r = gw->streams; r != NULL; r = r->s_next) {
            pthread_mutex_lock(&r->mu);
            if (!r->sse_ended && now - r->last_write_us >= (int64_t)gw->keepalive_ms * 1000) {
                r->ka_due = true;
                r->last_write_us = now;
                resume_locked(r);
            }
            /* Grpc-Timeout passed: the stream ends as a gRPC one would; the
             * gateway's call reference moves to this thread for the cancel */
            if (r->deadline_us != 0 && now >= r->deadline_us && !r->expired && r->call != NULL &&
                n_expired < sizeof expired / sizeof expired[0]) {
                r->expired = true;
                expired[n_expired++] = r->call;
                r->call = NULL;
            }
            pthread_mutex_unlock(&r->mu);
        }
        if (n_expired > 0) {
            /* never cancel under a lock: the stream's end callback may finish
             * the call, which takes r->mu */
            pthread_mutex_unlock(&gw->mu);
            for (size_t i = 0; i < n_expired; i++) {
                svc_call_cancel(expired[i]);
                svc_call_release(expired[i]);
            }
            pthread_mutex_lock(&gw->mu);
        }
    }
    pthread_mutex_unlock(&gw->mu);
    return NULL;
}

/* ---- start / stop ------------------------------------------------------------------------ */

static rd_code parse_listen(const char *listen, struct sockaddr_storage *ss, bool *v6, rd_err *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || (size_t)(colon - listen) >= sizeof host)
        return rd_errf(err, RD_VALIDATION_FAILED, "http_listen", "expected host:port, got %s",
                       listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *h = host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h[hl - 1] = '\0';
        h++;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL)
        return rd_errf(err, RD_UNAVAILABLE, "http_listen", "cannot resolve %s: %s", listen,
                       gai_strerror(rc));
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return RD_OK;
}

/* Splits --cors-origins into gw->cors (checked again: the gateway trusts
 * no caller). */
static rd_code cors_parse(gw_http *gw, const char *list, rd_err *err)
{
    if ((gw->cors_buf = strdup(list)) == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    for (char *p = gw->cors_buf;;) {
        char *e = p + strcspn(p, ",");
        bool last = *e == '\0';
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        char why[160];
        if (gw->n_cors == SVC_CORS_ORIGINS_MAX)
            return rd_errf(err, RD_VALIDATION_FAILED, "cors_origins",
                           "--cors-origins: more than %d origins", SVC_CORS_ORIGINS_MAX);
        if (!svc_config_origin_ok(p, (size_t)(t - p), why, sizeof why))
            return rd_errf(err, RD_VALIDATION_FAILED, "cors_origins",
                           "--cors-origins: '%.*s' is not an origin: %s",
                           (int)(t - p > 200 ? 200 : t - p), p, why);
        *t = '\0';
        gw->cors[gw->n_cors] = p;
        gw->cors_len[gw->n_cors++] = (size_t)(t - p);
        if (last)
            return RD_OK;
        p = e + 1;
    }
}

rd_code gw_http_start(const gw_http_options *opt, svc_ctx *ctx, gw_http **out, int *bound_port,
                      rd_err *err)
{
    *out = NULL;
    gw_http *gw = calloc(1, sizeof *gw);
    if (gw == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    gw->ctx = ctx;
    gw->keepalive_ms = (opt->keepalive_s > 0 ? opt->keepalive_s : 15) * 1000;
    gw->max_message_bytes = opt->max_message_bytes > 0 ? (size_t)opt->max_message_bytes : 0;
    pthread_mutex_init(&gw->mu, NULL);
    pthread_cond_init(&gw->cv, NULL);
    if (gw_routes_build(rd_descriptor_set, rd_descriptor_set_len, &gw->routes, err) != RD_OK)
        goto fail;
    gw->n_routes = gw_routes_count(gw->routes);
    gw->route_names = calloc(gw->n_routes ? gw->n_routes : 1, sizeof *gw->route_names);
    if (gw->route_names == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < gw->n_routes; i++) {
        const char *verb, *pattern;
        const svc_method *m;
        gw_routes_get(gw->routes, i, &verb, &pattern, &m);
        char name[512];
        snprintf(name, sizeof name, "%s %s", verb, pattern);
        if ((gw->route_names[i] = strdup(name)) == NULL) {
            rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            goto fail;
        }
    }
    svc_metrics_set_routes(gw->route_names, gw->n_routes);
    if (opt->cors_origins != NULL && opt->cors_origins[0] != '\0' &&
        cors_parse(gw, opt->cors_origins, err) != RD_OK)
        goto fail;

    struct sockaddr_storage ss;
    bool v6 = false;
    if (parse_listen(opt->listen, &ss, &v6, err) != RD_OK)
        goto fail;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* With TLS, the daemon's own certificate is the one current at start;
     * each connection gets the current one when it is accepted
     * (tls_notify), so a rotated certificate needs no restart. */
    svc_tls_snap *snap = NULL;
    struct MHD_OptionItem tls_opts[] = {{MHD_OPTION_END, 0, NULL},
                                        {MHD_OPTION_END, 0, NULL},
                                        {MHD_OPTION_END, 0, NULL},
                                        {MHD_OPTION_END, 0, NULL},
                                        {MHD_OPTION_END, 0, NULL}};
    if (opt->tls != NULL) {
        gw->tls = opt->tls;
        snap = svc_tls_current(opt->tls);
        flags |= MHD_USE_TLS;
        tls_opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                              (void *)svc_tls_snap_cert_pem(snap)};
        tls_opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0,
                                              (void *)svc_tls_snap_key_pem(snap)};
        tls_opts[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                              (void *)svc_tls_gnutls_priorities};
        tls_opts[3] =
            (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)tls_notify, gw};
    }
    gw->d = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, gw, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(opt->threads > 0 ? opt->threads : 1), MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, gw, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(opt->max_connections > 0 ? opt->max_connections : CONNECTION_LIMIT),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(opt->max_connections_per_ip > 0 ? opt->max_connections_per_ip
                                                   : CONNECTION_LIMIT),
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_END);
    svc_tls_snap_release(snap);
    if (gw->d == NULL) {
        char why[256];
        rd_errf(err, RD_UNAVAILABLE, "http_listen", "cannot listen on %s: %s", opt->listen,
                svc_listen_cause(opt->listen, why, sizeof why));
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(gw->d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info != NULL ? info->port : 0;
    if (pthread_create(&gw->ticker, NULL, ticker_main, gw) != 0) {
        rd_errf(err, RD_INTERNAL, NULL, "cannot start the keep-alive thread");
        goto fail;
    }
    gw->ticker_started = true;
    *out = gw;
    return RD_OK;
fail:
    gw_http_stop(gw);
    return err->code;
}

void gw_http_close(gw_http *gw)
{
    if (gw == NULL)
        return;
    pthread_mutex_lock(&gw->mu);
    gw->closed = true;
    pthread_mutex_unlock(&gw->mu);
}

void gw_http_stop(gw_http *gw)
{
    if (gw == NULL)
        return;
    gw_http_close(gw);
    if (gw->ticker_started) {
        pthread_mutex_lock(&gw->mu);
        gw->tick_stop = true;
        pthread_cond_signal(&gw->cv);
        pthread_mutex_unlock(&gw->mu);
        pthread_join(gw->ticker, NULL);
    }
    if (gw->d != NULL) {
        /* every call has ended (svc_server_stop ran), so streams are resumed
         * or about to be; resume any left so MHD can close them */
        pthread_mutex_lock(&gw->mu);
        for (gw_req *r = gw->streams; r != NULL; r = r->s_next) {
            pthread_mutex_lock(&r->mu);
            r->finished = true;
            resume_locked(r);
            pthread_mutex_unlock(&r->mu);
        }
        pthread_mutex_unlock(&gw->mu);
        MHD_stop_daemon(gw->d);
    }
    svc_metrics_set_routes(NULL, 0);
    for (size_t i = 0; gw->route_names != NULL && i < gw->n_routes; i++)
        free((void *)gw->route_names[i]);
    free(gw->route_names);
    gw_routes_free(gw->routes);
    free(gw->cors_buf);
    pthread_cond_destroy(&gw->cv);
    pthread_mutex_destroy(&gw->mu);
    free(gw);
}
