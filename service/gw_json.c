/* gw_json: the proto3 JSON mapping over protobuf-c descriptors (DESIGN.md
 * §8). The gateway parses a body with gw_json_parse, turns it into the same
 * request message a gRPC call carries with gw_json_decode / gw_json_set, and
 * renders replies with gw_json_encode_text. Nothing here knows a recordd
 * message except the table of types an Any may carry (error details).
 * Choices and limits are listed in docs/API.md, "JSON mapping". */
#include "service/gw_json.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "service/svc_convert.h"

#define TYPE_URL_PREFIX "type.googleapis.com/"
#define MAX_NAME 128 /* json names and type names we derive */

/* Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z (the range of
 * google.protobuf.Timestamp), and the Duration limit (±10000 years). */
#define TS_MIN_SECONDS INT64_C(-62135596800)
#define TS_MAX_SECONDS INT64_C(253402300799)
#define DUR_MAX_SECONDS INT64_C(315576000000)

/* ---- well-known types, found by full name --------------------------------- */

typedef enum wkt {
    WKT_NONE,
    WKT_STRUCT,
    WKT_VALUE,
    WKT_LIST,
    WKT_TIMESTAMP,
    WKT_DURATION,
    WKT_FIELD_MASK,
    WKT_WRAPPER,
    WKT_ANY,
    WKT_EMPTY,
} wkt;

static wkt wkt_of(const ProtobufCMessageDescriptor *d)
{
    static const struct {
        const char *name;
        wkt kind;
    } table[] = {
        {"Struct", WKT_STRUCT},
        {"Value", WKT_VALUE},
        {"ListValue", WKT_LIST},
        {"Timestamp", WKT_TIMESTAMP},
        {"Duration", WKT_DURATION},
        {"FieldMask", WKT_FIELD_MASK},
        {"Any", WKT_ANY},
        {"Empty", WKT_EMPTY},
        {"DoubleValue", WKT_WRAPPER},
        {"FloatValue", WKT_WRAPPER},
        {"Int64Value", WKT_WRAPPER},
        {"UInt64Value", WKT_WRAPPER},
        {"Int32Value", WKT_WRAPPER},
        {"UInt32Value", WKT_WRAPPER},
        {"BoolValue", WKT_WRAPPER},
        {"StringValue", WKT_WRAPPER},
        {"BytesValue", WKT_WRAPPER},
    };
    static const char prefix[] = "google.protobuf.";
    if (strncmp(d->name, prefix, sizeof prefix - 1) != 0)
        return WKT_NONE;
    const char *s = d->name + sizeof prefix - 1;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(s, table[i].name) == 0)
            return table[i].kind;
    return WKT_NONE;
}

static bool is_null_value_enum(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_ENUM &&
           strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name,
                  "google.protobuf.NullValue") == 0;
}

static bool is_value_msg(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_MESSAGE && wkt_of(f->descriptor) == WKT_VALUE;
}

/* ---- names ------------------------------------------------------------------
 * protoc's json_name: underscores dropped, the letter after one upper-cased
 * ("read_at" -> "readAt"). protobuf-c 1.4 descriptors do not carry it. */

static void json_name(const char *proto, char *out, size_t cap)
{
    size_t n = 0;
    bool upper = false;
    for (const char *p = proto; *p != '\0' && n + 1 < cap; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        out[n++] = (upper && *p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
        upper = false;
    }
    out[n] = '\0';
}

static bool json_name_eq(const char *proto, const char *key)
{
    bool upper = false;
    for (const char *p = proto; *p != '\0'; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        char want = (upper && *p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
        if (*key++ != want)
            return false;
        upper = false;
    }
    return *key == '\0';
}

/* The field named key (proto name or json name), or NULL. */
static const ProtobufCFieldDescriptor *field_by_key(const ProtobufCMessageDescriptor *d,
                                                    const char *key)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (strcmp(d->fields[i].name, key) == 0 || json_name_eq(d->fields[i].name, key))
            return &d->fields[i];
    return NULL;
}

/* A map field: repeated message "XyzEntry" {key = 1; value = 2} named after
 * the field, as protoc generates for map<K, V> xyz. */
static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
        strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0)
        return false;
    char want[MAX_NAME];
    json_name(f->name, want, sizeof want - 5);
    if (want[0] >= 'a' && want[0] <= 'z')
        want[0] = (char)(want[0] - 'a' + 'A');
    strcat(want, "Entry");
    return strcmp(e->short_name, want) == 0;
}

/* ---- field storage ---------------------------------------------------------- */

static void *member(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->offset;
}

static void *quantifier(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->quantifier_offset;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    default: /* 32-bit ints, enum, float */
        return 4;
    }
}

/* Whether a singular field is present (proto3: not at its default). */
static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const void *p = member(m, f);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)quantifier(m, f) == f->id;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return *(void *const *)p != NULL;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(char *const *)p;
        if (f->label == PROTOBUF_C_LABEL_REQUIRED)
            return s != NULL;
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
            return s != NULL && s != f->default_value;
        return s != NULL && s[0] != '\0';
    }
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
        return *(const protobuf_c_boolean *)quantifier(m, f) != 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len > 0;
    case PROTOBUF_C_TYPE_FLOAT: {
        float v;
        memcpy(&v, p, sizeof v);
        return v != 0 || signbit(v);
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v;
        memcpy(&v, p, sizeof v);
        return v != 0 || signbit(v);
    }
    default: {
        static const uint8_t zero[8];
        return memcmp(p, zero, elem_size(f->type)) != 0;
    }
    }
}

/* Marks a singular field present after its member was written. */
static void mark_present(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)quantifier(m, f) = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
             f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)quantifier(m, f) = 1;
}

/* ---- decoding context -------------------------------------------------------- */

typedef struct jctx {
    rd_arena *a;
    rd_err *err;
    const ProtobufCMessageDescriptor *top; /* for Any: types reachable from it resolve */
    int depth;
    /* Query-parameter / path-variable strings: "true"/"false" for bools and
     * enum numbers as text are accepted too. */
    bool from_text;
    size_t plen;
    char path[256];
} jctx;

static rd_code fail(jctx *c, rd_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static rd_code fail(jctx *c, rd_code code, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->path[0] != '\0')
        return rd_errf(c->err, code, c->path, "%s: %s", c->path, msg);
    return rd_errf(c->err, code, NULL, "%s", msg);
}

/* The decoded message outgrew the call's arena, which is sized for the
 * largest request the server admits: the request is too large (a JSON body
 * can decode to far more than its own size). */
static rd_code oom(jctx *c)
{
    return rd_errf(c->err, RD_BODY_TOO_LARGE, NULL,
                   "the request is too large once decoded (out of memory for one call)");
}

static size_t push_key(jctx *c, const char *key)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "%s%s", old ? "." : "", key);
    if (n > 0)
        c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : sizeof c->path - c->plen - 1;
    return old;
}

static size_t push_index(jctx *c, size_t i)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "[%zu]", i);
    if (n > 0)
        c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : sizeof c->path - c->plen - 1;
    return old;
}

