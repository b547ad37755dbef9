/* gw_render: outcomes and stream messages as HTTP (gw_render.h). */
#include "service/gw_render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/gw_json.h"

/* ---- answers ------------------------------------------------------------------------ */

void gw_answer_header(gw_answer *a, const char *name, const char *value)
{
    char *v = value != NULL && a->n_headers < GW_ANSWER_HEADERS ? strdup(value) : NULL;
    if (v == NULL)
        return;
    a->headers[a->n_headers].name = name;
    a->headers[a->n_headers++].value = v;
}

void gw_answer_problem(gw_answer *a, gw_problem *p)
{
    a->status = p->status;
    a->ctype = "application/problem+json";
    a->body = p->body != NULL ? gw_json_dump(p->body, &a->len) : NULL;
    json_decref(p->body);
    p->body = NULL;
    if (p->retry_after_s > 0) {
        char ra[32];
        snprintf(ra, sizeof ra, "%lld", (long long)p->retry_after_s);
        gw_answer_header(a, "Retry-After", ra);
    }
    if (p->status == 401)
        gw_answer_header(a, "WWW-Authenticate", "Bearer realm=\"recordd\"");
}

void gw_answer_free(gw_answer *a)
{
    free(a->body);
    for (size_t i = 0; i < a->n_headers; i++)
        free(a->headers[i].value);
    memset(a, 0, sizeof *a);
}

bool gw_if_match_ok(const gw_render_req *q, int64_t version)
{
    if (q->if_match_any)
        return true;
    for (size_t i = 0; i < q->n_if_match; i++)
        if (q->if_match[i] == version)
            return true;
    return false;
}

/* ---- reading a reply ------------------------------------------------------------------ */

static int64_t int64_field(const ProtobufCMessage *m, const char *name, bool *found)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    *found = false;
    if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED)
        return 0;
    const char *p = (const char *)m + f->offset;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *found = true;
        return *(const int64_t *)(const void *)p;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *found = true;
        return *(const int32_t *)(const void *)p;
    default:
        return 0;
    }
}

static const ProtobufCMessage *msg_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return *(const ProtobufCMessage *const *)(const void *)((const char *)m + f->offset);
}

static const char *str_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return *(const char *const *)(const void *)((const char *)m + f->offset);
}

/* The version an ETag shows: a Record's, a receipt's (the version a
 * write left), or that of the record a message carries. */
static bool etag_version(const ProtobufCMessage *m, int64_t *v)
{
    bool found;
    if (strcmp(m->descriptor->name, "recordd.v1.Record") == 0 ||
        strcmp(m->descriptor->name, "recordd.v1.CommitReceipt") == 0) {
        *v = int64_field(m, "version", &found);
        if (found && *v > 0)
            return true;
    }
    const ProtobufCMessage *rec = msg_field(m, "record");
    if (rec != NULL && strcmp(rec->descriptor->name, "recordd.v1.Record") == 0) {
        *v = int64_field(rec, "version", &found);
        return found && *v > 0;
    }
    return false;
}

/* Whether an If-None-Match value ("*" or a list of entity tags) names
 * tag under the weak comparison RFC 9110 13.1.2 asks for. */
static bool none_match_names(const char *header, const char *tag)
{
    size_t n = strlen(tag);
    for (const char *p = header; *p != '\0';) {
        p += strspn(p, " \t,");
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return false;
        const char *close = strchr(++p, '"');
        if (close == NULL)
            return false;
        if ((size_t)(close - p) == n && memcmp(p, tag, n) == 0)
            return true;
        p = close + 1;
    }
    return false;
}

/* Percent-encodes s as one path segment into a. */
static char *seg_encode(rd_arena *a, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = rd_arena_alloc(a, 3 * n + 1), *p = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return out;
}

/* ---- outcomes ------------------------------------------------------------------------- */

/* A failed outcome as problem+json; returns the code rendered. */
static rd_code render_error(const gw_render_req *q, const svc_method *m, const svc_outcome *o,
                            gw_answer *a)
{
    rd_code code = o->err.code;
    int status = o->bulk != NULL ? m->http_rolled_back_status : 0;
    /* the answer to a failed If-Match (If-Match: * on a record that does
     * not exist fails its precondition too) */
    if (q->has_if_match && rd_code_http_precondition(code) != 0 &&
        (code != RD_NOT_FOUND || q->if_match_any))
        status = rd_code_http_precondition(code);
    gw_problem p;
    gw_problem_from_outcome(o, status, q->path, &p);
    gw_answer_problem(a, &p);
    if (o->replayed)
        gw_answer_header(a, "Idempotent-Replayed", "true");
    return code;
}

