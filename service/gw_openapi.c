/* gw_openapi: the OpenAPI 3.1 document (gw_openapi.h). Messages become
 * components named by their full proto name ("recordd.v1.Record") in the
 * proto3 JSON mapping the gateway speaks; well-known types are written
 * inline in their JSON form. A model's record data becomes four schemas:
 * "<model>" (as read), "<model>.create", "<model>.replace" and
 * "<model>.patch" (a JSON merge patch: null clears a field), and the
 * messages carrying records get typed copies ("<model>.Record", ...). */
#include "service/gw_openapi.h"

#include <stdio.h>
#include <string.h>

#include "google/protobuf/field_mask.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "service/config.h"
#include "service/gw_json.h"
#include "service/server_int.h"
#include "service/svc_convert.h"

#define REF_PREFIX "#/components/schemas/"
#define MAX_PATH 512

typedef struct oa {
    json_t *schemas;    /* components.schemas */
    json_t *parameters; /* components.parameters */
    json_t *responses;  /* components.responses */
    json_t *tags;       /* tag name → true, to declare the tags used */
    json_t *op_ids;     /* operationId → true, to keep them unique */
} oa;

/* ---- messages in the proto3 JSON mapping -------------------------------------------------- */

static json_t *ref_to(const char *name)
{
    char ref[256];
    snprintf(ref, sizeof ref, REF_PREFIX "%s", name);
    return json_pack("{s:s}", "$ref", ref);
}

static json_t *int64_schema(const char *format)
{
    return json_pack("{s:s,s:s,s:s,s:s}", "type", "string", "format", format, "pattern",
                     "^-?[0-9]+$", "description",
                     "A 64-bit integer as a decimal string (numbers are accepted too).");
}

/* A well-known type in its JSON form, or NULL when d is not one. */
static json_t *wkt_schema(const ProtobufCMessageDescriptor *d)
{
    const char *n = d->name;
    if (strncmp(n, "google.protobuf.", 16) != 0)
        return NULL;
    n += 16;
    if (strcmp(n, "Struct") == 0)
        return json_pack("{s:s,s:b}", "type", "object", "additionalProperties", 1);
    if (strcmp(n, "Value") == 0)
        return json_object(); /* any JSON value */
    if (strcmp(n, "ListValue") == 0)
        return json_pack("{s:s,s:{}}", "type", "array", "items");
    if (strcmp(n, "Timestamp") == 0)
        return json_pack("{s:s,s:s}", "type", "string", "format", "date-time");
    if (strcmp(n, "Duration") == 0)
        return json_pack("{s:s,s:s}", "type", "string", "pattern", "^-?[0-9]+(\\.[0-9]{1,9})?s$");
    if (strcmp(n, "FieldMask") == 0)
        return json_pack("{s:s,s:s}", "type", "string", "description",
                         "Comma-separated field paths.");
    if (strcmp(n, "Empty") == 0)
        return json_pack("{s:s}", "type", "object");
    if (strcmp(n, "Any") == 0)
        return json_pack("{s:s,s:{s:{s:s}},s:[s],s:b}", "type", "object", "properties", "@type",
                         "type", "string", "required", "@type", "additionalProperties", 1);
    if (strcmp(n, "DoubleValue") == 0 || strcmp(n, "FloatValue") == 0)
        return json_pack("{s:s}", "type", "number");
    if (strcmp(n, "Int64Value") == 0 || strcmp(n, "UInt64Value") == 0)
        return int64_schema(n[0] == 'U' ? "uint64" : "int64");
    if (strcmp(n, "Int32Value") == 0 || strcmp(n, "UInt32Value") == 0)
        return json_pack("{s:s,s:s}", "type", "integer", "format",
                         n[0] == 'U' ? "uint32" : "int32");
    if (strcmp(n, "BoolValue") == 0)
        return json_pack("{s:s}", "type", "boolean");
    if (strcmp(n, "StringValue") == 0)
        return json_pack("{s:s}", "type", "string");
    if (strcmp(n, "BytesValue") == 0)
        return json_pack("{s:s,s:s}", "type", "string", "contentEncoding", "base64");
    return NULL;
}

static json_t *message_schema(oa *o, const ProtobufCMessageDescriptor *d);

/* One value of field f (an element when f is repeated). */
static json_t *value_schema(oa *o, const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_pack("{s:s,s:s}", "type", "integer", "format", "int32");
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_pack("{s:s,s:s}", "type", "integer", "format", "uint32");
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return int64_schema("int64");
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return int64_schema("uint64");
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_pack("{s:s}", "type", "number");
    case PROTOBUF_C_TYPE_BOOL:
        return json_pack("{s:s}", "type", "boolean");
    case PROTOBUF_C_TYPE_STRING:
        return json_pack("{s:s}", "type", "string");
    case PROTOBUF_C_TYPE_BYTES:
        return json_pack("{s:s,s:s}", "type", "string", "contentEncoding", "base64");
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        json_t *names = json_array();
        for (unsigned i = 0; i < ed->n_values; i++)
            json_array_append_new(names, json_string(ed->values[i].name));
        return json_pack("{s:s,s:o}", "type", "string", "enum", names);
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return message_schema(o, f->descriptor);
    }
    return json_object();
}