static void pop(jctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static ProtobufCMessage *new_msg(jctx *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = rd_arena_alloc(c->a, d->sizeof_message);
    if (m != NULL)
        d->message_init(m);
    return m;
}

static rd_code dec_message(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                           ProtobufCMessage *m);
static rd_code dec_object(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *obj,
                          ProtobufCMessage *m, const char *skip);
static rd_code dec_value(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                         Google__Protobuf__Value *out);

/* ---- scalars ------------------------------------------------------------------ */

/* An integer in [lo, hi] (signed) or [0, uhi] (unsigned): JSON integers,
 * integral reals and decimal strings. */
static rd_code dec_int(jctx *c, const json_t *v, bool is_signed, int64_t lo, int64_t hi,
                       uint64_t uhi, int64_t *s, uint64_t *u)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (is_signed && (x < lo || x > hi))
            return fail(c, RD_INVALID_BODY, "%lld is out of range", (long long)x);
        if (!is_signed && (x < 0 || (uint64_t)x > uhi))
            return fail(c, RD_INVALID_BODY, "%lld is out of range", (long long)x);
        *s = x;
        *u = (uint64_t)x;
        return RD_OK;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (x != floor(x))
            return fail(c, RD_INVALID_BODY, "expected an integer, got %g", x);
        if (is_signed ? (x < (double)lo || x >= -(double)INT64_MIN || x > (double)hi)
                      : (x < 0 || x >= 18446744073709551616.0 || x > (double)uhi))
            return fail(c, RD_INVALID_BODY, "%g is out of range", x);
        *s = is_signed ? (int64_t)x : 0;
        *u = is_signed ? 0 : (uint64_t)x;
        return RD_OK;
    }
    if (!json_is_string(v))
        return fail(c, RD_INVALID_BODY, "expected an integer, got %s", json_kind(v));
    const char *t = json_string_value(v);
    size_t n = json_string_length(v);
    bool ok = n > 0 && strlen(t) == n && (t[0] == '-' || (t[0] >= '0' && t[0] <= '9'));
    char *end = NULL;
    errno = 0;
    if (ok && is_signed) {
        long long x = strtoll(t, &end, 10);
        ok = errno == 0 && *end == '\0';
        if (ok && (x < lo || x > hi))
            return fail(c, RD_INVALID_BODY, "%s is out of range", t);
        *s = x;
    } else if (ok) {
        ok = t[0] != '-';
        unsigned long long x = ok ? strtoull(t, &end, 10) : 0;
        ok = ok && errno == 0 && *end == '\0';
        if (ok && x > uhi)
            return fail(c, RD_INVALID_BODY, "%s is out of range", t);
        *u = x;
    }
    if (!ok)
        return fail(c, RD_INVALID_BODY, "expected an integer, got \"%.40s\"", t);
    return RD_OK;
}

static rd_code dec_double(jctx *c, const json_t *v, bool is_float, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
    } else if (json_is_string(v)) {
        const char *t = json_string_value(v);
        if (strcmp(t, "NaN") == 0) {
            *out = NAN;
        } else if (strcmp(t, "Infinity") == 0) {
            *out = INFINITY;
        } else if (strcmp(t, "-Infinity") == 0) {
            *out = -INFINITY;
        } else {
            /* decimal text only: strtod would also take "inf", "nan", hex */
            bool ok = t[0] != '\0' && strlen(t) == json_string_length(v);
            for (const char *p = t; ok && *p != '\0'; p++)
                ok = strchr("0123456789+-.eE", *p) != NULL;
            char *end = NULL;
            errno = 0;
            *out = ok ? strtod(t, &end) : 0;
            if (!ok || *end != '\0' || errno == ERANGE || !isfinite(*out))
                return fail(c, RD_INVALID_BODY, "expected a number, got \"%.40s\"", t);
        }
    } else {
        return fail(c, RD_INVALID_BODY, "expected a number, got %s", json_kind(v));
    }
    if (is_float && isfinite(*out) && fabs(*out) > FLT_MAX)
        return fail(c, RD_INVALID_BODY, "%g is out of range for a float", *out);
    return RD_OK;
}

static rd_code dec_string(jctx *c, const json_t *v, char **out)
{
    if (!json_is_string(v))
        return fail(c, RD_INVALID_BODY, "expected a string, got %s", json_kind(v));
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (memchr(s, '\0', n) != NULL)
        return fail(c, RD_INVALID_BODY, "strings must not contain NUL (\\u0000)");
    *out = rd_arena_strndup(c->a, s, n);
    return *out ? RD_OK : oom(c);
}

/* base64, standard or URL-safe alphabet, padded or not. */
static rd_code dec_bytes(jctx *c, const json_t *v, ProtobufCBinaryData *out)
{
    if (!json_is_string(v))
        return fail(c, RD_INVALID_BODY, "expected a base64 string, got %s", json_kind(v));
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    bool url = strpbrk(s, "-_") != NULL;
    bool padded = n > 0 && s[n - 1] == '=';
    int variant =
        url ? (padded ? sodium_base64_VARIANT_URLSAFE : sodium_base64_VARIANT_URLSAFE_NO_PADDING)
            : (padded ? sodium_base64_VARIANT_ORIGINAL : sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    size_t cap = n / 4 * 3 + 3;
    uint8_t *bin = rd_arena_alloc(c->a, cap);
    if (bin == NULL)
        return oom(c);
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(bin, cap, s, n, NULL, &len, &end, variant) != 0 || end != s + n)
        return fail(c, RD_INVALID_BODY, "invalid base64");
    out->data = bin;
    out->len = len;
    return RD_OK;
}

static rd_code dec_enum(jctx *c, const ProtobufCEnumDescriptor *ed, const json_t *v, int *out)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
        if (ev != NULL) {
            *out = ev->value;
            return RD_OK;
        }
        if (!c->from_text || !((s[0] >= '0' && s[0] <= '9') || s[0] == '-'))
            return fail(c, RD_INVALID_BODY, "unknown value \"%.40s\" of enum %s", s, ed->name);
    } else if (!json_is_number(v)) {
        return fail(c, RD_INVALID_BODY, "expected an enum name, got %s", json_kind(v));
    }
    int64_t n = 0;
    uint64_t u;
    rd_code rc = dec_int(c, v, true, INT32_MIN, INT32_MAX, 0, &n, &u);
    if (rc != RD_OK)
        return rc;
    if (protobuf_c_enum_descriptor_get_value(ed, (int)n) == NULL)
        return fail(c, RD_INVALID_BODY, "%lld is not a value of enum %s", (long long)n, ed->name);
    *out = (int)n;
    return RD_OK;
}

/* Decodes one element (a singular field's value or one repeated item) of
 * field f into dst, which has elem_size(f->type) bytes. */
