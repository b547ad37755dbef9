/* svc_log: JSON lines on stderr (service/svc_log.h). */
#include "service/svc_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/rd.h"

static atomic_int threshold = SVC_LOG_INFO;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

bool svc_log_parse_level(const char *s, svc_log_level *out)
{
    for (int i = 0; i <= SVC_LOG_OFF; i++)
        if (s != NULL && strcasecmp(s, level_names[i]) == 0) {
            *out = (svc_log_level)i;
            return true;
        }
    return false;
}

void svc_log_set_level(svc_log_level level)
{
    atomic_store(&threshold, (int)level);
}

bool svc_log_enabled(svc_log_level level)
{
    return level < SVC_LOG_OFF && (int)level >= atomic_load(&threshold);
}

/* Writes line[0..len) (which ends in a newline) to stderr in one piece. */
static void emit_line(const char *line, size_t len)
{
    pthread_mutex_lock(&out_mu);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(STDERR_FILENO, line + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    pthread_mutex_unlock(&out_mu);
}

/* Writes s and a newline to stderr in one piece. */
static void emit(const char *s)
{
    size_t len = strlen(s);
    char *line = malloc(len + 1);
    if (line == NULL)
        return;
    memcpy(line, s, len);
    line[len] = '\n';
    emit_line(line, len + 1);
    free(line);
}

/* {"time","level","msg"} first, then the members of extra (consumed). */
static void write_line(svc_log_level level, const char *msg, json_t *extra)
{
    char ts[40];
    rd_rfc3339(rd_now_us(), ts, sizeof ts);
    json_t *o = json_object();
    if (o != NULL) {
        json_object_set_new(o, "time", json_string(ts));
        json_object_set_new(o, "level", json_string(level_names[level]));
        /* a message that is not UTF-8 is replaced rather than dropped */
        json_t *m = json_string(msg != NULL ? msg : "");
        json_object_set_new(o, "msg", m != NULL ? m : json_string("(not UTF-8)"));
        if (extra != NULL)
            json_object_update(o, extra);
    }
    char *s = o != NULL
                  ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10))
                  : NULL;
    if (s != NULL) {
        emit(s);
    } else {
        char fallback[160];
        snprintf(fallback, sizeof fallback,
                 "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"(unprintable log line)\"}", ts,
                 level_names[level]);
        emit(fallback);
    }
    free(s);
    json_decref(o);
}

void svc_log_json(svc_log_level level, const char *msg, json_t *extra)
{
    if (svc_log_enabled(level))
        write_line(level, msg, extra);
    json_decref(extra);
}

const char *svc_log_grpc_name(int grpc_code)
{
    static const char *const names[] = {"ok",
                                        "cancelled",
                                        "unknown",
                                        "invalid_argument",
                                        "deadline_exceeded",
                                        "not_found",
                                        "already_exists",
                                        "permission_denied",
                                        "resource_exhausted",
                                        "failed_precondition",
                                        "aborted",
                                        "out_of_range",
                                        "unimplemented",
                                        "internal",
                                        "unavailable",
                                        "data_loss",
                                        "unauthenticated"};
    return grpc_code >= 0 && grpc_code <= 16 ? names[grpc_code] : "unknown";
}

const char *svc_log_request_id(const char *given, char *buf, size_t len)
{
    if (given != NULL) {
        size_t n = strlen(given);
        bool ok = n >= 1 && n <= 128;
        for (size_t i = 0; ok && i < n; i++)
            ok = given[i] > 0x20 && given[i] < 0x7f;
        if (ok)
            return given;
    }
    if (len < 32) {
        if (len > 0)
            buf[0] = '\0';
        return buf;
    }
    rd_random_id("req_", buf, 20);
    return buf;
}

/* Sets key to s when s is a non-empty UTF-8 string. */
static void set_str(json_t *o, const char *key, const char *s)
{
    if (s != NULL && s[0] != '\0') {
        json_t *v = json_string(s);
        if (v != NULL)
            json_object_set_new(o, key, v);
    }
}

/* ---- the request line without jansson ---------------------------------------
 * Every finished request writes one line, so svc_log_request formats it
 * straight into a stack buffer, byte for byte what the jansson path below
 * writes (JSON_COMPACT, JSON_PRESERVE_ORDER, JSON_REAL_PRECISION(10)); a
 * line it cannot write that way (a string that is not UTF-8, a duration
 * jansson would print with an exponent, a line over the buffer) takes the
 * jansson path. Building and dumping a jansson object per request was about
 * a tenth of the server's CPU per UpdateRecord (docs/PERFORMANCE.md). */

