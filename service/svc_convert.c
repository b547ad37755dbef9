/* svc_convert: wire <-> store conversions for record data and records (see
 * svc_convert.h). Handlers call these between decoding a request and
 * submitting it to the store, and when building replies. */
#include "service/svc_convert.h"

#include "service/gw_json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static rd_code value_to_json(const Google__Protobuf__Value *v, const char *field, int depth,
                             json_t **out, rd_err *err);

static rd_code struct_to_json(const Google__Protobuf__Struct *s, const char *field, int depth,
                              json_t **out, rd_err *err)
{
    json_t *obj = json_object();
    if (obj == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    for (size_t i = 0; s != NULL && i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = s->fields[i];
        const char *name = field ? field : e->key;
        json_t *child = NULL;
        if (value_to_json(e->value, name, depth + 1, &child, err) != RD_OK) {
            json_decref(obj);
            return err->code;
        }
        if (json_object_set_new(obj, e->key, child) != 0) {
            json_decref(obj);
            return rd_errf(err, RD_INVALID_BODY, name, "%s: key is not valid UTF-8", name);
        }
    }
    *out = obj;
    return RD_OK;
}

static rd_code value_to_json(const Google__Protobuf__Value *v, const char *field, int depth,
                             json_t **out, rd_err *err)
{
    if (depth > STORE_MAX_DEPTH + 1)
        return rd_errf(err, RD_VALIDATION_FAILED, field,
                       "%s: value is nested deeper than %d levels", field, STORE_MAX_DEPTH);
    json_t *j = NULL;
    switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        j = json_null();
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        double d = v->number_value;
        if (!isfinite(d))
            return rd_errf(err, RD_VALIDATION_FAILED, field, "%s: number is not finite", field);
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            j = json_integer((json_int_t)d);
        else
            j = json_real(d);
        break;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        j = json_string(v->string_value);
        if (j == NULL)
            return rd_errf(err, RD_INVALID_BODY, field, "%s: string is not valid UTF-8", field);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        j = json_boolean(v->bool_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return struct_to_json(v->struct_value, field, depth, out, err);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        const Google__Protobuf__ListValue *l = v->list_value;
        j = json_array();
        for (size_t i = 0; j != NULL && l != NULL && i < l->n_values; i++) {
            json_t *child = NULL;
            if (value_to_json(l->values[i], field, depth + 1, &child, err) != RD_OK) {
                json_decref(j);
                return err->code;
            }
            json_array_append_new(j, child);
        }
        break;
    }
    default:
        return rd_errf(err, RD_VALIDATION_FAILED, field, "%s: value has no kind", field);
    }
    if (j == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    *out = j;
    return RD_OK;
}

rd_code svc_struct_to_json(const Google__Protobuf__Struct *s, json_t **out, rd_err *err)
{
    return struct_to_json(s, NULL, 0, out, err);
}

rd_code svc_value_to_json(const Google__Protobuf__Value *v, const char *path, json_t **out,
                          rd_err *err)
{
    return value_to_json(v, path, 1, out, err);
}

/* JSON -> Struct / Value: the gateway's proto3 JSON decoder (gw_json.c),
 * the one implementation of that direction. */
Google__Protobuf__Value *svc_json_to_value(rd_arena *a, const json_t *j)
{
    ProtobufCMessage *m = NULL;
    rd_err err;
    if (gw_json_decode(&google__protobuf__value__descriptor, j, a, &m, &err) != RD_OK)
        return NULL;
    return (Google__Protobuf__Value *)m;
}

Google__Protobuf__Struct *svc_json_to_struct(rd_arena *a, const json_t *obj)
{
    ProtobufCMessage *m = NULL;
    rd_err err;
    if (!json_is_object(obj)) { /* no data: an empty object */
        Google__Protobuf__Struct *s = rd_arena_alloc(a, sizeof *s);
        if (s != NULL)
            google__protobuf__struct__init(s);
        return s;
    }
    if (gw_json_decode(&google__protobuf__struct__descriptor, obj, a, &m, &err) != RD_OK)
        return NULL;
    return (Google__Protobuf__Struct *)m;
}

Google__Protobuf__Timestamp *svc_timestamp(rd_arena *a, int64_t t_us)
{
    Google__Protobuf__Timestamp *t = rd_arena_alloc(a, sizeof *t);
    if (t == NULL)
        return NULL;
    google__protobuf__timestamp__init(t);
    int64_t sec = t_us / 1000000, us = t_us % 1000000;
    if (us < 0) {
        us += 1000000;
        sec -= 1;
    }
    t->seconds = sec;
    t->nanos = (int32_t)(us * 1000);
    return t;
}

Recordd__V1__Record *svc_record_to_pb(rd_arena *a, const char *org, const char *model,
                                      const store_record *rec, int64_t read_at)
{
    Recordd__V1__Record *r = rd_arena_alloc(a, sizeof *r);
    if (r == NULL)
        return NULL;
    recordd__v1__record__init(r);
    r->model = rd_arena_strdup(a, model);
    r->id = rd_arena_strdup(a, rec->id);
    r->group = rd_arena_strdup(a, rec->group);
    r->created_by = rd_arena_strdup(a, rec->created_by);
    r->updated_by = rd_arena_strdup(a, rec->updated_by);
    r->organization_id = rd_arena_strdup(a, org);
    r->version = rec->version;
    r->sync_id = rec->sync_id;
    r->read_at = read_at;
    r->created_at = svc_timestamp(a, rec->created_at_us);
    r->updated_at = svc_timestamp(a, rec->updated_at_us);
    r->data = svc_json_to_struct(a, rec->data);
    if (!r->model || !r->id || !r->group || !r->created_by || !r->updated_by ||
        !r->organization_id || !r->created_at || !r->updated_at || !r->data)
        return NULL;
    return r;
}

/* ---- depth pre-scan ------------------------------------------------------ */

/* Reads a varint at *p (< end); 0 on success. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Scans one message's fields; path holds the field path so far (plen
 * bytes). Malformed framing is left for the unpacker to reject. */
static rd_code scan(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                    int left, char *path, size_t plen, size_t cap, rd_err *err)
{
    if (left <= 0)
        return rd_errf(err, RD_INVALID_BODY, path, "request is nested deeper than %d messages",
                       SVC_MAX_PB_DEPTH);
    while (p < end) {
        uint64_t key, n;
        if (read_varint(&p, end, &key) != 0)
            return RD_OK;
        switch (key & 7) {
        case 0:
            if (read_varint(&p, end, &n) != 0)
                return RD_OK;
            break;
        case 1:
        case 5: {
            size_t w = (key & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < w)
                return RD_OK;
            p += w;
            break;
        }
        case 2: {
            if (read_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p))
                return RD_OK;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
            if (f != NULL &&
                (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
                int w = snprintf(path + plen, cap - plen, "%s%s", plen ? "." : "", f->name);
                size_t np = w < 0 || (size_t)w >= cap - plen ? plen : plen + (size_t)w;
                rd_code rc = RD_OK;
                if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                    rc = scan(f->descriptor, p, p + n, left - 1, path, np, cap, err);
                else if (!rd_utf8_valid((const char *)p, (size_t)n))
                    rc = rd_errf(err, RD_INVALID_BODY, path,
                                 "%s: string is not valid UTF-8 or contains a NUL character", path);
                if (rc != RD_OK)
                    return rc;
                path[plen] = '\0';
            }
            p += n;
            break;
        }
        default:
            return RD_OK;
        }
    }
    return RD_OK;
}

rd_code svc_pb_precheck(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                        rd_err *err)
{
    char path[256] = "";
    return scan(d, buf, buf + len, SVC_MAX_PB_DEPTH, path, 0, sizeof path, err);
}