static rd_code dec_elem(jctx *c, const ProtobufCFieldDescriptor *f, const json_t *v, void *dst)
{
    int64_t s = 0;
    uint64_t u = 0;
    double d = 0;
    rd_code rc = RD_OK;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        rc = dec_int(c, v, true, INT32_MIN, INT32_MAX, 0, &s, &u);
        if (rc == RD_OK) {
            int32_t x = (int32_t)s;
            memcpy(dst, &x, sizeof x);
        }
        return rc;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = dec_int(c, v, false, 0, 0, UINT32_MAX, &s, &u);
        if (rc == RD_OK) {
            uint32_t x = (uint32_t)u;
            memcpy(dst, &x, sizeof x);
        }
        return rc;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        rc = dec_int(c, v, true, INT64_MIN, INT64_MAX, 0, &s, &u);
        if (rc == RD_OK)
            memcpy(dst, &s, sizeof s);
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = dec_int(c, v, false, 0, 0, UINT64_MAX, &s, &u);
        if (rc == RD_OK)
            memcpy(dst, &u, sizeof u);
        return rc;
    case PROTOBUF_C_TYPE_FLOAT:
        rc = dec_double(c, v, true, &d);
        if (rc == RD_OK) {
            float x = (float)d;
            memcpy(dst, &x, sizeof x);
        }
        return rc;
    case PROTOBUF_C_TYPE_DOUBLE:
        rc = dec_double(c, v, false, &d);
        if (rc == RD_OK)
            memcpy(dst, &d, sizeof d);
        return rc;
    case PROTOBUF_C_TYPE_BOOL: {
        protobuf_c_boolean b;
        if (json_is_boolean(v)) {
            b = json_is_true(v);
        } else if (c->from_text && json_is_string(v) &&
                   (strcmp(json_string_value(v), "true") == 0 ||
                    strcmp(json_string_value(v), "false") == 0)) {
            b = json_string_value(v)[0] == 't';
        } else {
            return fail(c, RD_INVALID_BODY, "expected true or false, got %s", json_kind(v));
        }
        memcpy(dst, &b, sizeof b);
        return RD_OK;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        int e = 0;
        if (!(json_is_null(v) && is_null_value_enum(f)))
            rc = dec_enum(c, f->descriptor, v, &e);
        if (rc != RD_OK)
            return rc;
        memcpy(dst, &e, sizeof e);
        return RD_OK;
    }
    case PROTOBUF_C_TYPE_STRING:
        return dec_string(c, v, (char **)dst);
    case PROTOBUF_C_TYPE_BYTES:
        return dec_bytes(c, v, dst);
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *sub = new_msg(c, f->descriptor);
        if (sub == NULL)
            return oom(c);
        rc = dec_message(c, f->descriptor, v, sub);
        if (rc == RD_OK)
            *(ProtobufCMessage **)dst = sub;
        return rc;
    }
    }
    return fail(c, RD_INTERNAL, "field type %d is not supported", (int)f->type);
}

/* Resets a singular field to its default (JSON null). */
static rd_code clear_field(jctx *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(uint32_t *)quantifier(m, f) == f->id)
            *(uint32_t *)quantifier(m, f) = 0;
        return RD_OK;
    }
    ProtobufCMessage *fresh = new_msg(c, m->descriptor);
    if (fresh == NULL)
        return oom(c);
    memcpy(member(m, f), member(fresh, f), elem_size(f->type));
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)quantifier(m, f) = 0;
    return RD_OK;
}

/* A map field from a JSON object: keys converted to the key type. */
static rd_code dec_map(jctx *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                       const json_t *v)
{
    if (!json_is_object(v))
        return fail(c, RD_INVALID_BODY, "expected an object, got %s", json_kind(v));
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    size_t n = json_object_size(v), i = 0;
    ProtobufCMessage **items = rd_arena_alloc(c->a, (n ? n : 1) * sizeof *items);
    if (items == NULL)
        return oom(c);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        size_t old = push_key(c, key);
        ProtobufCMessage *e = new_msg(c, ed);
        if (e == NULL)
            return oom(c);
        json_t *k = json_stringn_nocheck(key, strlen(key));
        if (k == NULL)
            return oom(c);
        bool saved = c->from_text;
        c->from_text = true;
        rd_code rc = dec_elem(c, &ed->fields[0], k, member(e, &ed->fields[0]));
        c->from_text = saved;
        json_decref(k);
        if (rc == RD_OK && !(json_is_null(val) && !is_value_msg(&ed->fields[1])))
            rc = dec_elem(c, &ed->fields[1], val, member(e, &ed->fields[1]));
        if (rc != RD_OK)
            return rc;
        items[i++] = e;
        pop(c, old);
    }
    *(size_t *)quantifier(m, f) = i;
    *(ProtobufCMessage ***)member(m, f) = items;
    return RD_OK;
}

/* Decodes v into field f of m: replaces a repeated field, overwrites a
 * singular one, null resets it (a Value becomes NULL_VALUE). */
static rd_code dec_field(jctx *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                         const json_t *v)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (json_is_null(v)) {
            *(size_t *)quantifier(m, f) = 0;
            return RD_OK;
        }
        if (is_map(f))
            return dec_map(c, m, f, v);
        if (!json_is_array(v))
            return fail(c, RD_INVALID_BODY, "expected an array, got %s", json_kind(v));
        if (++c->depth > GW_JSON_MAX_DEPTH)
            return fail(c, RD_INVALID_BODY, "nested deeper than %d", GW_JSON_MAX_DEPTH);
        size_t n = json_array_size(v), es = elem_size(f->type);
        char *items = rd_arena_calloc(c->a, (n ? n : 1) * es);
        if (items == NULL)
            return oom(c);
        for (size_t i = 0; i < n; i++) {
            const json_t *item = json_array_get(v, i);
            size_t old = push_index(c, i);
            if (json_is_null(item) && !is_value_msg(f) && !is_null_value_enum(f))
                return fail(c, RD_INVALID_BODY, "null is not allowed in a list");
            rd_code rc = dec_elem(c, f, item, items + i * es);
            if (rc != RD_OK)
                return rc;
            pop(c, old);
        }
        c->depth--;
        *(size_t *)quantifier(m, f) = n;
        *(void **)member(m, f) = items;
        return RD_OK;
    }
    if (json_is_null(v) && !is_value_msg(f) && !is_null_value_enum(f))
        return clear_field(c, m, f);
    rd_code rc = dec_elem(c, f, v, member(m, f));
    if (rc == RD_OK)
        mark_present(m, f);
    return rc;
}

/* A JSON object's members into the fields of m. skip: a member to ignore
 * ("@type" inside an Any). */
static rd_code dec_object(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *obj,
                          ProtobufCMessage *m, const char *skip)
{
    if (!json_is_object(obj))
        return fail(c, RD_INVALID_BODY, "expected an object, got %s", json_kind(obj));
    if (++c->depth > GW_JSON_MAX_DEPTH)
        return fail(c, RD_INVALID_BODY, "nested deeper than %d", GW_JSON_MAX_DEPTH);
    /* which fields, and which oneofs (by case offset), this object set */
    uint8_t *seen = rd_arena_calloc(c->a, d->n_fields ? d->n_fields : 1);
    if (seen == NULL)
        return oom(c);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (skip != NULL && strcmp(key, skip) == 0)
            continue;
        size_t old = push_key(c, key);
        const ProtobufCFieldDescriptor *f = field_by_key(d, key);
        if (strlen(key) != json_object_iter_key_len(json_object_key_to_iter(key)))
            f = NULL; /* a NUL inside the name: never a field (trees not from gw_json_parse) */
        if (f == NULL)
            return fail(c, RD_UNKNOWN_FIELD, "unknown field \"%.60s\" in %s", key, d->name);
        size_t idx = (size_t)(f - d->fields);
        if (seen[idx])
            return fail(c, RD_INVALID_BODY, "field %s given twice (by proto and JSON name)",
                        f->name);
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            for (unsigned j = 0; j < d->n_fields; j++)
                if (seen[j] && (d->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                    d->fields[j].quantifier_offset == f->quantifier_offset &&
                    !(json_is_null(v) || seen[j] == 2))
                    return fail(c, RD_INVALID_BODY, "%s and %s are members of the same oneof",
                                d->fields[j].name, f->name);
        }
        rd_code rc = dec_field(c, m, f, v);
        if (rc != RD_OK)
            return rc;
        seen[idx] = json_is_null(v) ? 2 : 1; /* 2: null, does not claim the oneof */
        pop(c, old);
    }
    c->depth--;
    return RD_OK;
}