static json_t *field_schema(oa *o, const ProtobufCFieldDescriptor *f)
{
    if (gw_json_is_map(f)) {
        const ProtobufCMessageDescriptor *e = f->descriptor;
        return json_pack("{s:s,s:o}", "type", "object", "additionalProperties",
                         value_schema(o, &e->fields[1]));
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return json_pack("{s:s,s:o}", "type", "array", "items", value_schema(o, f));
    return value_schema(o, f);
}

/* A reference to d's component (written on first use), or its inline
 * JSON form for a well-known type. */
static json_t *message_schema(oa *o, const ProtobufCMessageDescriptor *d)
{
    json_t *w = wkt_schema(d);
    if (w != NULL)
        return w;
    if (json_object_get(o->schemas, d->name) == NULL) {
        json_t *props = json_object();
        json_t *s = json_pack("{s:s,s:o,s:b}", "type", "object", "properties", props,
                              "additionalProperties", 0);
        json_object_set_new(o->schemas, d->name, s); /* before the fields: recursion */
        for (unsigned i = 0; i < d->n_fields; i++) {
            char name[128];
            gw_json_name(d->fields[i].name, name, sizeof name);
            json_object_set_new(props, name, field_schema(o, &d->fields[i]));
        }
    }
    return ref_to(d->name);
}

static const ProtobufCFieldDescriptor *field_of(const ProtobufCMessageDescriptor *d,
                                                const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(d, name);
}

/* ---- a model's record data ------------------------------------------------------------- */

typedef enum data_shape { SHAPE_READ, SHAPE_CREATE, SHAPE_REPLACE, SHAPE_PATCH } data_shape;

static const char *const shape_suffix[] = {"", ".create", ".replace", ".patch"};

static void set_bound(json_t *s, const char *key, const Google__Protobuf__DoubleValue *v)
{
    if (v != NULL)
        json_object_set_new(s, key, json_real(v->value));
}

static json_t *data_field_schema(const Recordd__V1__Field *f, data_shape shape)
{
    json_t *s = json_object();
    const char *type = NULL;
    switch (f->type) {
    case RECORDD__V1__FIELD_TYPE__STRING:
        type = "string";
        if (f->max_length > 0)
            json_object_set_new(s, "maxLength", json_integer(f->max_length));
        break;
    case RECORDD__V1__FIELD_TYPE__INTEGER:
        type = "integer";
        set_bound(s, "minimum", f->min);
        set_bound(s, "maximum", f->max);
        break;
    case RECORDD__V1__FIELD_TYPE__NUMBER:
        type = "number";
        set_bound(s, "minimum", f->min);
        set_bound(s, "maximum", f->max);
        break;
    case RECORDD__V1__FIELD_TYPE__BOOLEAN:
        type = "boolean";
        break;
    case RECORDD__V1__FIELD_TYPE__TIMESTAMP:
        type = "string";
        json_object_set_new(s, "format", json_string("date-time"));
        break;
    case RECORDD__V1__FIELD_TYPE__ENUM: {
        type = "string";
        json_t *e = json_array();
        for (size_t i = 0; i < f->n_enum_values; i++)
            json_array_append_new(e, json_string(f->enum_values[i]));
        json_object_set_new(s, "enum", e);
        break;
    }
    case RECORDD__V1__FIELD_TYPE__REFERENCE:
        type = "string";
        json_object_set_new(s, "x-recordd-references", json_string(f->references));
        break;
    default: /* JSON: any value */
        break;
    }
    /* null stands for "no value" on writes (a merge patch clears with it) */
    bool nullable = shape != SHAPE_READ && !f->required && type != NULL;
    if (type != NULL)
        json_object_set_new(s, "type",
                            nullable ? json_pack("[s,s]", type, "null") : json_string(type));
    if (nullable && json_object_get(s, "enum") != NULL)
        json_array_append_new(json_object_get(s, "enum"), json_null());
    json_t *def = NULL;
    rd_err err;
    if (f->default_value != NULL &&
        svc_value_to_json(f->default_value, f->name, &def, &err) == RD_OK && def != NULL &&
        !json_is_null(def))
        json_object_set_new(s, "default", def);
    else
        json_decref(def);
    char doc[512];
    size_t n = 0;
    doc[0] = '\0';
    if (f->type == RECORDD__V1__FIELD_TYPE__REFERENCE)
        n += (size_t)snprintf(doc + n, sizeof doc - n,
                              "The id of a %s record (checked on every write). ", f->references);
    if (f->unique) {
        json_object_set_new(s, "x-recordd-unique", json_true());
        n += (size_t)snprintf(doc + n, sizeof doc - n, "Unique within the model. ");
    }
    if (f->immutable) {
        json_object_set_new(s, "x-recordd-immutable", json_true());
        if (n < sizeof doc)
            n += (size_t)snprintf(doc + n, sizeof doc - n,
                                  "Immutable: set when the record is created, never changed. ");
        if (shape == SHAPE_PATCH)
            json_object_set_new(s, "readOnly", json_true());
    }
    if (f->n_writable_by > 0) {
        json_t *w = json_array();
        for (size_t i = 0; i < f->n_writable_by; i++)
            json_array_append_new(w, json_string(f->writable_by[i]));
        json_object_set_new(s, "x-recordd-writable-by", w);
        if (n < sizeof doc)
            n += (size_t)snprintf(doc + n, sizeof doc - n,
                                  "Written only by credentials holding one of the roles in "
                                  "x-recordd-writable-by. ");
    }
    if (n > 0 && n < sizeof doc) {
        doc[n - 1] = '\0'; /* the last space */
        json_object_set_new(s, "description", json_string(doc));
    }
    return s;
}

static json_t *data_schema(const Recordd__V1__Model *m, data_shape shape)
{
    static const char *const what[] = {
        "Record data of model %s, as read.",
        "Record data of model %s for a create: required fields without a default must be "
        "given; null is the same as leaving a field out.",
        "Record data of model %s for a replace: the whole record, as for a create.",
        "A JSON merge patch (RFC 7396) of a record of model %s: the fields given are set, "
        "null clears one, JSON fields merge recursively.",
    };
    json_t *props = json_object(), *req = json_array();
    for (size_t i = 0; i < m->n_fields; i++) {
        const Recordd__V1__Field *f = m->fields[i];
        json_object_set_new(props, f->name, data_field_schema(f, shape));
        bool has_default =
            f->default_value != NULL &&
            f->default_value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE &&
            f->default_value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET;
        if (f->required && (shape == SHAPE_READ || (shape != SHAPE_PATCH && !has_default)))
            json_array_append_new(req, json_string(f->name));
    }
    char doc[256];
    snprintf(doc, sizeof doc, what[shape], m->name);
    json_t *s = json_pack("{s:s,s:s,s:o,s:b}", "type", "object", "description", doc, "properties",
                          props, "additionalProperties", 0);
    if (json_array_size(req) > 0)
        json_object_set_new(s, "required", req);
    else
        json_decref(req);
    if (shape == SHAPE_READ && m->n_unique_together > 0) {
        json_t *u = json_array();
        for (size_t i = 0; i < m->n_unique_together; i++) {
            json_t *set = json_array();
            for (size_t k = 0; k < m->unique_together[i]->n_fields; k++)
                json_array_append_new(set, json_string(m->unique_together[i]->fields[k]));
            json_array_append_new(u, set);
        }
        json_object_set_new(s, "x-recordd-unique-together", u);
    }
    return s;
}

/* A copy of the component generic, its property prop (or, with items, the
 * items of that array property) pointing at the component target. */
static void typed_copy(oa *o, const char *name, const char *generic, const char *prop, bool items,
                       const char *target)
{
    json_t *s = json_deep_copy(json_object_get(o->schemas, generic));
    json_t *p = json_object_get(json_object_get(s, "properties"), prop);
    if (p != NULL && items)
        json_object_set_new(p, "items", ref_to(target));
    else if (p != NULL)
        json_object_set_new(json_object_get(s, "properties"), prop, ref_to(target));
    json_object_set_new(o->schemas, name, s);
}

/* The typed record's `expanded`: one property per REFERENCE field of m,
 * the target model's typed ExpandedRecord. */
static void typed_expanded(oa *o, const char *record, const Recordd__V1__Model *m)
{
    json_t *props = json_object();
    char ref[160];
    for (size_t i = 0; i < m->n_fields; i++) {
        const Recordd__V1__Field *f = m->fields[i];
        if (f->type != RECORDD__V1__FIELD_TYPE__REFERENCE || f->references == NULL ||
            f->references[0] == '\0')
            continue;
        snprintf(ref, sizeof ref, "%s.ExpandedRecord", f->references);
        json_object_set_new(props, f->name, ref_to(ref));
    }
    json_t *rec = json_object_get(json_object_get(o->schemas, record), "properties");
    json_object_set_new(
        rec, "expanded",
        json_pack("{s:s,s:s,s:o,s:b,s:b}", "type", "object", "description",
                  "The records the REFERENCE fields named in `expand` (or implied by `fields`) "
                  "point at, keyed by field name; no entry when the field has no value.",
                  "properties", props, "additionalProperties", 0, "readOnly", 1));
}

static void model_components(oa *o, const Recordd__V1__Model *m)
{
    char a[160], b[160];
    for (int sh = SHAPE_READ; sh <= SHAPE_PATCH; sh++) {
        snprintf(a, sizeof a, "%s%s", m->name, shape_suffix[sh]);
        json_object_set_new(o->schemas, a, data_schema(m, (data_shape)sh));
    }
    snprintf(a, sizeof a, "%s.Record", m->name);
    typed_copy(o, a, "recordd.v1.Record", "data", false, m->name);
    typed_expanded(o, a, m);
    snprintf(b, sizeof b, "%s.ExpandedRecord", m->name);
    typed_copy(o, b, "recordd.v1.ExpandedRecord", "record", false, a);
    snprintf(b, sizeof b, "%s.CommitReceipt", m->name);
    typed_copy(o, b, "recordd.v1.CommitReceipt", "record", false, a);
    snprintf(b, sizeof b, "%s.ListRecordsResponse", m->name);
    typed_copy(o, b, "recordd.v1.ListRecordsResponse", "records", true, a);
}

/* ---- operations ------------------------------------------------------------------------- */

/* How a method's request body and reply are typed for a model: the data
 * shape its `data` body takes. */
static data_shape body_shape(const svc_method *m)
{
    if (strcmp(m->path, "/recordd.v1.Records/CreateRecord") == 0)
        return SHAPE_CREATE;
    if (strcmp(m->path, "/recordd.v1.Records/ReplaceRecord") == 0)
        return SHAPE_REPLACE;
    if (strcmp(m->path, "/recordd.v1.Records/UpdateRecord") == 0)
        return SHAPE_PATCH;
    return SHAPE_READ; /* not a data body */
}

static json_t *param_ref(const char *name)
{
    char ref[128];
    snprintf(ref, sizeof ref, "#/components/parameters/%s", name);
    return json_pack("{s:s}", "$ref", ref);
}

static json_t *header_ref(const char *name)
{
    char ref[128];
    snprintf(ref, sizeof ref, "#/components/headers/%s", name);
    return json_pack("{s:s}", "$ref", ref);
}

/* The path variables of template t ("{model}", "{name=pattern}") in order. */
static size_t template_vars(const char *t, char vars[][64], size_t max)
{
    size_t n = 0;
    for (const char *p = strchr(t, '{'); p != NULL && n < max; p = strchr(p, '{')) {
        size_t k = strcspn(++p, "=}");
        snprintf(vars[n++], 64, "%.*s", (int)(k < 63 ? k : 63), p);
        p += k;
    }
    return n;
}

/* The OpenAPI path of template t: "{name=pattern}" written "{name}", and
 * "{model}" replaced by model when it is not NULL. */
static void openapi_path(const char *t, const char *model, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = t; *p != '\0' && n + 1 < cap;) {
        if (*p == '{') {
            size_t k = strcspn(p + 1, "=}");
            const char *close = strchr(p, '}');
            if (close == NULL)
                break;
            if (model != NULL && k == 5 && strncmp(p + 1, "model", 5) == 0)
                n += (size_t)snprintf(out + n, cap - n, "%s", model);
            else
                n += (size_t)snprintf(out + n, cap - n, "{%.*s}", (int)k, p + 1);
            p = close + 1;
            continue;
        }
        out[n++] = *p++;
    }
    out[n < cap ? n : cap - 1] = '\0';
}

