/* recordd common base: error table accessors, errors, the arena and small
 * helpers shared by every module. */
#include "common/rd.h"

#include <protobuf-c/protobuf-c.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct {
    const char *str;
    int grpc;
    int http;
    int precondition;
} code_rows[] = {
#define RD_X_ROW(name, str, grpc, http, precondition) {str, grpc, http, precondition},
    RD_CODE_TABLE(RD_X_ROW)
#undef RD_X_ROW
};

const char *rd_code_str(rd_code c)
{
    return (unsigned)c < RD_CODE_COUNT ? code_rows[c].str : "internal";
}

int rd_code_grpc(rd_code c)
{
    return (unsigned)c < RD_CODE_COUNT ? code_rows[c].grpc : 13;
}

int rd_code_http(rd_code c)
{
    return (unsigned)c < RD_CODE_COUNT ? code_rows[c].http : 500;
}

int rd_code_http_precondition(rd_code c)
{
    return (unsigned)c < RD_CODE_COUNT ? code_rows[c].precondition : 0;
}

/* The catalogue: one entry per row of the error table (test_rd checks). */
static const rd_code_doc code_docs[RD_CODE_COUNT] = {
    [RD_OK] = {false, "Success.", "Nothing."},
    [RD_INVALID_BODY] = {false,
                         "The request cannot be decoded: malformed JSON or protobuf, a value of "
                         "the wrong shape, a bad header value.",
                         "Fix the request; `field` and the message say where."},
    [RD_UNKNOWN_FIELD] = {false, "A field the message or the model does not have.",
                          "Check the name against the API or GetSchema; field names are "
                          "case-sensitive."},
    [RD_VALIDATION_FAILED] = {false,
                              "A value breaks a rule: the model's field rules, a limit, a "
                              "filter or a page token. `field` names it.",
                              "Fix the value named by `field` (or each entry of `errors`)."},
    [RD_FILTER_REQUIRED] = {false, "A by-filter bulk operation without a condition.",
                            "Give a filter; to touch every record, say so with one that is "
                            "always true for them."},
    [RD_TOO_MANY_OPERATIONS] = {false,
                                "A BulkMutate with more operations than the server allows "
                                "(`--max-bulk-ops`).",
                                "Split the operations over several calls."},
    [RD_UNAUTHENTICATED] = {false,
                            "The credential is missing, malformed, unknown, revoked or not "
                            "trusted, or bound to a client certificate the connection did not "
                            "present.",
                            "Send `authorization: Bearer <API key or token>` with a valid "
                            "credential."},
    [RD_TOKEN_EXPIRED] = {false, "The token's expiry has passed.",
                          "Mint a new token and send the request again with it."},
    [RD_PERMISSION_DENIED] = {false,
                              "No capability of the credential allows the action; "
                              "`requiredCapability` names one that would.",
                              "Use a credential that holds that capability, or ask for one."},
    [RD_NOT_FOUND] = {false, "No such model, record, claim, service or route.",
                      "Check the names and the id; a record may have been deleted."},
    [RD_DUPLICATE_RECORD] = {false, "The id or a unique value is taken by another record.",
                             "Use another id or value, or update the existing record."},
    [RD_IDEMPOTENCY_KEY_REUSED] = {false,
                                   "The idempotency key was used before for a different "
                                   "request.",
                                   "Use a new key for a new request; a key belongs to one "
                                   "request."},
    [RD_VERSION_CONFLICT] = {false,
                             "The record (or the schema) is not at the version (revision) the "
                             "request expected; the receipt carries the current one.",
                             "Read it again, apply your change to what you read, and send it "
                             "with the new version."},
    [RD_STALE_CONTEXT] = {false,
                          "A field the write changes was changed by someone else after "
                          "`readAt`; the receipt's notification says what changed.",
                          "Read the record again and decide; or send `onStale` OVERWRITE or "
                          "NOTIFY."},
    [RD_CLAIMED] = {true,
                    "The record is claimed by someone else, or the claim named is not live "
                    "(expired or released).",
                    "Wait for the claim to end (or its holder to release it), then retry; "
                    "or acquire a claim yourself."},
    [RD_IDEMPOTENCY_IN_PROGRESS] = {true,
                                    "The first request with this idempotency key is still "
                                    "running.",
                                    "Retry the same request shortly; it then gets that "
                                    "request's outcome."},
    [RD_RATE_LIMITED] = {true, "A rate limit, a stream cap or the server's load limit was reached.",
                         "Retry after `Retry-After` (RetryInfo over gRPC); slow down."},
    [RD_DEADLINE_EXCEEDED] = {true,
                              "The call's deadline (or `--max-bulk-ms`) passed before the "
                              "work was done; nothing was written.",
                              "Retry, with a longer deadline if it keeps happening."},
    [RD_UNAVAILABLE] = {true,
                        "The server cannot do it now: the database is busy, the disk is full, "
                        "or the server is shutting down.",
                        "Retry after `Retry-After` (1 s), against another replica if there is "
                        "one."},
    [RD_INTERNAL] = {false, "A bug or an unexpected storage error.",
                     "Report it with the request id (`X-Request-Id` / `x-request-id`)."},
    [RD_DESTRUCTIVE_CHANGE] = {false,
                               "A schema push would drop data: a model, a field or a field's "
                               "values.",
                               "Send every model (GET the schema first), push with `merge` to "
                               "add only, or set `force` to drop the data."},
    [RD_UNIMPLEMENTED] = {false, "An unknown method or an unsupported message encoding.",
                          "Check the method name; compress messages with gzip or not at all."},
    [RD_METHOD_NOT_ALLOWED] = {false,
                               "The HTTP verb is not served on that path; `Allow` lists those "
                               "that are.",
                               "Use one of the verbs in `Allow`."},
    [RD_UNSUPPORTED_MEDIA_TYPE] = {false,
                                   "The HTTP body is not `application/json` (or "
                                   "`application/merge-patch+json` for PATCH).",
                                   "Send the body as JSON with that Content-Type."},
    [RD_BODY_TOO_LARGE] = {false,
                           "The request is over the body limit or `--max-message-bytes` (also "
                           "once decompressed or decoded).",
                           "Send less per request: split it, or use BulkMutate."},
    [RD_SYNC_ID_EXPIRED] = {false, "A change-feed cursor older than the log the server keeps.",
                            "Read the records again (ListRecords), then watch from its "
                            "`readAt`."},
    [RD_TOO_MANY_ROWS] = {false,
                          "A BulkMutate would touch more records than the server allows "
                          "(`--max-bulk-rows`).",
                          "Narrow the filters or split the work over several calls."},
    [RD_CANCELLED] = {true,
                      "The client went away, or cancelled the call before its request "
                      "arrived.",
                      "Nothing, unless the client did not mean to: then retry."},
    [RD_REFERENCE_NOT_FOUND] = {false,
                                "A REFERENCE field names a record that does not exist in the "
                                "model it references (or one the caller may not see: the "
                                "answer is the same); `field` names the field.",
                                "Create the referenced record first (in a bulk, earlier in the "
                                "same call), or send an existing id or null."},
    [RD_REFERENCED] = {false,
                       "The record cannot be deleted: records refer to it through a REFERENCE "
                       "field with onDelete RESTRICT; the message gives their number and one "
                       "of them.",
                       "Delete or change the referring records first, or make the field "
                       "CASCADE or SET_NULL."},
};