/* ---- well-known types ----------------------------------------------------------- */

static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d,
                                                   const char *name)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (strcmp(d->fields[i].name, name) == 0)
            return &d->fields[i];
    return NULL;
}

static rd_code dec_struct(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                          Google__Protobuf__Struct *out)
{
    if (!json_is_object(v))
        return fail(c, RD_INVALID_BODY, "expected an object, got %s", json_kind(v));
    if (++c->depth > GW_JSON_MAX_DEPTH)
        return fail(c, RD_INVALID_BODY, "nested deeper than %d", GW_JSON_MAX_DEPTH);
    const ProtobufCMessageDescriptor *ed = d->fields[0].descriptor;
    const ProtobufCMessageDescriptor *vd = ed->fields[1].descriptor;
    size_t n = json_object_size(v), i = 0;
    Google__Protobuf__Struct__FieldsEntry **items =
        rd_arena_alloc(c->a, (n ? n : 1) * sizeof *items);
    if (items == NULL)
        return oom(c);
    const char *key;
    const json_t *val;
    void *it;
    for (it = json_object_iter((json_t *)v); it != NULL;
         it = json_object_iter_next((json_t *)v, it)) {
        key = json_object_iter_key(it);
        val = json_object_iter_value(it);
        size_t klen = json_object_iter_key_len(it), old = push_key(c, key);
        if (strlen(key) != klen)
            return fail(c, RD_INVALID_BODY, "member names must not contain NUL (\\u0000)");
        Google__Protobuf__Struct__FieldsEntry *e = (void *)new_msg(c, ed);
        Google__Protobuf__Value *x = (void *)new_msg(c, vd);
        if (e == NULL || x == NULL)
            return oom(c);
        e->key = rd_arena_strndup(c->a, key, klen);
        if (e->key == NULL)
            return oom(c);
        rd_code rc = dec_value(c, vd, val, x);
        if (rc != RD_OK)
            return rc;
        e->value = x;
        items[i++] = e;
        pop(c, old);
    }
    c->depth--;
    out->n_fields = i;
    out->fields = items;
    return RD_OK;
}

static rd_code dec_list(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                        Google__Protobuf__ListValue *out)
{
    if (!json_is_array(v))
        return fail(c, RD_INVALID_BODY, "expected an array, got %s", json_kind(v));
    if (++c->depth > GW_JSON_MAX_DEPTH)
        return fail(c, RD_INVALID_BODY, "nested deeper than %d", GW_JSON_MAX_DEPTH);
    const ProtobufCMessageDescriptor *vd = d->fields[0].descriptor;
    size_t n = json_array_size(v);
    Google__Protobuf__Value **items = rd_arena_alloc(c->a, (n ? n : 1) * sizeof *items);
    if (items == NULL)
        return oom(c);
    for (size_t i = 0; i < n; i++) {
        size_t old = push_index(c, i);
        items[i] = (void *)new_msg(c, vd);
        if (items[i] == NULL)
            return oom(c);
        rd_code rc = dec_value(c, vd, json_array_get(v, i), items[i]);
        if (rc != RD_OK)
            return rc;
        pop(c, old);
    }
    c->depth--;
    out->n_values = n;
    out->values = items;
    return RD_OK;
}

static rd_code dec_value(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                         Google__Protobuf__Value *out)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        out->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        return RD_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        out->bool_value = json_is_true(v);
        return RD_OK;
    case JSON_INTEGER:
    case JSON_REAL:
        out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        out->number_value = json_number_value(v);
        return RD_OK;
    case JSON_STRING:
        out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        return dec_string(c, v, &out->string_value);
    case JSON_OBJECT: {
        const ProtobufCMessageDescriptor *sd = field_named(d, "struct_value")->descriptor;
        Google__Protobuf__Struct *s = (void *)new_msg(c, sd);
        if (s == NULL)
            return oom(c);
        out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        out->struct_value = s;
        return dec_struct(c, sd, v, s);
    }
    case JSON_ARRAY: {
        const ProtobufCMessageDescriptor *ld = field_named(d, "list_value")->descriptor;
        Google__Protobuf__ListValue *l = (void *)new_msg(c, ld);
        if (l == NULL)
            return oom(c);
        out->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        out->list_value = l;
        return dec_list(c, ld, v, l);
    }
    }
    return fail(c, RD_INVALID_BODY, "unsupported JSON value");
}

/* "2024-01-02T03:04:05.123456789Z" or with an offset: seconds and nanos. */
static int parse_timestamp(const char *s, int64_t *sec, int32_t *nanos)
{
    char buf[64];
    size_t n = strlen(s);
    if (n < 20 || n >= sizeof buf)
        return -1;
    /* cut the fraction out and parse the rest with the common parser */
    memcpy(buf, s, 19);
    const char *p = s + 19;
    int32_t frac = 0;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 9)
                frac = frac * 10 + (*p - '0');
        if (nd == 0 || nd > 9)
            return -1;
        for (; nd < 9; nd++)
            frac *= 10;
    }
    snprintf(buf + 19, sizeof buf - 19, "%s", p);
    int64_t us;
    if (rd_parse_rfc3339(buf, &us) != 0)
        return -1;
    *sec = us / 1000000;
    *nanos = frac;
    return (*sec < TS_MIN_SECONDS || *sec > TS_MAX_SECONDS) ? -1 : 0;
}

/* "1.5s", "-0.000000001s", "3s". */
static int parse_duration(const char *s, int64_t *sec, int32_t *nanos)
{
    const char *p = s;
    bool neg = *p == '-';
    if (neg)
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    int64_t whole = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        whole = whole * 10 + (*p - '0');
        if (whole > DUR_MAX_SECONDS)
            return -1;
    }
    int32_t frac = 0;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 9)
                frac = frac * 10 + (*p - '0');
        if (nd == 0 || nd > 9)
            return -1;
        for (; nd < 9; nd++)
            frac *= 10;
    }
    if (p[0] != 's' || p[1] != '\0')
        return -1;
    *sec = neg ? -whole : whole;
    *nanos = neg ? -frac : frac;
    return 0;
}