static bool query_field(const ProtobufCFieldDescriptor *f)
{
    if (gw_json_is_map(f))
        return false;
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return true;
    json_t *w = wkt_schema(f->descriptor);
    bool ok = w != NULL &&
              strcmp(((const ProtobufCMessageDescriptor *)f->descriptor)->name,
                     "google.protobuf.Struct") != 0 &&
              f->label != PROTOBUF_C_LABEL_REPEATED;
    json_decref(w);
    return ok;
}

/* The record reads' list parameters (gw_http.c list_param): `expand`
 * comma-separated or repeated, and read_mask taken as `fields` with the
 * record field names verbatim. Rewrites the query parameter p of field f. */
static void list_param_doc(const ProtobufCFieldDescriptor *f, json_t *p)
{
    if (strcmp(f->name, "expand") == 0 && f->label == PROTOBUF_C_LABEL_REPEATED &&
        f->type == PROTOBUF_C_TYPE_STRING) {
        json_object_set_new(
            p, "description",
            json_string("REFERENCE fields to return inline in `expanded`, as dotted paths "
                        "(`city`, `city.country`; a path implies its prefixes): comma-separated "
                        "and/or repeated. At most 3 levels and 10 paths (prefixes counted, "
                        "together with the paths `fields` implies). A referenced record the "
                        "caller may not read, or that no longer exists, comes back as "
                        "`{\"omitted\": true}`."));
        json_object_set_new(p, "style", json_string("form"));
        json_object_set_new(p, "explode", json_true());
    } else if (strcmp(f->name, "read_mask") == 0 && f->type == PROTOBUF_C_TYPE_MESSAGE &&
               f->descriptor == &google__protobuf__field_mask__descriptor) {
        json_object_set_new(p, "name", json_string("fields"));
        json_object_set_new(p, "schema", json_pack("{s:s}", "type", "string"));
        json_object_set_new(
            p, "description",
            json_string("Only these fields of `data`, comma-separated record field names as "
                        "written (`firstName,city.name`); a dotted path selects the REFERENCE "
                        "field and that field of the expanded record, and implies expanding "
                        "it. System fields are always returned; fields left out are absent "
                        "from `data` even when the model requires them."));
    }
}

