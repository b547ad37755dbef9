/* gw_problem: renders what the receipt module put into a gRPC status as
 * application/problem+json (gw_problem.h). The mapping code → HTTP status
 * is rd_code_http, the one table; the only HTTP-specific rule here is that
 * a rolled-back bulk commit is 422. */
#include "service/gw_problem.h"

#include <ctype.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "service/gw_json.h"
#include "service/svc.h"

#define TYPE_PREFIX "type.googleapis.com/"
#define BULK_RESPONSE "recordd.v1.BulkMutateResponse"

/* The first code of the table with this gRPC status (for statuses that
 * came without details, such as the server's own overload answers). */
static rd_code code_of_grpc(int grpc_code)
{
    for (int c = 1; c < RD_CODE_COUNT; c++)
        if (rd_code_grpc((rd_code)c) == grpc_code)
            return (rd_code)c;
    return grpc_code == 0 ? RD_OK : RD_INTERNAL;
}

const ProtobufCMessageDescriptor *gw_message_type(const char *full_name)
{
    for (size_t i = 0; i < svc_n_methods; i++) {
        if (strcmp(svc_methods[i].resp->name, full_name) == 0)
            return svc_methods[i].resp;
        if (strcmp(svc_methods[i].req->name, full_name) == 0)
            return svc_methods[i].req;
    }
    return NULL;
}

/* "version_conflict" → "Version conflict". */
static json_t *title_of(rd_code code)
{
    char t[64];
    const char *s = rd_code_str(code);
    size_t n = 0;
    for (; s[n] != '\0' && n < sizeof t - 1; n++)
        t[n] = s[n] == '_' ? ' ' : s[n];
    t[n] = '\0';
    if (n > 0)
        t[0] = (char)toupper((unsigned char)t[0]);
    return json_string(t);
}

/* The common members; field and detail may be empty. */
static json_t *base(rd_code code, int status, const char *detail, const char *field,
                    const char *instance)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    char type[96];
    snprintf(type, sizeof type, "urn:recordd:problem:%s", rd_code_str(code));
    json_object_set_new(o, "type", json_string(type));
    json_object_set_new(o, "title", title_of(code));
    json_object_set_new(o, "status", json_integer(status));
    /* detail comes from handlers and the store: make sure it is text */
    if (detail != NULL && detail[0] != '\0' && rd_utf8_valid(detail, strlen(detail)))
        json_object_set_new(o, "detail", json_string(detail));
    if (instance != NULL && rd_utf8_valid(instance, strlen(instance)))
        json_object_set_new(o, "instance", json_string(instance));
    json_object_set_new(o, "code", json_string(rd_code_str(code)));
    if (field != NULL && field[0] != '\0' && rd_utf8_valid(field, strlen(field)))
        json_object_set_new(o, "field", json_string(field));
    return o;
}

void gw_problem_from_err(const rd_err *err, int http_status, const char *instance, gw_problem *out)
{
    memset(out, 0, sizeof *out);
    out->code = err->code;
    out->status = http_status ? http_status : rd_code_http(err->code);
    out->body = base(err->code, out->status, err->msg, err->field, instance);
    if (out->body != NULL && err->field[0] != '\0' && rd_code_grpc(err->code) == 3) {
        json_t *e = json_pack("{s:s,s:s}", "field", err->field, "detail", err->msg);
        if (e != NULL)
            json_object_set_new(out->body, "errors", json_pack("[o]", e));
    }
}

/* The message of an Any whose type the gateway knows, unpacked with the
 * default allocator (free with protobuf_c_message_free_unpacked). */
static ProtobufCMessage *unpack_any(const Google__Protobuf__Any *any,
                                    const ProtobufCMessageDescriptor **d)
{
    *d = NULL;
    if (any->type_url == NULL || strncmp(any->type_url, TYPE_PREFIX, strlen(TYPE_PREFIX)) != 0)
        return NULL;
    *d = gw_message_type(any->type_url + strlen(TYPE_PREFIX));
    if (*d == NULL)
        return NULL;
    return protobuf_c_message_unpack(*d, NULL, any->value.len, any->value.data);
}