static const char *const grpc_names[17] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const rd_code_doc *rd_code_describe(rd_code c)
{
    return (unsigned)c < RD_CODE_COUNT ? &code_docs[c] : &code_docs[RD_INTERNAL];
}

size_t rd_code_entry_md(rd_code c, char *buf, size_t cap)
{
    const rd_code_doc *d = rd_code_describe(c);
    int grpc = rd_code_grpc(c), pre = rd_code_http_precondition(c);
    char http[64];
    if (pre != 0)
        snprintf(http, sizeof http, "%d (%d when it answers If-Match)", rd_code_http(c), pre);
    else
        snprintf(http, sizeof http, "%d", rd_code_http(c));
    int n = snprintf(buf, cap,
                     "## %s\n\n"
                     "Problem type `urn:recordd:problem:%s`.\n\n"
                     "- gRPC status: %s (%d)\n"
                     "- HTTP status: %s\n"
                     "- Retry the same request: %s\n"
                     "- Meaning: %s\n"
                     "- What to do: %s\n",
                     rd_code_str(c), rd_code_str(c), grpc_names[grpc], grpc, http,
                     d->retryable ? "yes" : "no", d->meaning, d->action);
    return n < 0 ? 0 : (size_t)n;
}

char *rd_code_catalogue_md(void)
{
    static const char head[] =
        "# Error catalogue\n\n"
        "Every error recordd answers carries one of these stable codes: as the "
        "`reason` of the `google.rpc.ErrorInfo` in `grpc-status-details-bin` over gRPC, "
        "as `code` (and the problem `type` `urn:recordd:problem:<code>`) in "
        "`application/problem+json` over HTTP, and as the `error.code` of a rejected "
        "receipt. Codes are only ever added. A running server describes each one at "
        "`GET /problems/<code>` (no credential needed); this file is generated from "
        "the same table (`make errors-doc`).\n\n"
        "| code | gRPC status | HTTP status | retry as is |\n"
        "|---|---|---|---|\n";
    size_t cap = sizeof head + 64 * 1024, len = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    len = (size_t)snprintf(out, cap, "%s", head);
    for (int c = 0; c < RD_CODE_COUNT && len < cap; c++)
        len += (size_t)snprintf(out + len, cap - len, "| [`%s`](#%s) | %s | %d | %s |\n",
                                rd_code_str((rd_code)c), rd_code_str((rd_code)c),
                                grpc_names[rd_code_grpc((rd_code)c)], rd_code_http((rd_code)c),
                                code_docs[c].retryable ? "yes" : "no");
    for (int c = 0; c < RD_CODE_COUNT && len < cap; c++) {
        len += (size_t)snprintf(out + len, cap - len, "\n");
        if (len < cap)
            len += rd_code_entry_md((rd_code)c, out + len, cap - len);
    }
    if (len >= cap) {
        free(out);
        return NULL;
    }
    return out;
}

