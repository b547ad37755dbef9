/* svc_write: the one preparation of a record write, shared by the single
 * record RPCs (service/svc_records.c) and BulkMutate's operations
 * (service/svc_bulk.c): the request's fields checked and copied into a
 * store_write (model, id, group, the data as JSON, the concurrency guards)
 * and its authorisation — a create decided at once, an update, replace or
 * delete by the writer against the group of the record it reads (the one
 * authorize callback both paths use). */
#ifndef SVC_WRITE_H
#define SVC_WRITE_H

#include "auth/auth.h"
#include "recordd/v1/records.pb-c.h"
#include "service/svc.h"
#include "store/store.h"

/* A record write as requested, whatever message carried it. */
typedef struct svc_write_req {
    store_op op; /* CREATE, UPDATE, REPLACE or DELETE */
    const char *model, *id;
    const char *group;                    /* create only; "" = default */
    const Google__Protobuf__Struct *data; /* create, update (a merge patch), replace */
    const Google__Protobuf__Int64Value *expected_version, *read_at;
    Recordd__V1__OnStale on_stale;
    const char *claim;
} svc_write_req;

/* The authorisation of one write. The struct w->ctx points to must begin
 * with it (the writer's authorize callback finds it there), and it must
 * live until the write's done ran. */
typedef struct svc_write_authz {
    svc_call *call;
    auth_verb can;
    const char *const *fields; /* the fields written (arena) */
    size_t n_fields;
    const store_model *m; /* writableBy rules; from a snapshot the caller holds */
    /* a denial's needed capability (svc_authz remembers only the call's latest) */
    auth_required required;
    bool denied;
} svc_write_authz;

/* "<field> is required" (RD_VALIDATION_FAILED) when value is NULL or "". */
rd_code svc_write_require(const char *value, const char *field, rd_err *err);

/* Checks r — model, id (not for a create), readAt (not negative), onStale
 * — and fills w: op, model, id, group, the guards, and the data as JSON
 * (w->rec.data, a new reference the caller releases; NULL for a delete).
 * Errors are RD_VALIDATION_FAILED / RD_INVALID_BODY naming the field. */
rd_code svc_write_prepare(const svc_write_req *r, store_write *w, rd_err *err);

/* Authorises prepared write w of call with verb can on model m (NULL when
 * the schema has no such model; the store then reports it): the fields it
 * writes are the data's keys (create, update), every field of m (replace)
 * or none (delete). A create is decided here (RD_PERMISSION_DENIED with
 * the capability noted in az); the others get w->authorize, which the
 * writer runs with the record's sync group, and a delete also
 * w->authorize_other for the records it cascades to. */
rd_code svc_write_authorize(svc_call *call, svc_write_authz *az, auth_verb can, store_write *w,
                            const store_model *m, rd_err *err);

/* The writer's authorize callback (svc_write_authorize sets it; BulkMutate's
 * by-filter operations set it themselves with az filled in): the record's
 * group, or NULL when there is no such record — then some capability must
 * allow the verb on the model (the write reports not_found) or the caller
 * learns nothing about which ids exist. */
rd_code svc_write_authorize_in_writer(store_write *w, const char *group, rd_err *err);

/* The writer's authorize_other callback of deletes (svc_write_authorize
 * sets it; BulkMutate's DELETE_WHERE too): a record the delete would
 * change through REFERENCE fields needs the verb of that change on its own
 * model and group: delete for a cascaded delete, update of the cleared
 * field (writableBy rules included) for SET_NULL. A denial is noted in az
 * like the record's own. */
rd_code svc_write_authorize_other(store_write *w, const store_model *m, store_op op,
                                  const char *group, const char *field, rd_err *err);

/* The writer's may_read callback of deletes: whether the caller may read
 * a record of m in group (a RESTRICT refusal names only such a record). */
bool svc_write_may_read(store_write *w, const store_model *m, const char *group);

#endif
