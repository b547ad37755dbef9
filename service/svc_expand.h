/* svc_expand: GetRecord's and ListRecords' expand and read_mask
 * (docs/API.md "Relations: expand and fields").
 *
 * expand paths are dotted REFERENCE field names from the requested model
 * ("city", "city.country"; a path implies its prefixes). read_mask paths
 * are field names as written ("firstName", "city.name"); a path that goes
 * into a REFERENCE field implies expanding it. Together at most
 * SVC_EXPAND_MAX_PATHS distinct expanded paths (prefixes counted) of at
 * most SVC_EXPAND_MAX_DEPTH levels.
 *
 * The referenced records of a page are read level by level, per expanded
 * path one store_get_many (one statement per STORE_GET_MANY_CHUNK distinct
 * ids), inside the caller's read snapshot (store_read_hold), never one
 * query per record. A target the caller may not read, or that no longer
 * exists, comes back as omitted with nothing of it; one the caller may read
 * only some fields of comes back with only those. */
#ifndef SVC_EXPAND_H
#define SVC_EXPAND_H

#include "google/protobuf/field_mask.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "service/svc.h"
#include "store/store.h"

#define SVC_EXPAND_MAX_DEPTH 3  /* levels of an expanded path */
#define SVC_EXPAND_MAX_PATHS 10 /* distinct expanded paths, prefixes counted */

typedef struct svc_expand svc_expand;

/* Parses the expand paths expand[0..n_expand) and the read mask (NULL or
 * without paths: none) of a request on model m of schema sch, in the
 * arena. *out is NULL when there is nothing to do (no expand, no mask).
 * Errors: RD_VALIDATION_FAILED with field "expand" or "readMask" naming
 * the path (unknown field, not a REFERENCE, an empty segment, more than
 * SVC_EXPAND_MAX_DEPTH levels or SVC_EXPAND_MAX_PATHS paths), RD_INTERNAL. */
rd_code svc_expand_parse(rd_arena *a, const store_schema *sch, const store_model *m,
                         char *const *expand, size_t n_expand,
                         const Google__Protobuf__FieldMask *mask, svc_expand **out, rd_err *err);

/* The number of expanded paths of x (0 for NULL): when non-zero, the
 * caller holds a read snapshot (store_read_hold) around its read and
 * svc_expand_apply so that everything comes from one snapshot. */
size_t svc_expand_paths(const svc_expand *x);

/* Applies x (NULL: nothing) to the records recs[0..n) of model x was
 * parsed for, already converted into out[0..n) (svc_record_to_pb): fills
 * each out[i]->expanded, reading the referenced records on c, and keeps in
 * out[i]->data only the fields the mask selects. read_at goes into the
 * expanded records. Errors: RD_UNAVAILABLE, RD_INTERNAL. */
rd_code svc_expand_apply(svc_call *call, store_conn *c, const svc_expand *x,
                         const store_record *recs, Recordd__V1__Record **out, size_t n,
                         int64_t read_at, rd_err *err);

#endif