static json_t *parameters(oa *o, const gw_route_info *r, const char *model)
{
    const svc_method *m = r->method;
    json_t *ps = json_array();
    char vars[8][64];
    size_t nv = template_vars(r->pattern, vars, 8);
    for (size_t i = 0; i < nv; i++) {
        if (model != NULL && strcmp(vars[i], "model") == 0)
            continue;
        const ProtobufCFieldDescriptor *f = field_of(m->req, vars[i]);
        json_array_append_new(
            ps,
            json_pack("{s:s,s:s,s:b,s:o}", "name", vars[i], "in", "path", "required", 1, "schema",
                      f != NULL ? value_schema(o, f) : json_pack("{s:s}", "type", "string")));
    }
    if (r->body == NULL || strcmp(r->body, "*") != 0) {
        for (unsigned i = 0; i < m->req->n_fields; i++) {
            const ProtobufCFieldDescriptor *f = &m->req->fields[i];
            bool bound = r->body != NULL && strcmp(r->body, f->name) == 0;
            for (size_t k = 0; k < nv && !bound; k++)
                bound = strcmp(vars[k], f->name) == 0;
            if (bound || !query_field(f))
                continue;
            char name[128];
            gw_json_name(f->name, name, sizeof name);
            json_t *p = json_pack("{s:s,s:s,s:o}", "name", name, "in", "query", "schema",
                                  field_schema(o, f));
            list_param_doc(f, p);
            json_array_append_new(ps, p);
        }
    }
    if (field_of(m->req, "idempotency_key") != NULL)
        json_array_append_new(ps, param_ref("Idempotency-Key"));
    if (field_of(m->req, "expected_version") != NULL ||
        field_of(m->req, "expected_revision") != NULL || m->http_if_match_on_reply)
        json_array_append_new(ps, param_ref("If-Match"));
    if (field_of(m->resp, "etag") != NULL)
        json_array_append_new(ps, param_ref("If-None-Match"));
    if (strcmp(m->resp->name, "recordd.v1.CommitReceipt") == 0)
        json_array_append_new(ps, param_ref("Prefer"));
    if (m->kind == SVC_SERVER_STREAM)
        json_array_append_new(ps, param_ref("Last-Event-ID"));
    json_array_append_new(ps, param_ref("X-Request-Id"));
    json_array_append_new(ps, param_ref("Grpc-Timeout"));
    return ps;
}

static void add_code(rd_code *codes, size_t *n, rd_code c)
{
    for (size_t i = 0; i < *n; i++)
        if (codes[i] == c)
            return;
    codes[(*n)++] = c;
}

/* Adds code to the problem response of an HTTP status (made on first use):
 * its description and the enum of its `code`. */
static void problem_response_add(json_t *responses, int status, rd_code code, const char *note)
{
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    json_t *resp = json_object_get(responses, st);
    if (resp == NULL) {
        resp =
            json_pack("{s:s,s:{s:{s:{s:[{s:s}],s:{s:{s:s,s:[]}}}}}}", "description", "", "content",
                      "application/problem+json", "schema", "allOf", "$ref",
                      REF_PREFIX "recordd.Problem", "properties", "code", "type", "string", "enum");
        const char *h = status == 401                    ? "WWW-Authenticate"
                        : status == 429 || status == 503 ? "Retry-After"
                                                         : NULL;
        if (h != NULL)
            json_object_set_new(resp, "headers", json_pack("{s:o}", h, header_ref(h)));
        json_object_set_new(responses, st, resp);
    }
    json_t *schema = json_object_get(
        json_object_get(json_object_get(resp, "content"), "application/problem+json"), "schema");
    json_t *codes =
        json_object_get(json_object_get(json_object_get(schema, "properties"), "code"), "enum");
    json_array_append_new(codes, json_string(rd_code_str(code)));
    const char *d = json_string_value(json_object_get(resp, "description"));
    char desc[1024];
    snprintf(desc, sizeof desc, "%s%s`%s`%s", d, d[0] ? ", " : "", rd_code_str(code), note);
    json_object_set_new(resp, "description", json_string(desc));
}

/* The problem responses of a route: every code it can answer, grouped by
 * HTTP status, each status naming its codes. */
