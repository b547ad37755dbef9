/* svc_write: one record write prepared and authorised (svc_write.h). */
#include "service/svc_write.h"

#include "service/svc_authz.h"
#include "service/svc_convert.h"

rd_code svc_write_require(const char *value, const char *field, rd_err *err)
{
    if (value == NULL || value[0] == '\0')
        return rd_errf(err, RD_VALIDATION_FAILED, field, "%s is required", field);
    return RD_OK;
}

/* The concurrency guards (DESIGN.md §4): expected_version, read_at (not
 * negative), on_stale (REJECT when unspecified) and the claim id. */
static rd_code guards(const svc_write_req *r, store_write *w, rd_err *err)
{
    if (r->expected_version != NULL) {
        w->rec.has_expected_version = true;
        w->rec.expected_version = r->expected_version->value;
    }
    if (r->read_at != NULL) {
        if (r->read_at->value < 0)
            return rd_errf(err, RD_VALIDATION_FAILED, "readAt", "readAt must not be negative");
        w->rec.has_read_at = true;
        w->rec.read_at = r->read_at->value;
    }
    switch (r->on_stale) {
    case RECORDD__V1__ON_STALE__ON_STALE_UNSPECIFIED:
    case RECORDD__V1__ON_STALE__REJECT:
        w->rec.on_stale = STORE_STALE_REJECT;
        break;
    case RECORDD__V1__ON_STALE__OVERWRITE:
        w->rec.on_stale = STORE_STALE_OVERWRITE;
        break;
    case RECORDD__V1__ON_STALE__NOTIFY:
        w->rec.on_stale = STORE_STALE_NOTIFY;
        break;
    default:
        return rd_errf(err, RD_VALIDATION_FAILED, "onStale", "onStale: unknown value %d",
                       (int)r->on_stale);
    }
    w->rec.claim = r->claim;
    return RD_OK;
}

rd_code svc_write_prepare(const svc_write_req *r, store_write *w, rd_err *err)
{
    w->op = r->op;
    w->rec.model = r->model;
    w->rec.id = r->id;
    w->rec.group = r->op == STORE_OP_CREATE ? r->group : NULL;
    if (svc_write_require(r->model, "model", err) != RD_OK)
        return err->code;
    if (r->op != STORE_OP_CREATE && svc_write_require(r->id, "id", err) != RD_OK)
        return err->code;
    if (r->op != STORE_OP_CREATE && guards(r, w, err) != RD_OK)
        return err->code;
    if (r->op != STORE_OP_DELETE && svc_struct_to_json(r->data, &w->rec.data, err) != RD_OK)
        return err->code;
    return RD_OK;
}

/* Keeps the capability a denial needed. */
static void note_denial(svc_write_authz *az, rd_code code)
{
    const auth_required *r = svc_call_required(az->call);
    if (code != RD_PERMISSION_DENIED || r == NULL)
        return;
    az->required = *r;
    az->denied = true;
}

rd_code svc_write_authorize(svc_call *call, svc_write_authz *az, auth_verb can, store_write *w,
                            const store_model *m, rd_err *err)
{
    rd_arena *a = svc_call_arena(call);
    az->call = call;
    az->can = can;
    az->m = m;
    bool ok = w->op == STORE_OP_REPLACE ? svc_authz_model_fields(a, m, &az->fields, &az->n_fields)
              : w->op == STORE_OP_DELETE
                  ? true
                  : svc_authz_data_fields(a, w->rec.data, &az->fields, &az->n_fields);
    if (!ok)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    if (w->op != STORE_OP_CREATE) {
        w->authorize = svc_write_authorize_in_writer;
        if (w->op == STORE_OP_DELETE) {
            w->authorize_other = svc_write_authorize_other;
            w->may_read = svc_write_may_read;
        }
        return RD_OK;
    }
    rd_code code =
        svc_authz(call, can, w->rec.model, w->rec.group, az->fields, az->n_fields, m, err);
    note_denial(az, code);
    return code;
}

rd_code svc_write_authorize_in_writer(store_write *w, const char *group, rd_err *err)
{
    svc_write_authz *az = w->ctx;
    rd_code code = group == NULL ? svc_authz_model(az->call, az->can, w->rec.model, err)
                                 : svc_authz(az->call, az->can, w->rec.model, group, az->fields,
                                             az->n_fields, az->m, err);
    note_denial(az, code);
    return code;
}

rd_code svc_write_authorize_other(store_write *w, const store_model *m, store_op op,
                                  const char *group, const char *field, rd_err *err)
{
    svc_write_authz *az = w->ctx;
    const char *fields[1] = {field};
    bool update = op == STORE_OP_UPDATE && field != NULL;
    rd_code code = svc_authz(az->call, update ? AUTH_UPDATE : AUTH_DELETE, m->name, group,
                             update ? fields : NULL, update ? 1 : 0, m, err);
    rd_err why = *err;
    if (code == RD_PERMISSION_DENIED)
        rd_errf(err, RD_PERMISSION_DENIED, why.field[0] ? why.field : NULL,
                "deleting record '%.128s' of %s would %s records of %s in sync group '%.128s' "
                "(onDelete %s): %s",
                w->rec.id ? w->rec.id : "", w->rec.model ? w->rec.model : "",
                update ? "update" : "delete", m->name, group, update ? "SET_NULL" : "CASCADE",
                why.msg);
    note_denial(az, code);
    return code;
}

bool svc_write_may_read(store_write *w, const store_model *m, const char *group)
{
    svc_write_authz *az = w->ctx;
    const auth_principal *p = svc_call_principal(az->call);
    return p != NULL &&
           svc_authz_read_scope(auth_principal_caps(p), m->name, group) != SVC_READ_NONE;
}