/* An error found while rendering a reply (rendered instead of it). */
static rd_code render_err(const gw_render_req *q, gw_answer *a, rd_code code, int status,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static rd_code render_err(const gw_render_req *q, gw_answer *a, rd_code code, int status,
                          const char *fmt, ...)
{
    svc_outcome o = {0};
    va_list ap;
    va_start(ap, fmt);
    o.err.code = code;
    vsnprintf(o.err.msg, sizeof o.err.msg, fmt, ap);
    va_end(ap);
    gw_problem p;
    gw_problem_from_outcome(&o, status, q->path, &p);
    gw_answer_problem(a, &p);
    return code;
}

/* A unary call's reply, straight from the message to JSON, with the
 * method's HTTP policy (svc_method http_*): the success status, 207 for a
 * partial bulk, ETag from the record's version, Location for a create,
 * If-Match checked against a read, Prefer: return=minimal. Returns the
 * code rendered (RD_OK, or the error rendered instead). */
static rd_code render_reply(const gw_render_req *q, const svc_method *method, const svc_outcome *o,
                            rd_arena *scratch, gw_answer *a)
{
    const ProtobufCMessage *m = o->reply;
    if (m == NULL)
        return render_err(q, a, RD_INTERNAL, 0, "the call ended without a reply");

    int status = method->http_status != 0 ? method->http_status : 200;
    int64_t version = 0;
    bool has_etag = etag_version(m, &version);
    if (method->http_if_match_on_reply && q->has_if_match &&
        (!has_etag || !gw_if_match_ok(q, version)))
        return render_err(q, a, RD_VERSION_CONFLICT, rd_code_http_precondition(RD_VERSION_CONFLICT),
                          "If-Match does not match the record's version %lld", (long long)version);
    bool found = false;
    if (method->http_partial_status != 0 && int64_field(m, "total_failed", &found) > 0 && found)
        status = method->http_partial_status;
    const char *location = NULL;
    if (method->http_location) {
        const ProtobufCMessage *rec = msg_field(m, "record");
        const char *id = rec != NULL ? str_field(rec, "id") : NULL;
        if (id == NULL || id[0] == '\0')
            id = str_field(m, "id"); /* the receipt's: also a generated one */
        if (id == NULL || id[0] == '\0')
            id = q->create_id;
        const char *seg = id != NULL ? seg_encode(scratch, id) : NULL;
        if (seg != NULL)
            location = rd_arena_printf(scratch, "%s/%s", q->path, seg);
    }
    bool receipt = strcmp(method->resp->name, "recordd.v1.CommitReceipt") == 0;
    bool minimal = q->want_minimal && receipt && status != method->http_partial_status;
    const char *tag = str_field(m, "etag");
    if (tag != NULL && tag[0] == '\0')
        tag = NULL;
    bool not_modified = tag != NULL && q->if_none_match != NULL && status == 200 &&
                        none_match_names(q->if_none_match, tag);
    minimal = minimal || not_modified;

    if (!minimal) {
        const ProtobufCMessage *out = m;
        if (q->response_body != NULL && q->response_body[0] != '\0') {
            out = msg_field(m, q->response_body);
            if (out == NULL)
                out = m;
        }
        a->body = gw_json_encode_text(out, &a->len);
        if (a->body == NULL)
            return render_err(q, a, RD_INTERNAL, 0, "the reply could not be encoded");
        a->ctype = "application/json";
    }
    a->status = not_modified ? 304 : minimal ? 204 : status;
    char v[64];
    if (has_etag) {
        snprintf(v, sizeof v, "\"%lld\"", (long long)version);
        gw_answer_header(a, "ETag", v);
    } else if (tag != NULL) {
        snprintf(v, sizeof v, "\"%.60s\"", tag);
        gw_answer_header(a, "ETag", v);
    }
    gw_answer_header(a, "Location", location);
    if (o->replayed)
        gw_answer_header(a, "Idempotent-Replayed", "true");
    if (receipt && (q->want_minimal || q->want_repr))
        gw_answer_header(a, "Preference-Applied",
                         minimal ? "return=minimal" : "return=representation");
    if (minimal && receipt) {
        bool f;
        int64_t sync = int64_field(m, "last_sync_id", &f);
        snprintf(v, sizeof v, "%lld", (long long)sync);
        gw_answer_header(a, "X-Sync-Id", v);
        const char *tx = str_field(m, "server_tx_id");
        if (tx != NULL && tx[0] != '\0')
            gw_answer_header(a, "X-Server-Tx-Id", tx);
        tx = str_field(m, "client_tx_id");
        if (tx != NULL && tx[0] != '\0')
            gw_answer_header(a, "X-Client-Tx-Id", tx);
    }
    return RD_OK;
}

rd_code gw_render_outcome(const gw_render_req *q, const svc_method *m, const svc_outcome *o,
                          rd_arena *scratch, gw_answer *a)
{
    if (o->err.code != RD_OK)
        return render_error(q, m, o, a);
    if (m->kind != SVC_UNARY)
        return RD_OK; /* a stream's end: nothing to render */
    return render_reply(q, m, o, scratch, a);
}

/* ---- Server-Sent Events ---------------------------------------------------------------- */

/* The Server-Sent Event of one stream message (malloc'd; NULL when out of
 * memory): its sync id as the event id, the message in JSON as data. */
char *gw_render_event(const ProtobufCMessage *m)
{
    size_t len = 0;
    char *json = gw_json_encode_text(m, &len);
    if (json == NULL)
        return NULL;
    bool found = false;
    int64_t id = int64_field(m, "sync_id", &found);
    char *out = malloc(len + 64);
    if (out != NULL) {
        if (found)
            snprintf(out, len + 64, "id: %lld\ndata: %s\n\n", (long long)id, json);
        else
            snprintf(out, len + 64, "data: %s\n\n", json);
    }
    free(json);
    return out;
}

char *gw_render_error_event(const char *problem)
{
    const char *data = problem != NULL ? problem : "{}";
    size_t n = strlen(data) + 32;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "event: error\ndata: %s\n\n", data);
    return out;
}