static void error_responses(const gw_route_info *r, bool if_match, json_t *responses)
{
    const svc_method *m = r->method;
    rd_code codes[RD_CODE_COUNT];
    size_t n = 0;
    add_code(codes, &n, RD_INVALID_BODY);
    add_code(codes, &n, RD_UNKNOWN_FIELD);
    if (r->body != NULL) {
        add_code(codes, &n, RD_UNSUPPORTED_MEDIA_TYPE);
        add_code(codes, &n, RD_BODY_TOO_LARGE);
    }
    if (!m->public) {
        add_code(codes, &n, RD_UNAUTHENTICATED);
        add_code(codes, &n, RD_TOKEN_EXPIRED);
        add_code(codes, &n, RD_PERMISSION_DENIED);
        add_code(codes, &n, RD_RATE_LIMITED);
    }
    for (const rd_code *c = m->answers; c != NULL && *c != RD_OK; c++)
        add_code(codes, &n, *c);
    add_code(codes, &n, RD_DEADLINE_EXCEEDED);
    add_code(codes, &n, RD_UNAVAILABLE);
    add_code(codes, &n, RD_INTERNAL);

    for (size_t i = 0; i < n; i++) {
        problem_response_add(responses, rd_code_http(codes[i]), codes[i], "");
        if (if_match && rd_code_http_precondition(codes[i]) != 0)
            problem_response_add(responses, rd_code_http_precondition(codes[i]), codes[i],
                                 " (If-Match failed)");
    }
    /* an all-or-nothing bulk that rolled back answers its own status with
     * the failing operation's code */
    for (const rd_code *c = m->answers; m->http_rolled_back_status != 0 && c != NULL && *c != RD_OK;
         c++)
        if (rd_code_http(*c) != m->http_rolled_back_status)
            problem_response_add(responses, m->http_rolled_back_status, *c, " (rolled back)");
}

static json_t *json_body(json_t *schema)
{
    return json_pack("{s:{s:o}}", "application/json", "schema", schema);
}

/* The success responses of a route. */
static void success_responses(oa *o, const gw_route_info *r, const char *model, json_t *responses)
{
    const svc_method *m = r->method;
    if (m->kind == SVC_SERVER_STREAM) {
        json_decref(message_schema(o, m->resp)); /* the events' component */
        char doc[512];
        snprintf(doc, sizeof doc,
                 "Server-Sent Events: each event's `data` is one %s in JSON and its `id` the "
                 "event's sync id (send it back as Last-Event-ID to resume); a failure ends the "
                 "stream with an `error` event whose data is a problem+json object.",
                 m->resp->name);
        json_object_set_new(responses, "200",
                            json_pack("{s:s,s:{s:{s:{s:s,s:s}}},s:{s:o}}", "description", doc,
                                      "content", "text/event-stream", "schema", "type", "string",
                                      "description", doc, "headers", "X-Request-Id",
                                      header_ref("X-Request-Id")));
        return;
    }
    json_t *schema;
    const ProtobufCFieldDescriptor *rb =
        r->response_body != NULL ? field_of(m->resp, r->response_body) : NULL;
    bool receipt = strcmp(m->resp->name, "recordd.v1.CommitReceipt") == 0;
    if (rb != NULL) {
        schema = field_schema(o, rb);
    } else if (model != NULL && (receipt || strcmp(m->resp->name, "recordd.v1.Record") == 0 ||
                                 strcmp(m->resp->name, "recordd.v1.ListRecordsResponse") == 0)) {
        json_decref(message_schema(o, m->resp));
        char name[160];
        snprintf(name, sizeof name, "%s.%s", model, m->resp->short_name);
        schema = ref_to(name);
    } else {
        schema = message_schema(o, m->resp);
    }
    json_t *headers = json_pack("{s:o}", "X-Request-Id", header_ref("X-Request-Id"));
    bool etag = receipt || strcmp(m->resp->name, "recordd.v1.Record") == 0 ||
                field_of(m->resp, "etag") != NULL;
    if (etag)
        json_object_set_new(headers, "ETag", header_ref("ETag"));
    if (m->http_location)
        json_object_set_new(headers, "Location", header_ref("Location"));
    if (receipt) {
        json_object_set_new(headers, "Idempotent-Replayed", header_ref("Idempotent-Replayed"));
        json_object_set_new(headers, "Preference-Applied", header_ref("Preference-Applied"));
    }
    int status = m->http_status != 0 ? m->http_status : 200;
    char st[8];
    snprintf(st, sizeof st, "%d", status);
    const char *what = status == 201 ? "Created" : receipt ? "The commit receipt" : "OK";
    json_object_set_new(responses, st,
                        json_pack("{s:s,s:O,s:o}", "description", what, "headers", headers,
                                  "content", json_body(json_incref(schema))));
    if (m->http_partial_status != 0) {
        snprintf(st, sizeof st, "%d", m->http_partial_status);
        json_object_set_new(responses, st,
                            json_pack("{s:s,s:O,s:o}", "description",
                                      "Some operations failed (totalFailed > 0): the result lists "
                                      "each operation's outcome",
                                      "headers", headers, "content",
                                      json_body(json_incref(schema))));
    }
    json_decref(schema);
    if (receipt) {
        json_object_set_new(
            responses, "204",
            json_pack("{s:s,s:{s:o,s:o,s:o,s:o,s:o,s:o}}", "description",
                      "Prefer: return=minimal: no body, the receipt's essentials in headers",
                      "headers", "X-Request-Id", header_ref("X-Request-Id"), "ETag",
                      header_ref("ETag"), "X-Sync-Id", header_ref("X-Sync-Id"), "X-Server-Tx-Id",
                      header_ref("X-Server-Tx-Id"), "X-Client-Tx-Id", header_ref("X-Client-Tx-Id"),
                      "Preference-Applied", header_ref("Preference-Applied")));
    }
    if (field_of(m->resp, "etag") != NULL)
        json_object_set_new(responses, "304",
                            json_pack("{s:s,s:{s:o}}", "description",
                                      "Not modified: If-None-Match names the current ETag",
                                      "headers", "ETag", header_ref("ETag")));
    json_decref(headers);
}

