/* gw_problem: renders errors and failed outcomes as
 * application/problem+json (gw_problem.h). The mapping code → HTTP status
 * is rd_code_http, the one table; a caller may override it with a status
 * from a method column (a rolled-back bulk: 422) or the precondition
 * column (If-Match: 412). */
#include "service/gw_problem.h"

#include <ctype.h>
#include <string.h>

#include "service/gw_json.h"

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

void gw_problem_from_outcome(const svc_outcome *o, int http_status, const char *instance,
                             gw_problem *out)
{
    memset(out, 0, sizeof *out);
    const rd_err *err = &o->err;
    out->code = err->code;
    out->status = http_status ? http_status : rd_code_http(err->code);
    out->body = base(err->code, out->status, err->msg, err->field, instance);
    if (o->retry_after_ms > 0)
        out->retry_after_s = (o->retry_after_ms + 999) / 1000;
    if (out->body == NULL)
        return;
    json_t *errs = NULL;
    for (size_t i = 0; i < o->n_violations; i++) {
        const char *f = o->violations[i].key, *d = o->violations[i].value;
        if (f == NULL || d == NULL || !rd_utf8_valid(f, strlen(f)) || !rd_utf8_valid(d, strlen(d)))
            continue;
        if (errs == NULL)
            errs = json_array();
        json_array_append_new(errs, json_pack("{s:s,s:s}", "field", f, "detail", d));
    }
    if (o->n_violations == 0 && err->field[0] != '\0' && rd_code_grpc(err->code) == 3)
        errs = json_pack("[{s:s,s:s}]", "field", err->field, "detail", err->msg);
    if (errs != NULL)
        json_object_set_new(out->body, "errors", errs);
    if (o->can != NULL)
        json_object_set_new(out->body, "requiredCapability",
                            json_pack("{s:s,s:s,s:s}", "can", o->can, "model",
                                      o->model ? o->model : "", "syncGroup",
                                      o->group ? o->group : ""));
    if (o->receipt != NULL)
        json_object_set_new(out->body, "receipt", gw_json_encode(o->receipt));
    if (o->bulk != NULL)
        json_object_set_new(out->body, "result", gw_json_encode(o->bulk));
}

void gw_problem_from_err(const rd_err *err, int http_status, const char *instance, gw_problem *out)
{
    svc_outcome o = {.err = *err};
    gw_problem_from_outcome(&o, http_status, instance, out);
}