void gw_problem_from_status(int grpc_code, int noted, const char *msg, const void *details,
                            size_t details_len, const char *instance, gw_problem *out)
{
    memset(out, 0, sizeof *out);
    Google__Rpc__Status *st =
        details != NULL ? google__rpc__status__unpack(NULL, details_len, details) : NULL;
    Google__Rpc__ErrorInfo *info = NULL;
    Google__Rpc__BadRequest *br = NULL;
    Google__Rpc__RetryInfo *retry = NULL;
    json_t *receipt = NULL, *bulk = NULL;
    const char *field = NULL;
    json_t *cap = NULL;

    for (size_t i = 0; st != NULL && i < st->n_details; i++) {
        const Google__Protobuf__Any *any = st->details[i];
        const char *url = any->type_url ? any->type_url : "";
        if (strcmp(url, TYPE_PREFIX "google.rpc.ErrorInfo") == 0 && info == NULL) {
            info = google__rpc__error_info__unpack(NULL, any->value.len, any->value.data);
        } else if (strcmp(url, TYPE_PREFIX "google.rpc.BadRequest") == 0 && br == NULL) {
            br = google__rpc__bad_request__unpack(NULL, any->value.len, any->value.data);
        } else if (strcmp(url, TYPE_PREFIX "google.rpc.RetryInfo") == 0 && retry == NULL) {
            retry = google__rpc__retry_info__unpack(NULL, any->value.len, any->value.data);
        } else {
            const ProtobufCMessageDescriptor *d;
            ProtobufCMessage *m = unpack_any(any, &d);
            if (m == NULL)
                continue;
            json_t *j = gw_json_encode(m);
            if (strcmp(d->name, "recordd.v1.CommitReceipt") == 0 && receipt == NULL)
                receipt = j;
            else if (strcmp(d->name, BULK_RESPONSE) == 0 && bulk == NULL)
                bulk = j;
            else
                json_decref(j);
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }

    rd_code code = noted > 0 && noted < RD_CODE_COUNT && rd_code_grpc((rd_code)noted) == grpc_code
                       ? (rd_code)noted
                       : code_of_grpc(grpc_code);
    const char *can = NULL, *model = NULL, *group = NULL;
    for (size_t i = 0; info != NULL && i < info->n_metadata; i++) {
        const char *k = info->metadata[i]->key, *v = info->metadata[i]->value;
        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "field") == 0)
            field = v;
        else if (strcmp(k, "can") == 0)
            can = v;
        else if (strcmp(k, "model") == 0)
            model = v;
        else if (strcmp(k, "sync_group") == 0)
            group = v;
    }
    if (can != NULL)
        cap = json_pack("{s:s,s:s,s:s}", "can", can, "model", model ? model : "", "syncGroup",
                        group ? group : "");

    out->code = code;
    out->status = rd_code_http(code);
    if (bulk != NULL) {
        out->status = 422;
        out->bulk_rolled_back = true;
    }
    out->body = base(code, out->status, msg, field, instance);
    if (out->body != NULL) {
        if (br != NULL && br->n_field_violations > 0) {
            json_t *errs = json_array();
            for (size_t i = 0; i < br->n_field_violations; i++) {
                const Google__Rpc__BadRequest__FieldViolation *fv = br->field_violations[i];
                const char *f = fv->field ? fv->field : "",
                           *dsc = fv->description ? fv->description : "";
                if (rd_utf8_valid(f, strlen(f)) && rd_utf8_valid(dsc, strlen(dsc)))
                    json_array_append_new(errs, json_pack("{s:s,s:s}", "field", f, "detail", dsc));
            }
            json_object_set_new(out->body, "errors", errs);
        }
        if (cap != NULL)
            json_object_set(out->body, "requiredCapability", cap);
        if (receipt != NULL)
            json_object_set(out->body, "receipt", receipt);
        if (bulk != NULL)
            json_object_set(out->body, "result", bulk);
    }
    if (retry != NULL && retry->retry_delay != NULL) {
        int64_t s = retry->retry_delay->seconds + (retry->retry_delay->nanos > 0 ? 1 : 0);
        out->retry_after_s = s > 0 ? s : 1;
    }
    json_decref(cap);
    json_decref(receipt);
    json_decref(bulk);
    if (info != NULL)
        google__rpc__error_info__free_unpacked(info, NULL);
    if (br != NULL)
        google__rpc__bad_request__free_unpacked(br, NULL);
    if (retry != NULL)
        google__rpc__retry_info__free_unpacked(retry, NULL);
    if (st != NULL)
        google__rpc__status__free_unpacked(st, NULL);
}