/* FieldMask: "a.fooBar,b" -> paths ["a.foo_bar", "b"]. */
static rd_code dec_field_mask(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                              ProtobufCMessage *m)
{
    if (!json_is_string(v))
        return fail(c, RD_INVALID_BODY, "expected a string, got %s", json_kind(v));
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n) != NULL)
        return fail(c, RD_INVALID_BODY, "strings must not contain NUL (\\u0000)");
    size_t count = n == 0 ? 0 : 1;
    for (const char *p = s; *p != '\0'; p++)
        count += *p == ',';
    char **paths = rd_arena_alloc(c->a, (count ? count : 1) * sizeof *paths);
    if (paths == NULL)
        return oom(c);
    const char *p = s;
    for (size_t i = 0; i < count; i++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char *out = rd_arena_alloc(c->a, 2 * len + 1), *o = out;
        if (out == NULL)
            return oom(c);
        if (len == 0)
            return fail(c, RD_INVALID_BODY, "empty path in field mask");
        for (size_t k = 0; k < len; k++) {
            if (p[k] == '_')
                return fail(c, RD_INVALID_BODY, "field mask paths are lowerCamelCase");
            if (p[k] >= 'A' && p[k] <= 'Z') {
                *o++ = '_';
                *o++ = (char)(p[k] - 'A' + 'a');
            } else {
                *o++ = p[k];
            }
        }
        *o = '\0';
        paths[i] = out;
        p = end ? end + 1 : p + len;
    }
    const ProtobufCFieldDescriptor *f = &d->fields[0];
    *(size_t *)quantifier(m, f) = count;
    *(char ***)member(m, f) = paths;
    return RD_OK;
}

static const ProtobufCMessageDescriptor *resolve_type(const char *full,
                                                      const ProtobufCMessageDescriptor *from);

static rd_code dec_any(jctx *c, const json_t *v, Google__Protobuf__Any *out)
{
    if (!json_is_object(v))
        return fail(c, RD_INVALID_BODY, "expected an object, got %s", json_kind(v));
    const json_t *t = json_object_get(v, "@type");
    if (!json_is_string(t))
        return fail(c, RD_INVALID_BODY, "an Any needs a string \"@type\"");
    const char *url = json_string_value(t), *slash = strrchr(url, '/');
    const ProtobufCMessageDescriptor *d = resolve_type(slash ? slash + 1 : url, c->top);
    if (d == NULL)
        return fail(c, RD_INVALID_BODY, "unknown type \"%.80s\" in an Any", url);
    ProtobufCMessage *m = new_msg(c, d);
    if (m == NULL)
        return oom(c);
    rd_code rc;
    if (wkt_of(d) != WKT_NONE && wkt_of(d) != WKT_EMPTY) {
        const json_t *value = json_object_get(v, "value");
        if (value == NULL || json_object_size(v) != 2)
            return fail(c, RD_INVALID_BODY, "an Any of %s has exactly \"@type\" and \"value\"",
                        d->name);
        size_t old = push_key(c, "value");
        rc = dec_message(c, d, value, m);
        pop(c, old);
    } else {
        rc = dec_object(c, d, v, m, "@type");
    }
    if (rc != RD_OK)
        return rc;
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = rd_arena_alloc(c->a, len ? len : 1);
    char *type_url = rd_arena_printf(c->a, TYPE_URL_PREFIX "%s", d->name);
    if (buf == NULL || type_url == NULL)
        return oom(c);
    protobuf_c_message_pack(m, buf);
    out->type_url = type_url;
    out->value.data = buf;
    out->value.len = len;
    return RD_OK;
}

/* Decodes JSON value v into m (initialised, of type d): an object for an
 * ordinary message, the special JSON form for a well-known type. */
static rd_code dec_message(jctx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                           ProtobufCMessage *m)
{
    switch (wkt_of(d)) {
    case WKT_STRUCT:
        return dec_struct(c, d, v, (Google__Protobuf__Struct *)m);
    case WKT_VALUE:
        return dec_value(c, d, v, (Google__Protobuf__Value *)m);
    case WKT_LIST:
        return dec_list(c, d, v, (Google__Protobuf__ListValue *)m);
    case WKT_TIMESTAMP: {
        Google__Protobuf__Timestamp *ts = (Google__Protobuf__Timestamp *)m;
        if (!json_is_string(v))
            return fail(c, RD_INVALID_BODY, "expected an RFC 3339 timestamp, got %s", json_kind(v));
        if (strlen(json_string_value(v)) != json_string_length(v) ||
            parse_timestamp(json_string_value(v), &ts->seconds, &ts->nanos) != 0)
            return fail(c, RD_INVALID_BODY, "invalid RFC 3339 timestamp \"%.40s\"",
                        json_string_value(v));
        return RD_OK;
    }
    case WKT_DURATION: {
        Google__Protobuf__Duration *du = (Google__Protobuf__Duration *)m;
        if (!json_is_string(v))
            return fail(c, RD_INVALID_BODY, "expected a duration such as \"1.5s\", got %s",
                        json_kind(v));
        if (strlen(json_string_value(v)) != json_string_length(v) ||
            parse_duration(json_string_value(v), &du->seconds, &du->nanos) != 0)
            return fail(c, RD_INVALID_BODY, "invalid duration \"%.40s\" (want e.g. \"1.5s\")",
                        json_string_value(v));
        return RD_OK;
    }
    case WKT_FIELD_MASK:
        return dec_field_mask(c, d, v, m);
    case WKT_WRAPPER:
        if (json_is_null(v))
            return fail(c, RD_INVALID_BODY, "null is not a value here");
        return dec_field(c, m, &d->fields[0], v);
    case WKT_ANY:
        return dec_any(c, v, (Google__Protobuf__Any *)m);
    case WKT_EMPTY:
    case WKT_NONE:
        break;
    }
    return dec_object(c, d, v, m, NULL);
}

/* ---- parsing ---------------------------------------------------------------------- */

/* Nesting depth of v, counting objects and arrays, stopping past limit. */
static int depth_of(const json_t *v, int limit)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (limit <= 0)
        return 1;
    int max = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            int d = depth_of(x, limit - 1);
            if (d > max)
                max = d;
            if (max >= limit)
                break;
        }
    } else {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            int d = depth_of(x, limit - 1);
            if (d > max)
                max = d;
            if (max >= limit)
                break;
        }
    }
    return max + 1;
}

rd_code gw_json_parse(const char *text, size_t len, json_t **out, rd_err *err)
{
    *out = NULL;
    if (len > GW_JSON_MAX_BODY)
        return rd_errf(err, RD_INVALID_BODY, NULL, "request body is larger than %zu bytes",
                       GW_JSON_MAX_BODY);
    json_error_t je;
    /* Duplicate member names are rejected (which one would win is
     * ambiguous); \u0000 is let through so the decoder can name the field
     * that holds it. */
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (v == NULL) {
        switch (json_error_code(&je)) {
        case json_error_invalid_utf8:
            return rd_errf(err, RD_INVALID_BODY, NULL, "request body is not valid UTF-8");
        case json_error_stack_overflow:
            return rd_errf(err, RD_INVALID_BODY, NULL, "JSON nested deeper than %d levels",
                           GW_JSON_MAX_DEPTH);
        default: /* syntax, a duplicate member, premature end, ... */
            return rd_errf(err, RD_INVALID_BODY, NULL, "malformed JSON at line %d, column %d: %s",
                           je.line, je.column, je.text);
        }
    }
    if (!json_is_object(v)) {
        json_decref(v);
        return rd_errf(err, RD_INVALID_BODY, NULL, "the request body must be a JSON object");
    }
    if (depth_of(v, GW_JSON_MAX_DEPTH) > GW_JSON_MAX_DEPTH) {
        json_decref(v);
        return rd_errf(err, RD_INVALID_BODY, NULL, "JSON nested deeper than %d levels",
                       GW_JSON_MAX_DEPTH);
    }
    *out = v;
    return RD_OK;
}