static json_t *request_body(oa *o, const gw_route_info *r, const char *model)
{
    const svc_method *m = r->method;
    json_t *schema;
    const char *doc = "The request message.";
    if (strcmp(r->body, "*") == 0) {
        schema = message_schema(o, m->req);
    } else if (model != NULL && body_shape(m) != SHAPE_READ && strcmp(r->body, "data") == 0) {
        char name[160];
        snprintf(name, sizeof name, "%s%s", model, shape_suffix[body_shape(m)]);
        schema = ref_to(name);
        doc = "The record data.";
    } else {
        const ProtobufCFieldDescriptor *f = field_of(m->req, r->body);
        schema = f != NULL ? field_schema(o, f) : json_object();
        doc = strcmp(r->body, "data") == 0 ? "The record data." : "The request's body field.";
    }
    return json_pack("{s:s,s:b,s:o}", "description", doc, "required", 1, "content",
                     json_body(schema));
}

/* The method's short name: "CreateRecord" of "/recordd.v1.Records/CreateRecord". */
static const char *short_method(const svc_method *m)
{
    const char *s = strrchr(m->path, '/');
    return s != NULL ? s + 1 : m->path;
}

/* A proto comment as text: the space after each "//" dropped, trailing
 * blank lines trimmed. Returns the length written into out. */
static size_t comment_text(const char *c, char *out, size_t cap)
{
    size_t n = 0;
    bool line_start = true;
    for (; c != NULL && *c != '\0' && n + 1 < cap; c++) {
        if (line_start && *c == ' ') {
            line_start = false;
            continue;
        }
        line_start = *c == '\n';
        out[n++] = *c;
    }
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        n--;
    out[n] = '\0';
    return n;
}

/* value as a reference to the component section[name] (kind: "parameters",
 * "responses"), written there on first use; inline when the name is taken
 * by a different value (another binding of the method). Takes value. */
static json_t *shared(json_t *section, const char *kind, const char *name, json_t *value)
{
    json_t *have = json_object_get(section, name);
    if (have != NULL && !json_equal(have, value))
        return value;
    if (have == NULL)
        json_object_set(section, name, value);
    json_decref(value);
    char ref[256];
    snprintf(ref, sizeof ref, "#/components/%s/%s", kind, name);
    return json_pack("{s:s}", "$ref", ref);
}

/* Moves the inline members of an operation's parameters (an array; named by
 * their `key` member) or responses (an object; named by status) into the
 * components as "<Method>.<name>", so the paths of every model share one
 * copy. Returns the container, its inline members replaced by references. */
static json_t *share_all(json_t *section, const char *kind, const char *method, const char *key,
                         json_t *items)
{
    char name[192];
    if (json_is_array(items)) {
        size_t i;
        json_t *v;
        json_array_foreach(items, i, v)
        {
            if (json_object_get(v, "$ref") != NULL)
                continue;
            snprintf(name, sizeof name, "%s.%s", method,
                     json_string_value(json_object_get(v, key)));
            json_array_set_new(items, i, shared(section, kind, name, json_incref(v)));
        }
        return items;
    }
    const char *status;
    json_t *v;
    json_object_foreach(items, status, v)
    {
        snprintf(name, sizeof name, "%s.%s", method, status);
        json_object_set_new(items, status, shared(section, kind, name, json_incref(v)));
    }
    return items;
}

static void add_operation(oa *o, json_t *paths, const gw_route_info *r, const char *model)
{
    const svc_method *m = r->method;
    char path[MAX_PATH], verb[16], tag[64], op_id[192];
    openapi_path(r->pattern, model, path, sizeof path);
    size_t k = 0;
    for (; r->verb[k] != '\0' && k + 1 < sizeof verb; k++)
        verb[k] = (char)(r->verb[k] >= 'A' && r->verb[k] <= 'Z' ? r->verb[k] + 32 : r->verb[k]);
    verb[k] = '\0';
    const char *service;
    size_t sn = svc_method_service(m, &service);
    size_t dot = sn;
    while (dot > 0 && service[dot - 1] != '.')
        dot--;
    if (model != NULL)
        snprintf(tag, sizeof tag, "%s", model);
    else
        snprintf(tag, sizeof tag, "%.*s", (int)(sn - dot), service + dot);
    snprintf(op_id, sizeof op_id, "%s_%s", tag, short_method(m));
    size_t base = strlen(op_id);
    for (int i = 2; json_object_get(o->op_ids, op_id) != NULL && i < 100; i++)
        snprintf(op_id + base, sizeof op_id - base, "_%d", i); /* additional bindings */
    json_object_set_new(o->op_ids, op_id, json_true());
    json_object_set_new(o->tags, tag, json_true());

    json_t *op =
        json_pack("{s:[s],s:s,s:s}", "tags", tag, "operationId", op_id, "summary", short_method(m));
    char doc[2048];
    size_t n = comment_text(r->doc, doc, sizeof doc - 256);
    snprintf(doc + n, sizeof doc - n, "%sgRPC: `%s`.", n > 0 ? "\n\n" : "", m->path + 1);
    json_object_set_new(op, "description", json_string(doc));
    json_object_set_new(
        op, "parameters",
        share_all(o->parameters, "parameters", short_method(m), "name", parameters(o, r, model)));
    if (r->body != NULL)
        json_object_set_new(op, "requestBody", request_body(o, r, model));
    json_t *responses = json_object();
    success_responses(o, r, model, responses);
    bool if_match = field_of(m->req, "expected_version") != NULL ||
                    field_of(m->req, "expected_revision") != NULL || m->http_if_match_on_reply;
    json_t *errors = json_object();
    error_responses(r, if_match, errors);
    json_object_update(responses,
                       share_all(o->responses, "responses", short_method(m), NULL, errors));
    json_decref(errors);
    json_object_set_new(op, "responses", responses);
    if (m->public)
        json_object_set_new(op, "security", json_array());
    else if (m->credential_optional)
        json_object_set_new(op, "security", json_pack("[{},{s:[]},{s:[]}]", "apiKey", "token"));

    json_t *item = json_object_get(paths, path);
    if (item == NULL) {
        item = json_object();
        json_object_set_new(paths, path, item);
    }
    json_object_set_new(item, verb, op);
}

/* ---- the fixed parts ---------------------------------------------------------------------- */

static json_t *header_param(const char *name, const char *doc, json_t *schema)
{
    return json_pack("{s:s,s:s,s:s,s:o}", "name", name, "in", "header", "description", doc,
                     "schema", schema);
}

