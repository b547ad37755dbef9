/* svc_authz: authorisation of one RPC (DESIGN.md §6). Every handler asks
 * here before it touches the store: (verb, model, sync group) against the
 * principal's capabilities and every written field against the caps'
 * field lists and the schema's writableBy roles, through auth_allows. A
 * denial is RD_PERMISSION_DENIED with the required capability remembered on
 * the call (svc_call_set_required), which the receipt module puts into the
 * receipt error and the status details. The table of which RPC needs what
 * is in docs/internals/auth.md ("Server integration"). */
#ifndef SVC_AUTHZ_H
#define SVC_AUTHZ_H

#include "service/svc.h"

/* The sync group a create without one lands in (the store's default). */
#define SVC_DEFAULT_GROUP "default"

/* Checks `can` on (model, group) writing fields[0..n) (NULL when n is 0)
 * for the call's principal; group NULL or "" means SVC_DEFAULT_GROUP. m
 * (may be NULL) supplies the per-field writableBy rules. Errors:
 * RD_PERMISSION_DENIED (required capability remembered), RD_UNAUTHENTICATED
 * (no principal), RD_INTERNAL. */
rd_code svc_authz(svc_call *call, auth_verb can, const char *model, const char *group,
                  const char *const *fields, size_t n, const store_model *m, rd_err *err);

/* Passes when some capability of the principal allows `can` on model in
 * any group; otherwise RD_PERMISSION_DENIED requiring {can, model, "*"}.
 * The first step of authorising a write to an existing record: the
 * record's own group is then checked where the record is read. */
rd_code svc_authz_model(svc_call *call, auth_verb can, const char *model, rd_err *err);

/* Passes when the principal holds any capability with a verb in verbs
 * (OR of auth_verb) on any model and group; otherwise RD_PERMISSION_DENIED
 * requiring {can = the lowest verb of verbs, model "*", group "*"}. Used by
 * GetSchema (read or admin) and by ReleaseClaim without a record. */
rd_code svc_authz_any(svc_call *call, unsigned verbs, rd_err *err);

/* The sync groups in which the principal holds `can` on model: *all when a
 * capability with that verb on the model (or "*") has group "*"; otherwise
 * the distinct groups of such capabilities (in the arena, *n of them). No
 * such capability at all: RD_PERMISSION_DENIED requiring {can, model, "*"}.
 * By-filter writes (BulkMutate) touch only records in these groups. */
rd_code svc_authz_groups(svc_call *call, auth_verb can, const char *model, bool *all,
                         const char ***groups, size_t *n, rd_err *err);

/* A store_filter_access callback (ctx: the svc_call): the groups in which
 * the call's principal may read model, as svc_authz_groups with AUTH_READ;
 * no read on it at all is RD_PERMISSION_DENIED requiring {read, model,
 * "*"}. A filter or order_by path through a reference into model matches
 * only records of those groups (ListRecords, by-filter bulk operations). */
rd_code svc_authz_read_groups(void *call, const char *model, bool *all, const char ***groups,
                              size_t *n, rd_err *err);

/* How much of a record in (model, group) a principal may read. */
typedef enum svc_read_scope {
    SVC_READ_NONE = 0,   /* no read capability on (model, group) */
    SVC_READ_FIELDS = 1, /* only the fields the matching read caps list */
    SVC_READ_ALL = 2,    /* some matching read cap has no field list */
} svc_read_scope;

/* Whether the call's principal may read every record of model, in every
 * sync group and every field: only then does a duplicate_record refusal
 * name the colliding field (store_write.rec.redact_duplicates). */
bool svc_authz_reads_whole_model(svc_call *call, const char *model);

/* ---- pure helpers (unit-tested) -------------------------------------------- */

/* The read scope caps give on (model, group) (group "" = SVC_DEFAULT_GROUP). */
svc_read_scope svc_authz_read_scope(const auth_caps *caps, const char *model, const char *group);

/* Whether caps let the holder read field of a record in (model, group):
 * some read cap matching (model, group) has no field list or lists it. */
bool svc_authz_field_readable(const auth_caps *caps, const char *model, const char *group,
                              const char *field);

/* Whether caps grant `can` on model (exactly or "*") in any group. */
bool svc_authz_model_in_caps(const auth_caps *caps, auth_verb can, const char *model);

/* The per-field writableBy lists for fields[0..n) of model m, in the arena:
 * entry i is NULL (no rule: unknown field or empty list) or a
 * NULL-terminated role list. *out is NULL when no field has a rule (or m is
 * NULL). Returns false when out of memory. */
bool svc_authz_writable_by(rd_arena *a, const store_model *m, const char *const *fields, size_t n,
                           const char *const *const **out);

/* The top-level member names of a JSON object (data of a create, the patch
 * of an update) into the arena; *n = 0 for anything else. false when out of
 * memory. */
bool svc_authz_data_fields(rd_arena *a, const json_t *data, const char *const **out, size_t *n);

/* Every field name of m (a replace writes them all) into the arena. false
 * when out of memory. */
bool svc_authz_model_fields(rd_arena *a, const store_model *m, const char *const **out, size_t *n);

#endif