/* ---- decoding entry points ----------------------------------------------------------- */

static void ctx_init(jctx *c, const ProtobufCMessageDescriptor *top, rd_arena *a, rd_err *err)
{
    c->a = a;
    c->err = err;
    c->top = top;
    c->depth = 0;
    c->from_text = false;
    c->plen = 0;
    c->path[0] = '\0';
    if (err != NULL)
        rd_err_clear(err);
}

rd_code gw_json_decode(const ProtobufCMessageDescriptor *d, const json_t *obj, rd_arena *a,
                       ProtobufCMessage **out, rd_err *err)
{
    jctx c;
    ctx_init(&c, d, a, err);
    *out = NULL;
    ProtobufCMessage *m = new_msg(&c, d);
    if (m == NULL)
        return oom(&c);
    rd_code rc = dec_message(&c, d, obj, m);
    if (rc == RD_OK)
        *out = m;
    return rc;
}

rd_code gw_json_merge(ProtobufCMessage *m, const json_t *obj, rd_arena *a, rd_err *err)
{
    jctx c;
    ctx_init(&c, m->descriptor, a, err);
    return dec_message(&c, m->descriptor, obj, m);
}

/* Walks a dotted path of proto or json names from m: *owner gets the
 * message holding the last field, created along the way. */
static rd_code resolve_path(jctx *c, ProtobufCMessage *m, const char *path,
                            ProtobufCMessage **owner, const ProtobufCFieldDescriptor **field)
{
    char seg[MAX_NAME];
    const char *p = path;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof seg)
            return rd_errf(c->err, RD_UNKNOWN_FIELD, path, "%.100s: no such field", path);
        memcpy(seg, p, n);
        seg[n] = '\0';
        const ProtobufCFieldDescriptor *f = field_by_key(m->descriptor, seg);
        if (f == NULL)
            return rd_errf(c->err, RD_UNKNOWN_FIELD, path, "%.100s: no such field in %s", path,
                           m->descriptor->name);
        if (dot == NULL) {
            *owner = m;
            *field = f;
            return RD_OK;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED ||
            wkt_of(f->descriptor) == WKT_STRUCT || wkt_of(f->descriptor) == WKT_VALUE)
            return rd_errf(c->err, RD_UNKNOWN_FIELD, path, "%.100s: %s has no subfields", path,
                           f->name);
        ProtobufCMessage **sub = member(m, f);
        if (!field_present(m, f) || *sub == NULL) {
            *sub = new_msg(c, f->descriptor);
            if (*sub == NULL)
                return oom(c);
            mark_present(m, f);
        }
        m = *sub;
        p = dot + 1;
    }
}

rd_code gw_json_set(ProtobufCMessage *m, const char *path, const char *value, rd_arena *a,
                    rd_err *err)
{
    jctx c;
    ctx_init(&c, m->descriptor, a, err);
    ProtobufCMessage *owner;
    const ProtobufCFieldDescriptor *f;
    rd_code rc = resolve_path(&c, m, path, &owner, &f);
    if (rc != RD_OK)
        return rc;
    snprintf(c.path, sizeof c.path, "%s", path);
    c.plen = strlen(c.path);
    c.from_text = true;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        wkt k = wkt_of(f->descriptor);
        if (k != WKT_WRAPPER && k != WKT_TIMESTAMP && k != WKT_DURATION && k != WKT_FIELD_MASK &&
            k != WKT_VALUE)
            return fail(&c, RD_INVALID_BODY, "cannot be set from a string");
    }
    json_t *v = json_string(value);
    if (v == NULL)
        return fail(&c, RD_INVALID_BODY, "value is not valid UTF-8");
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t n = *(size_t *)quantifier(owner, f), es = elem_size(f->type);
        char *items = rd_arena_alloc(a, (n + 1) * es);
        if (items == NULL) {
            json_decref(v);
            return oom(&c);
        }
        if (n > 0)
            memcpy(items, *(void **)member(owner, f), n * es);
        rc = dec_elem(&c, f, v, items + n * es);
        if (rc == RD_OK) {
            *(void **)member(owner, f) = items;
            *(size_t *)quantifier(owner, f) = n + 1;
        }
    } else {
        rc = dec_field(&c, owner, f, v);
    }
    json_decref(v);
    return rc;
}

rd_code gw_json_set_value(ProtobufCMessage *m, const char *path, const json_t *v, rd_arena *a,
                          rd_err *err)
{
    jctx c;
    ctx_init(&c, m->descriptor, a, err);
    ProtobufCMessage *owner;
    const ProtobufCFieldDescriptor *f;
    rd_code rc = resolve_path(&c, m, path, &owner, &f);
    if (rc != RD_OK)
        return rc;
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return rd_errf(err, RD_INTERNAL, path, "%.100s is not a message field", path);
    /* errors inside the body name the field path, then the body's members */
    snprintf(c.path, sizeof c.path, "%s", path);
    c.plen = strlen(c.path);
    return dec_field(&c, owner, f, v);
}

/* ---- Any: the types it may carry ------------------------------------------------------
 * Types reachable from the message being encoded, and the detail types a
 * google.rpc.Status carries (receipt.c): the google.rpc error details and
 * the rejected CommitReceipt. */

static const ProtobufCMessageDescriptor *find_from(const char *full,
                                                   const ProtobufCMessageDescriptor *d,
                                                   const ProtobufCMessageDescriptor **seen,
                                                   size_t *n_seen, size_t cap)
{
    for (size_t i = 0; i < *n_seen; i++)
        if (seen[i] == d)
            return NULL;
    if (*n_seen == cap)
        return NULL;
    seen[(*n_seen)++] = d;
    if (strcmp(d->name, full) == 0)
        return d;
    for (unsigned i = 0; i < d->n_fields; i++) {
        if (d->fields[i].type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const ProtobufCMessageDescriptor *r =
            find_from(full, d->fields[i].descriptor, seen, n_seen, cap);
        if (r != NULL)
            return r;
    }
    return NULL;
}

static const ProtobufCMessageDescriptor *resolve_type(const char *full,
                                                      const ProtobufCMessageDescriptor *from)
{
    static const ProtobufCMessageDescriptor *const roots[] = {
        &google__rpc__status__descriptor,
        &google__rpc__error_info__descriptor,
        &google__rpc__bad_request__descriptor,
        &google__rpc__retry_info__descriptor,
        &google__rpc__debug_info__descriptor,
        &google__rpc__quota_failure__descriptor,
        &google__rpc__precondition_failure__descriptor,
        &google__rpc__request_info__descriptor,
        &google__rpc__resource_info__descriptor,
        &google__rpc__help__descriptor,
        &google__rpc__localized_message__descriptor,
        &recordd__v1__commit_receipt__descriptor,
    };
    const ProtobufCMessageDescriptor *seen[256];
    size_t n_seen = 0;
    if (from != NULL) {
        const ProtobufCMessageDescriptor *r = find_from(full, from, seen, &n_seen, 256);
        if (r != NULL)
            return r;
    }
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        const ProtobufCMessageDescriptor *r = find_from(full, roots[i], seen, &n_seen, 256);
        if (r != NULL)
            return r;
    }
    return NULL;
}