static json_t *string_schema(void)
{
    return json_pack("{s:s}", "type", "string");
}

static json_t *components_parameters(void)
{
    json_t *p = json_object();
    json_object_set_new(p, "Idempotency-Key",
                        header_param("Idempotency-Key",
                                     "Makes a retry safe: the same key with the same request "
                                     "answers the first receipt (Idempotent-Replayed: true).",
                                     json_pack("{s:s,s:i}", "type", "string", "maxLength", 255)));
    json_object_set_new(p, "If-Match",
                        header_param("If-Match",
                                     "The record version (or schema revision) the write expects, "
                                     "as an entity tag (\"3\"); a mismatch answers 412.",
                                     string_schema()));
    json_object_set_new(p, "If-None-Match",
                        header_param("If-None-Match",
                                     "The ETag of a copy the client holds: 304 when unchanged.",
                                     string_schema()));
    json_object_set_new(p, "Prefer",
                        header_param("Prefer",
                                     "return=minimal: 204 without a body (the receipt's "
                                     "essentials in headers); return=representation: the "
                                     "written record in the receipt.",
                                     json_pack("{s:s,s:[s,s]}", "type", "string", "enum",
                                               "return=minimal", "return=representation")));
    json_object_set_new(p, "Last-Event-ID",
                        header_param("Last-Event-ID",
                                     "Resume a change feed after this sync id (the last event's "
                                     "id).",
                                     string_schema()));
    json_object_set_new(p, "X-Request-Id",
                        header_param("X-Request-Id",
                                     "Correlates the call in the server's log (printable ASCII, "
                                     "at most 128 characters); echoed, or generated when absent.",
                                     json_pack("{s:s,s:i}", "type", "string", "maxLength", 128)));
    json_object_set_new(
        p, "Grpc-Timeout",
        header_param("Grpc-Timeout",
                     "The call's deadline: digits and a unit (H, M, S, m, u, n), "
                     "e.g. 5S.",
                     json_pack("{s:s,s:s}", "type", "string", "pattern", "^[0-9]{1,8}[HMSmun]$")));
    return p;
}

static json_t *components_headers(void)
{
    static const char *const h[][2] = {
        {"X-Request-Id", "The request id (sent or generated)."},
        {"ETag", "The record's version (or the document's tag) as a strong entity tag."},
        {"Location", "The created record."},
        {"Idempotent-Replayed", "true when the answer is the replay of an earlier request with "
                                "the same Idempotency-Key."},
        {"Preference-Applied", "The Prefer preference applied."},
        {"X-Sync-Id", "The sync id the write committed at (Prefer: return=minimal)."},
        {"X-Server-Tx-Id", "The server's transaction id (Prefer: return=minimal)."},
        {"X-Client-Tx-Id", "The client's transaction id, echoed (Prefer: return=minimal)."},
        {"Retry-After", "Seconds to wait before retrying."},
        {"WWW-Authenticate", "Bearer realm=\"recordd\"."},
    };
    json_t *o = json_object();
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        json_object_set_new(
            o, h[i][0], json_pack("{s:s,s:o}", "description", h[i][1], "schema", string_schema()));
    return o;
}

static json_t *problem_schema(void)
{
    json_t *codes = json_array();
    for (int c = 1; c < RD_CODE_COUNT; c++)
        json_array_append_new(codes, json_string(rd_code_str((rd_code)c)));
    return json_pack(
        "{s:s,s:s,s:[s,s,s,s],s:{s:{s:s,s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s},s:{s:s,s:o},"
        "s:{s:s,s:s},s:{s:s,s:{s:s,s:{s:{s:s},s:{s:s}}}},s:{s:s,s:{s:{s:s},s:{s:s},s:{s:s}}},"
        "s:{s:s},s:{s:s}}}",
        "type", "object", "description",
        "An error as application/problem+json (RFC 9457). `type` is urn:recordd:problem:<code>; "
        "GET /problems/{code} explains each code.",
        "required", "type", "title", "status", "code", "properties", "type", "type", "string",
        "format", "uri", "title", "type", "string", "status", "type", "integer", "detail", "type",
        "string", "instance", "type", "string", "code", "type", "string", "enum", codes, "field",
        "type", "string", "description", "The request field the error concerns.", "errors", "type",
        "array", "items", "type", "object", "properties", "field", "type", "string", "detail",
        "type", "string", "requiredCapability", "type", "object", "properties", "can", "type",
        "string", "model", "type", "string", "syncGroup", "type", "string", "receipt", "$ref",
        REF_PREFIX "recordd.v1.CommitReceipt", "result", "$ref",
        REF_PREFIX "recordd.v1.BulkMutateResponse");
}

/* /healthz, /readyz, /metrics and /problems: answered by the gateway
 * itself, without a credential. */