typedef struct line_buf {
    char b[2048];
    size_t n;
    bool bad; /* fall back to jansson */
} line_buf;

static void lb_raw(line_buf *l, const char *s, size_t n)
{
    if (l->bad || n > sizeof l->b - l->n) {
        l->bad = true;
        return;
    }
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

/* s as a JSON string, escaped as jansson escapes it. */
static void lb_str(line_buf *l, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    if (!rd_utf8_valid(s, n)) {
        l->bad = true;
        return;
    }
    lb_raw(l, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        lb_raw(l, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t k = 2;
        switch (ch) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            k = 6;
        }
        lb_raw(l, esc, k);
    }
    lb_raw(l, s + run, n - run);
    lb_raw(l, "\"", 1);
}

static void lb_lit(line_buf *l, const char *s)
{
    lb_raw(l, s, strlen(s));
}

/* ,"key":"s" when s is a non-empty string (set_str's rule). */
static void lb_member(line_buf *l, const char *key, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return;
    lb_raw(l, ",\"", 2);
    lb_lit(l, key);
    lb_raw(l, "\":", 2);
    lb_str(l, s);
}

static void lb_int(line_buf *l, long long v)
{
    char num[32];
    int k = snprintf(num, sizeof num, "%lld", v);
    lb_raw(l, num, (size_t)k);
}

/* A real as jansson prints it with precision 10: "%.10g" plus ".0" when
 * that has no '.'; exponent forms are left to jansson. */
static void lb_real(line_buf *l, double v)
{
    char num[40];
    int k = snprintf(num, sizeof num, "%.10g", v);
    if (k <= 0 || (size_t)k >= sizeof num - 2 || strpbrk(num, "eEni") != NULL) {
        l->bad = true;
        return;
    }
    if (strchr(num, '.') == NULL) {
        memcpy(num + k, ".0", 2);
        k += 2;
    }
    lb_raw(l, num, (size_t)k);
}

void svc_log_request(const svc_log_req *r)
{
    svc_log_level level = r->probe ? SVC_LOG_DEBUG : SVC_LOG_INFO;
    if (!svc_log_enabled(level))
        return;
    int grpc = r->grpc_code;
    if (grpc < 0 && r->rd_code >= 0)
        grpc = rd_code_grpc((rd_code)r->rd_code);
    const char *code = r->rd_code >= 0 && r->rd_code < RD_CODE_COUNT
                           ? rd_code_str((rd_code)r->rd_code)
                           : svc_log_grpc_name(grpc);
    char idbuf[40];
    const char *request_id = svc_log_request_id(r->request_id, idbuf, sizeof idbuf);

    double duration_ms = (double)(r->duration_us > 0 ? r->duration_us : 0) / 1000.0;
    char ts[40];
    line_buf l;
    l.n = 0;
    l.bad = false;
    rd_rfc3339(rd_now_us(), ts, sizeof ts);
    lb_lit(&l, "{\"time\":");
    lb_str(&l, ts);
    lb_lit(&l, ",\"level\":");
    lb_str(&l, level_names[level]);
    lb_lit(&l, ",\"msg\":\"request\"");
    lb_member(&l, "transport", r->transport);
    lb_member(&l, "method", r->method);
    lb_member(&l, "code", code);
    lb_lit(&l, ",\"grpc_code\":");
    lb_int(&l, grpc);
    if (r->http_status > 0) {
        lb_lit(&l, ",\"http_status\":");
        lb_int(&l, r->http_status);
    }
    lb_lit(&l, ",\"duration_ms\":");
    lb_real(&l, duration_ms);
    lb_member(&l, "principal_id", r->principal_id);
    lb_member(&l, "server_tx_id", r->server_tx_id);
    lb_member(&l, "request_id", request_id);
    lb_raw(&l, "}\n", 2);
    if (!l.bad) {
        emit_line(l.b, l.n);
        return;
    }

    json_t *o = json_object();
    if (o == NULL)
        return;
    set_str(o, "transport", r->transport);
    set_str(o, "method", r->method);
    json_object_set_new(o, "code", json_string(code));
    json_object_set_new(o, "grpc_code", json_integer(grpc));
    if (r->http_status > 0)
        json_object_set_new(o, "http_status", json_integer(r->http_status));
    json_object_set_new(o, "duration_ms", json_real(duration_ms));
    set_str(o, "principal_id", r->principal_id);
    set_str(o, "server_tx_id", r->server_tx_id);
    set_str(o, "request_id", request_id);
    write_line(level, "request", o);
    json_decref(o);
}