/* ---- encoding ------------------------------------------------------------------------ */

typedef struct ectx {
    const ProtobufCMessageDescriptor *top;
    int depth;
} ectx;

static json_t *enc_message(ectx *e, const ProtobufCMessage *m);

/* A JSON string for s, with invalid UTF-8 replaced by U+FFFD. */
static json_t *enc_str(const char *s, size_t n)
{
    if (rd_utf8_valid(s, n))
        return json_stringn_nocheck(s, n);
    char *buf = malloc(3 * n + 1);
    if (buf == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 1;
        while (k <= 4 && i + k <= n && !rd_utf8_valid(s + i, k))
            k++;
        if (k <= 4 && i + k <= n) {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn_nocheck(buf, o);
    free(buf);
    return j;
}

static json_t *enc_double(double v, bool is_float)
{
    if (isnan(v))
        return json_string("NaN");
    if (isinf(v))
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    if (is_float) {
        /* the shortest text that reads back as the same float */
        char buf[32];
        for (int prec = 6; prec <= 9; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if ((float)strtod(buf, NULL) == (float)v)
                break;
        }
        v = strtod(buf, NULL);
    }
    return json_real(v);
}

static json_t *enc_int64(int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return json_string(buf);
}

static json_t *enc_uint64(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return json_string(buf);
}

static json_t *enc_elem(ectx *e, const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        return json_integer(v);
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        return json_integer((json_int_t)v);
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t v;
        memcpy(&v, p, sizeof v);
        return enc_int64(v);
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return enc_uint64(v);
    }
    case PROTOBUF_C_TYPE_FLOAT: {
        float v;
        memcpy(&v, p, sizeof v);
        return enc_double(v, true);
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v;
        memcpy(&v, p, sizeof v);
        return enc_double(v, false);
    }
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v;
        memcpy(&v, p, sizeof v);
        if (is_null_value_enum(f))
            return json_null();
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s ? enc_str(s, strlen(s)) : json_string("");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        size_t cap = sodium_base64_ENCODED_LEN(b->len, sodium_base64_VARIANT_ORIGINAL);
        char *buf = malloc(cap);
        if (buf == NULL)
            return NULL;
        sodium_bin2base64(buf, cap, b->data ? b->data : (const uint8_t *)"", b->len,
                          sodium_base64_VARIANT_ORIGINAL);
        json_t *j = json_string(buf);
        free(buf);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
        if (sub == NULL)
            return is_value_msg(f) ? json_null() : json_object();
        return enc_message(e, sub);
    }
    }
    return NULL;
}

/* Adds v under key to obj, consuming v; false (obj untouched) on NULL. */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(obj, key, v) == 0;
}