rd_code rd_code_from_str(const char *s)
{
    for (int c = 0; s != NULL && c < RD_CODE_COUNT; c++)
        if (strcmp(code_rows[c].str, s) == 0)
            return (rd_code)c;
    return RD_INTERNAL;
}

rd_code rd_errf(rd_err *e, rd_code code, const char *field, const char *fmt, ...)
{
    if (e == NULL)
        return code;
    e->code = code;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- arena ---------------------------------------------------------------- */

typedef struct rd_block {
    struct rd_block *next;
    size_t size;
    size_t used;
    max_align_t data[];
} rd_block;

typedef struct rd_cleanup {
    struct rd_cleanup *next;
    void (*fn)(void *arg);
    void *arg;
} rd_cleanup;

struct rd_arena {
    rd_block *head;  /* current block, newest first */
    rd_block *first; /* kept across resets */
    size_t total;
    size_t cap;
    rd_cleanup *cleanups; /* rd_arena_on_release, newest first (in the arena) */
};

enum { RD_ARENA_FIRST = 8192 };

static rd_block *block_new(size_t size)
{
    rd_block *b = malloc(sizeof *b + size);
    if (b == NULL)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

rd_arena *rd_arena_new(size_t cap_bytes)
{
    rd_arena *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->first = block_new(RD_ARENA_FIRST);
    if (a->first == NULL) {
        free(a);
        return NULL;
    }
    a->head = a->first;
    a->total = RD_ARENA_FIRST;
    a->cap = cap_bytes;
    return a;
}

static void free_blocks_until(rd_block *b, rd_block *stop)
{
    while (b != NULL && b != stop) {
        rd_block *n = b->next;
        free(b);
        b = n;
    }
}

/* Runs and forgets the cleanups; one may register another (it runs too). */
static void run_cleanups(rd_arena *a)
{
    while (a->cleanups != NULL) {
        rd_cleanup *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->arg);
    }
}

bool rd_arena_on_release(rd_arena *a, void (*fn)(void *arg), void *arg)
{
    rd_cleanup *c = rd_arena_alloc(a, sizeof *c);
    if (c == NULL)
        return false;
    c->fn = fn;
    c->arg = arg;
    c->next = a->cleanups;
    a->cleanups = c;
    return true;
}

void rd_arena_free(rd_arena *a)
{
    if (a == NULL)
        return;
    run_cleanups(a);
    free_blocks_until(a->head, NULL);
    free(a);
}

void rd_arena_reset(rd_arena *a)
{
    run_cleanups(a);
    free_blocks_until(a->head, a->first);
    a->head = a->first;
    a->first->used = 0;
    a->first->next = NULL;
    a->total = a->first->size;
}

void *rd_arena_alloc(rd_arena *a, size_t n)
{
    const size_t align = sizeof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (n == 0)
        n = align;
    rd_block *b = a->head;
    if (b->size - b->used < n) {
        size_t size = b->size * 2;
        if (size < n)
            size = n;
        if (a->total + size > a->cap)
            return NULL;
        rd_block *nb = block_new(size);
        if (nb == NULL)
            return NULL;
        nb->next = a->head;
        a->head = nb;
        a->total += size;
        b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void *rd_arena_calloc(rd_arena *a, size_t n)
{
    void *p = rd_arena_alloc(a, n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

char *rd_arena_strndup(rd_arena *a, const char *s, size_t n)
{
    char *p = rd_arena_alloc(a, n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *rd_arena_strdup(rd_arena *a, const char *s)
{
    return rd_arena_strndup(a, s, strlen(s));
}

char *rd_arena_printf(rd_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = rd_arena_alloc(a, (size_t)n + 1);
    if (p == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static void *pb_alloc(void *ctx, size_t n)
{
    return rd_arena_alloc(ctx, n);
}

static void pb_free(void *ctx, void *p)
{
    (void)ctx;
    (void)p;
}

void rd_arena_pb_allocator(rd_arena *a, ProtobufCAllocator *out)
{
    out->alloc = pb_alloc;
    out->free = pb_free;
    out->allocator_data = a;
}

/* ---- utilities ------------------------------------------------------------ */

int64_t rd_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int rd_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        unsigned min;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (p[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

char *rd_rfc3339(int64_t t_us, char *buf, size_t len)
{
    time_t sec = (time_t)(t_us / 1000000);
    int64_t frac = t_us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec -= 1;
    }
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac == 0)
        snprintf(buf + n, len - n, "Z");
    else if (frac % 1000 == 0)
        snprintf(buf + n, len - n, ".%03dZ", (int)(frac / 1000));
    else
        snprintf(buf + n, len - n, ".%06dZ", (int)frac);
    return buf;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int rd_parse_rfc3339(const char *s, int64_t *t_us)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) ||
        s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 60)
        return -1;
    int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap)
        return -1;
    if (sec == 60)
        sec = 59; /* leap second: clamp, as protobuf's Timestamp does */
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (nd < 6)
                frac = frac * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (nd == 0 || nd > 9)
            return -1;
        for (int i = nd; i < 6; i++)
            frac *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    /* days from civil (Howard Hinnant's algorithm) */
    int y = Y - (M <= 2);
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (unsigned)(M + (M > 2 ? -3 : 9)) + 2) / 5 + (unsigned)D - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = (int64_t)era * 146097 + (int64_t)doe - 719468;
    int64_t secs = days * 86400 + h * 3600 + m * 60 + sec - off;
    *t_us = secs * 1000000 + frac;
    return 0;
}

/* Ids need unpredictable bytes, not a syscall each: every thread draws
 * from its own buffer, refilled from the kernel's CSPRNG 1 KiB at a time. */
static _Thread_local unsigned char rnd_pool[1024];
static _Thread_local size_t rnd_left;

void rd_random_id(const char *prefix, char *buf, size_t n)
{
    static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
    size_t plen = strlen(prefix);
    memcpy(buf, prefix, plen);
    if (n > 64)
        n = 64;
    if (rnd_left < n) {
        randombytes_buf(rnd_pool, sizeof rnd_pool);
        rnd_left = sizeof rnd_pool;
    }
    const unsigned char *rnd = rnd_pool + sizeof rnd_pool - rnd_left;
    for (size_t i = 0; i < n; i++)
        buf[plen + i] = alphabet[rnd[i] & 31];
    sodium_memzero((void *)rnd, n);
    rnd_left -= n;
    buf[plen + n] = '\0';
}