static void fixed_paths(json_t *paths, json_t *tags)
{
    json_t *status =
        json_pack("{s:s,s:{s:{s:s}}}", "type", "object", "properties", "status", "type", "string");
    json_object_set_new(paths, "/healthz",
                        json_pack("{s:{s:[s],s:s,s:s,s:[],s:{s:{s:s,s:o}}}}", "get", "tags",
                                  "Operations", "operationId", "healthz", "summary",
                                  "Liveness: 200 while the process serves", "security", "responses",
                                  "200", "description", "Alive", "content",
                                  json_body(json_incref(status))));
    json_object_set_new(paths, "/readyz",
                        json_pack("{s:{s:[s],s:s,s:s,s:[],s:{s:{s:s,s:o},s:{s:s,s:o}}}}", "get",
                                  "tags", "Operations", "operationId", "readyz", "summary",
                                  "Readiness: 200 when the server takes calls", "security",
                                  "responses", "200", "description", "Ready", "content",
                                  json_body(json_incref(status)), "503", "description",
                                  "Not ready (starting, stopping, storage full)", "content",
                                  json_body(json_incref(status))));
    json_decref(status);
    json_object_set_new(paths, "/metrics",
                        json_pack("{s:{s:[s],s:s,s:s,s:[],s:{s:{s:s,s:{s:{s:{s:s}}}}}}}", "get",
                                  "tags", "Operations", "operationId", "metrics", "summary",
                                  "Prometheus metrics (text exposition format 0.0.4)", "security",
                                  "responses", "200", "description", "The metrics", "content",
                                  "text/plain; version=0.0.4; charset=utf-8", "schema", "type",
                                  "string"));
    json_object_set_new(
        paths, "/problems",
        json_pack("{s:{s:[s],s:s,s:s,s:[],s:{s:{s:s,s:{s:{s:{s:s}}}}}}}", "get", "tags",
                  "Operations", "operationId", "problems", "summary",
                  "The error catalogue (Markdown)", "security", "responses", "200", "description",
                  "Every error code: HTTP and gRPC status, retryable, meaning, what to do",
                  "content", "text/markdown; charset=utf-8", "schema", "type", "string"));
    json_object_set_new(
        paths, "/problems/{code}",
        json_pack("{s:{s:[s],s:s,s:s,s:[],s:[{s:s,s:s,s:b,s:{s:s}}],s:{s:{s:s,s:{s:{s:{s:s}}}},"
                  "s:{s:s,s:{s:{s:{s:s}}}}}}}",
                  "get", "tags", "Operations", "operationId", "problem", "summary",
                  "One error code's catalogue entry (Markdown)", "security", "parameters", "name",
                  "code", "in", "path", "required", 1, "schema", "type", "string", "responses",
                  "200", "description", "The entry", "content", "text/markdown; charset=utf-8",
                  "schema", "type", "string", "404", "description", "No such code", "content",
                  "application/problem+json", "schema", "$ref", REF_PREFIX "recordd.Problem"));
    json_object_set_new(tags, "Operations", json_true());
}

/* A Record's fields other than data are the server's: readOnly. */
static void mark_system_fields(oa *o)
{
    json_t *props = json_object_get(json_object_get(o->schemas, "recordd.v1.Record"), "properties");
    const char *key;
    json_t *v;
    json_object_foreach(props, key, v)
    {
        if (strcmp(key, "data") != 0)
            json_object_set_new(v, "readOnly", json_true());
    }
}

static const char *tag_doc(const char *tag, const Recordd__V1__Schema *schema)
{
    static const struct {
        const char *tag, *doc;
    } docs[] = {
        {"Records", "Create, read, list, patch, replace, delete and bulk-mutate records; the "
                    "change feed."},
        {"Schemas", "The organisation's schema (models and fields) and this document."},
        {"Claims", "Exclusive claims on a record, for multi-step edits."},
        {"Tokens", "Short-lived capability tokens minted from an API key."},
        {"Operations", "Health, readiness, metrics and the error catalogue; no credential."},
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        if (strcmp(docs[i].tag, tag) == 0)
            return docs[i].doc;
    return schema != NULL ? "Records of this model." : "";
}

json_t *gw_openapi_build(const gw_routes *routes, const Recordd__V1__Schema *schema)
{
    oa o = {json_object(), components_parameters(), json_object(), json_object(), json_object()};
    json_t *paths = json_object();
    if (schema != NULL && schema->n_models == 0)
        schema = NULL; /* nothing to type: the generic paths */
    if (schema != NULL) {
        /* the generic messages first: the models' typed copies start from them */
        for (size_t i = 0; i < svc_n_methods; i++)
            if (svc_methods[i].resp == &recordd__v1__list_records_response__descriptor ||
                svc_methods[i].resp == &recordd__v1__commit_receipt__descriptor)
                json_decref(message_schema(&o, svc_methods[i].resp));
        mark_system_fields(&o);
        for (size_t i = 0; i < schema->n_models; i++)
            model_components(&o, schema->models[i]);
    }
    for (size_t i = 0; i < gw_routes_count(routes); i++) {
        gw_route_info r;
        gw_routes_info(routes, i, &r);
        bool per_model = schema != NULL && strstr(r.pattern, "{model}") != NULL;
        if (!per_model) {
            add_operation(&o, paths, &r, NULL);
            continue;
        }
        for (size_t k = 0; k < schema->n_models; k++)
            add_operation(&o, paths, &r, schema->models[k]->name);
    }
    fixed_paths(paths, o.tags);
    mark_system_fields(&o);
    const char *key;
    json_t *v;
    json_object_set_new(o.schemas, "recordd.Problem",
                        problem_schema()); /* no model name has a dot */

    json_t *tags = json_array();
    json_object_foreach(o.tags, key, v)
    {
        json_array_append_new(
            tags, json_pack("{s:s,s:s}", "name", key, "description", tag_doc(key, schema)));
    }
    char desc[1024];
    if (schema != NULL)
        snprintf(desc, sizeof desc,
                 "The recordd HTTP/JSON API of this organisation at schema revision %lld: each "
                 "model has its own paths with its record data typed. Regenerate after a schema "
                 "push (the document's ETag changes).",
                 (long long)schema->revision);
    else
        snprintf(desc, sizeof desc,
                 "The recordd HTTP/JSON API with generic record bodies. With a credential, "
                 "GET /v1/openapi.json describes the caller's organisation: a path per model "
                 "and the record data typed from its schema.");
    json_t *doc = json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:[{s:s}],s:[{s:[]},{s:[]}],s:o,s:o,"
        "s:{s:o,s:o,s:o,s:o,s:{s:{s:s,s:s,s:s,s:s},s:{s:s,s:s,s:s,s:s}}}}",
        "openapi", "3.1.0", "info", "title", "recordd", "version", SVC_VERSION, "description", desc,
        "servers", "url", "/", "security", "apiKey", "token", "tags", tags, "paths", paths,
        "components", "schemas", o.schemas, "parameters", o.parameters, "responses", o.responses,
        "headers", components_headers(), "securitySchemes", "apiKey", "type", "http", "scheme",
        "bearer", "bearerFormat", "API key", "description",
        "An API key (sk_live_… or sk_test_…) as a bearer credential.", "token", "type", "http",
        "scheme", "bearer", "bearerFormat", "PASETO v4.public", "description",
        "A capability token (v4.public.…) minted with POST /v1/tokens.");
    json_decref(o.tags);
    json_decref(o.op_ids);
    return doc;
}