static json_t *enc_field(ectx *e, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return enc_elem(e, f, member(m, f));
    size_t n = *(const size_t *)quantifier(m, f), es = elem_size(f->type);
    const char *items = *(char *const *)member(m, f);
    if (is_map(f)) {
        json_t *obj = json_object();
        const ProtobufCMessageDescriptor *ed = f->descriptor;
        for (size_t i = 0; obj != NULL && i < n; i++) {
            const ProtobufCMessage *entry = ((const ProtobufCMessage *const *)items)[i];
            json_t *k = enc_elem(e, &ed->fields[0], member(entry, &ed->fields[0]));
            json_t *v = enc_elem(e, &ed->fields[1], member(entry, &ed->fields[1]));
            char kb[32];
            const char *key = NULL;
            if (json_is_string(k))
                key = json_string_value(k);
            else if (json_is_integer(k))
                snprintf(kb, sizeof kb, "%" JSON_INTEGER_FORMAT, json_integer_value(k)), key = kb;
            else if (json_is_boolean(k))
                key = json_is_true(k) ? "true" : "false";
            if (key == NULL || !put(obj, key, v)) {
                json_decref(v);
                json_decref(obj);
                obj = NULL;
            }
            json_decref(k);
        }
        return obj;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_t *v = enc_elem(e, f, items + i * es);
        if (v == NULL || json_array_append_new(arr, v) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

static json_t *enc_object(ectx *e, const ProtobufCMessage *m, json_t *obj)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; obj != NULL && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED ? *(const size_t *)quantifier(m, f) == 0
                                                  : !field_present(m, f))
            continue;
        char name[MAX_NAME];
        json_name(f->name, name, sizeof name);
        if (!put(obj, name, enc_field(e, m, f))) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

/* Struct, Value and ListValue: the one Struct → JSON conversion
 * (service/svc_convert.c), which the store path uses too. A value no store
 * could hold (a non-finite number, nesting past the store's limit) fails
 * the encoding. */
static json_t *enc_wkt_value(const ProtobufCMessage *m, wkt kind)
{
    json_t *out = NULL;
    rd_err err;
    Google__Protobuf__Value list = GOOGLE__PROTOBUF__VALUE__INIT;
    switch (kind) {
    case WKT_STRUCT:
        svc_struct_to_json((const Google__Protobuf__Struct *)m, &out, &err);
        break;
    case WKT_LIST:
        list.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        list.list_value = (Google__Protobuf__ListValue *)m;
        svc_value_to_json(&list, "value", &out, &err);
        break;
    default:
        svc_value_to_json((const Google__Protobuf__Value *)m, "value", &out, &err);
        break;
    }
    return out;
}

/* Fraction of nanos as 0, 3, 6 or 9 digits (".5" -> ".500"). */
static void fmt_nanos(char *buf, size_t cap, int32_t nanos)
{
    if (nanos == 0)
        buf[0] = '\0';
    else if (nanos % 1000000 == 0)
        snprintf(buf, cap, ".%03d", nanos / 1000000);
    else if (nanos % 1000 == 0)
        snprintf(buf, cap, ".%06d", nanos / 1000);
    else
        snprintf(buf, cap, ".%09d", nanos);
}

static json_t *enc_timestamp(const Google__Protobuf__Timestamp *ts)
{
    if (ts->seconds < TS_MIN_SECONDS || ts->seconds > TS_MAX_SECONDS || ts->nanos < 0 ||
        ts->nanos > 999999999)
        return NULL;
    char buf[64], frac[16];
    time_t t = (time_t)ts->seconds;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return NULL;
    fmt_nanos(frac, sizeof frac, ts->nanos);
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return json_string(buf);
}

static json_t *enc_duration(const Google__Protobuf__Duration *du)
{
    if (du->seconds < -DUR_MAX_SECONDS || du->seconds > DUR_MAX_SECONDS ||
        du->nanos <= -1000000000 || du->nanos >= 1000000000 || (du->seconds > 0 && du->nanos < 0) ||
        (du->seconds < 0 && du->nanos > 0))
        return NULL;
    bool neg = du->seconds < 0 || du->nanos < 0;
    char buf[64], frac[16];
    fmt_nanos(frac, sizeof frac, du->nanos < 0 ? -du->nanos : du->nanos);
    snprintf(buf, sizeof buf, "%s%" PRId64 "%ss", neg ? "-" : "",
             du->seconds < 0 ? -du->seconds : du->seconds, frac);
    return json_string(buf);
}

static json_t *enc_field_mask(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
    size_t n = *(const size_t *)quantifier(m, f), total = 1;
    char *const *paths = *(char *const *const *)member(m, f);
    for (size_t i = 0; i < n; i++)
        total += strlen(paths[i]) + 1;
    char *buf = malloc(total), *o = buf;
    if (buf == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        char tmp[MAX_NAME * 4];
        json_name(paths[i], tmp, sizeof tmp);
        size_t k = strlen(tmp);
        memcpy(o, tmp, k);
        o += k;
    }
    *o = '\0';
    json_t *j = enc_str(buf, (size_t)(o - buf));
    free(buf);
    return j;
}

static json_t *enc_any(ectx *e, const Google__Protobuf__Any *any)
{
    if (any->type_url == NULL || any->type_url[0] == '\0')
        return json_object();
    const char *slash = strrchr(any->type_url, '/');
    const ProtobufCMessageDescriptor *d = resolve_type(slash ? slash + 1 : any->type_url, e->top);
    if (d == NULL)
        return NULL;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, any->value.len, any->value.data);
    if (m == NULL)
        return NULL;
    json_t *obj = json_object();
    if (obj != NULL && !put(obj, "@type", json_string(any->type_url))) {
        json_decref(obj);
        obj = NULL;
    }
    wkt k = wkt_of(d);
    if (obj != NULL && k != WKT_NONE && k != WKT_EMPTY) {
        if (!put(obj, "value", enc_message(e, m))) {
            json_decref(obj);
            obj = NULL;
        }
    } else if (obj != NULL) {
        obj = enc_object(e, m, obj);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return obj;
}

static json_t *enc_message(ectx *e, const ProtobufCMessage *m)
{
    if (++e->depth > 2 * GW_JSON_MAX_DEPTH + 600)
        return NULL;
    json_t *r;
    switch (wkt_of(m->descriptor)) {
    case WKT_STRUCT:
    case WKT_VALUE:
    case WKT_LIST:
        r = enc_wkt_value(m, wkt_of(m->descriptor));
        break;
    case WKT_TIMESTAMP:
        r = enc_timestamp((const Google__Protobuf__Timestamp *)m);
        break;
    case WKT_DURATION:
        r = enc_duration((const Google__Protobuf__Duration *)m);
        break;
    case WKT_FIELD_MASK:
        r = enc_field_mask(m);
        break;
    case WKT_WRAPPER:
        r = enc_elem(e, &m->descriptor->fields[0], member(m, &m->descriptor->fields[0]));
        break;
    case WKT_ANY:
        r = enc_any(e, (const Google__Protobuf__Any *)m);
        break;
    default:
        r = enc_object(e, m, json_object());
        break;
    }
    e->depth--;
    return r;
}

json_t *gw_json_encode(const ProtobufCMessage *m)
{
    ectx e = {m->descriptor, 0};
    return enc_message(&e, m);
}

/* ---- text ------------------------------------------------------------------------------
 * Our own writer rather than json_dumps: numbers in their shortest form
 * that reads back the same (json_dumps prints 0.1 as 0.10000000000000001),
 * and pure ASCII output (every non-ASCII character, U+2028/2029 included,
 * as \u escapes) so the text is safe whatever the client assumes. */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    sb_put(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x7f && p[run] != '"' && p[run] != '\\')
            run++;
        sb_put(b, s + i, run - i);
        if (run == n)
            break;
        i = run;
        unsigned c = p[i];
        char esc[16];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            sb_put(b, esc, 2);
            i++;
            continue;
        }
        if (c < 0x80) {
            const char *short_esc = c == '\n'   ? "\\n"
                                    : c == '\r' ? "\\r"
                                    : c == '\t' ? "\\t"
                                    : c == '\b' ? "\\b"
                                    : c == '\f' ? "\\f"
                                                : NULL;
            if (short_esc != NULL) {
                sb_put(b, short_esc, 2);
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                sb_put(b, esc, 6);
            }
            i++;
            continue;
        }
        size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        unsigned cp = 0xFFFD;
        if (len > 0 && i + len <= n && rd_utf8_valid(s + i, len)) {
            cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
            for (size_t k = 1; k < len; k++)
                cp = (cp << 6) | (p[i + k] & 0x3F);
            i += len;
        } else {
            i++;
        }
        unsigned units[2] = {cp, 0};
        int nu = 1;
        if (cp >= 0x10000) {
            units[0] = 0xD800 + ((cp - 0x10000) >> 10);
            units[1] = 0xDC00 + ((cp - 0x10000) & 0x3FF);
            nu = 2;
        }
        for (int k = 0; k < nu; k++) {
            char u[6] = {'\\',
                         'u',
                         hex[(units[k] >> 12) & 15],
                         hex[(units[k] >> 8) & 15],
                         hex[(units[k] >> 4) & 15],
                         hex[units[k] & 15]};
            sb_put(b, u, 6);
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_double(sbuf *b, double v)
{
    char buf[40];
    if (!isfinite(v)) {
        sb_put(b, "null", 4); /* jansson never holds one; never invalid JSON */
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, sizeof buf, "%.0f", v); /* 100, not 1e+02 */
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
    sb_put(b, buf, strlen(buf));
}

static void sb_json(sbuf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        sb_put(b, "{", 1);
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it != NULL;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first)
                sb_put(b, ",", 1);
            first = false;
            sb_str(b, json_object_iter_key(it), json_object_iter_key_len(it));
            sb_put(b, ":", 1);
            sb_json(b, json_object_iter_value(it));
        }
        sb_put(b, "}", 1);
        return;
    }
    case JSON_ARRAY: {
        sb_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i > 0)
                sb_put(b, ",", 1);
            sb_json(b, json_array_get(v, i));
        }
        sb_put(b, "]", 1);
        return;
    }
    case JSON_STRING:
        sb_str(b, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER: {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        sb_put(b, buf, (size_t)n);
        return;
    }
    case JSON_REAL:
        sb_double(b, json_real_value(v));
        return;
    case JSON_TRUE:
        sb_put(b, "true", 4);
        return;
    case JSON_FALSE:
        sb_put(b, "false", 5);
        return;
    case JSON_NULL:
        sb_put(b, "null", 4);
        return;
    }
}

char *gw_json_dump(const json_t *v, size_t *len)
{
    sbuf b = {NULL, 0, 0, false};
    sb_json(&b, v);
    if (b.failed || b.p == NULL) {
        free(b.p);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.p;
}

char *gw_json_encode_text(const ProtobufCMessage *m, size_t *len)
{
    json_t *j = gw_json_encode(m);
    if (j == NULL)
        return NULL;
    char *s = gw_json_dump(j, len);
    json_decref(j);
    return s;
}

void gw_json_name(const char *proto, char *out, size_t cap)
{
    json_name(proto, out, cap);
}

bool gw_json_is_map(const ProtobufCFieldDescriptor *f)
{
    return is_map(f);
}
