/* svc_expand: expand and read_mask of GetRecord and ListRecords
 * (svc_expand.h). A request's paths become a small tree of nodes, one per
 * expanded path (the root is the requested model); the mask decides per
 * node whether it is returned and which of its fields. Applying it reads,
 * node by node in the order the tree was built (a parent before its
 * children), the distinct ids its parent's records reference, with
 * store_get_many. */
#include "service/svc_expand.h"

#include <stdlib.h>
#include <string.h>

#include "service/svc_authz.h"
#include "service/svc_convert.h"

/* Names a mask may hold that are not data fields: always returned. */
static const char *const system_names[] = {
    "id",        "model",     "group",     "version",        "syncId", "createdAt",
    "updatedAt", "createdBy", "updatedBy", "organizationId", "readAt",
};

typedef struct xnode {
    const char *field; /* the REFERENCE field in the parent (root: NULL) */
    const char *path;  /* dotted from the root (root: "") */
    const store_model *m;
    int parent; /* index into nodes (root: -1) */
    int depth;  /* segments of path */
    /* from the mask: the whole record, or only sel[0..n_sel) of its data */
    bool whole;
    const char **sel;
    size_t n_sel;
    bool returned;
} xnode;

struct svc_expand {
    xnode nodes[1 + SVC_EXPAND_MAX_PATHS]; /* [0] is the root */
    size_t n;
    bool has_mask;
    char **mask;
    size_t n_mask;
};

/* Per node while applying: the records read for it, sorted by id. */
typedef struct xread {
    store_record *recs;
    bool *visible;
    /* recs[j] as a message, made for the first record referring to it and
     * shared by the others (with its own expansions attached once) */
    Recordd__V1__Record **pb;
    size_t n;
} xread;

static bool is_system(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof system_names / sizeof system_names[0]; i++)
        if (strlen(system_names[i]) == n && strncmp(system_names[i], s, n) == 0)
            return true;
    return false;
}

/* The field of m named s[0..n), NULL when none. */
static const store_field *field_n(const store_model *m, const char *s, size_t n)
{
    for (size_t i = 0; i < m->n_fields; i++)
        if (strlen(m->fields[i].name) == n && strncmp(m->fields[i].name, s, n) == 0)
            return &m->fields[i];
    return NULL;
}

/* The child of node p through field s[0..n), made when missing. */
static rd_code child(rd_arena *a, const store_schema *sch, svc_expand *x, int p, const char *s,
                     size_t n, const char *path, size_t plen, const char *what, int *out,
                     rd_err *err)
{
    const xnode *pn = &x->nodes[p];
    const store_field *f = field_n(pn->m, s, n);
    if (f == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, what,
                       "%s path '%.200s': '%.*s' is not a field of model '%s'", what, path, (int)n,
                       s, pn->m->name);
    if (f->type != STORE_T_REFERENCE || f->references == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, what,
                       "%s path '%.200s': '%s' of model '%s' is not a REFERENCE field", what, path,
                       f->name, pn->m->name);
    for (size_t i = 1; i < x->n; i++)
        if (x->nodes[i].parent == p && strcmp(x->nodes[i].field, f->name) == 0) {
            *out = (int)i;
            return RD_OK;
        }
    if (pn->depth + 1 > SVC_EXPAND_MAX_DEPTH)
        return rd_errf(err, RD_VALIDATION_FAILED, what,
                       "%s path '%.200s' is too deep: at most %d levels", what, path,
                       SVC_EXPAND_MAX_DEPTH);
    if (x->n == 1 + SVC_EXPAND_MAX_PATHS)
        return rd_errf(err, RD_VALIDATION_FAILED, what,
                       "%s path '%.200s' is one too many: at most %d expanded paths (with the "
                       "prefixes they imply)",
                       what, path, SVC_EXPAND_MAX_PATHS);
    const store_model *target = store_schema_model(sch, f->references);
    if (target == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, what,
                       "%s path '%.200s': model '%s' that '%s' references is not in the schema",
                       what, path, f->references, f->name);
    xnode *c = &x->nodes[x->n];
    c->field = f->name;
    c->path = rd_arena_strndup(a, path, plen);
    c->m = target;
    c->parent = p;
    c->depth = pn->depth + 1;
    if (c->path == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    *out = (int)x->n++;
    return RD_OK;
}

/* Splits path into segments, checking none is empty; walks (making) the
 * nodes of its first `walk` segments (all when walk_all; else all but the
 * last, which *last gets). */
static rd_code walk_path(rd_arena *a, const store_schema *sch, svc_expand *x, const char *path,
                         bool walk_all, const char *what, int *node, const char **last,
                         size_t *last_n, rd_err *err)
{
    size_t len = strlen(path);
    if (len == 0)
        return rd_errf(err, RD_VALIDATION_FAILED, what, "%s holds an empty path", what);
    int depth = 1;
    for (size_t i = 0; i < len; i++)
        depth += path[i] == '.';
    if (depth - (walk_all ? 0 : 1) > SVC_EXPAND_MAX_DEPTH)
        return rd_errf(err, RD_VALIDATION_FAILED, what,
                       "%s path '%.200s' is too deep: at most %d levels", what, path,
                       SVC_EXPAND_MAX_DEPTH);
    int cur = 0;
    const char *s = path;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n == 0)
            return rd_errf(err, RD_VALIDATION_FAILED, what, "%s path '%.200s' has an empty segment",
                           what, path);
        if (dot == NULL && !walk_all) {
            *last = s;
            *last_n = n;
            break;
        }
        rd_code rc = child(a, sch, x, cur, s, n, path, (size_t)(s + n - path), what, &cur, err);
        if (rc != RD_OK)
            return rc;
        if (dot == NULL)
            break;
        s = dot + 1;
    }
    *node = cur;
    return RD_OK;
}

/* Whether mask path q selects node path p wholly: q == p or q is a
 * prefix of p ending at a segment. */
static bool covers(const char *q, const char *p)
{
    size_t n = strlen(q);
    return strncmp(q, p, n) == 0 && (p[n] == '\0' || p[n] == '.');
}

/* The mask's selection for every node. */
static rd_code select_nodes(rd_arena *a, svc_expand *x, rd_err *err)
{
    for (size_t i = 0; i < x->n; i++) {
        xnode *nd = &x->nodes[i];
        nd->whole = !x->has_mask;
        nd->returned = true;
        if (!x->has_mask)
            continue;
        size_t plen = strlen(nd->path);
        nd->sel = rd_arena_calloc(a, x->n_mask * sizeof *nd->sel);
        if (nd->sel == NULL)
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        for (size_t k = 0; k < x->n_mask; k++) {
            const char *q = x->mask[k];
            if (i > 0 && covers(q, nd->path)) {
                nd->whole = true;
                continue;
            }
            /* q goes into this node: the next segment is one of its fields */
            const char *rest = NULL;
            if (i == 0)
                rest = q;
            else if (strncmp(q, nd->path, plen) == 0 && q[plen] == '.')
                rest = q + plen + 1;
            if (rest == NULL)
                continue;
            size_t n = strcspn(rest, ".");
            const char *name = rd_arena_strndup(a, rest, n);
            if (name == NULL)
                return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            nd->sel[nd->n_sel++] = name;
        }
        nd->returned = i == 0 || nd->whole || nd->n_sel > 0;
    }
    return RD_OK;
}

/* The lowerCamelCase form of s[0..n) ("first_name" -> "firstName") into
 * out (cap bytes); false when it does not fit. */
static bool camel(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    bool up = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '_') {
            up = true;
            continue;
        }
        if (k + 1 >= cap)
            return false;
        out[k++] = up && s[i] >= 'a' && s[i] <= 'z' ? (char)(s[i] - 'a' + 'A') : s[i];
        up = false;
    }
    out[k] = '\0';
    return true;
}

/* A mask path as the proto3 JSON mapping of FieldMask delivers it: JSON
 * clients (grpcurl, buf curl, json_format) send "firstName" and the
 * decoder turns it into "first_name". Each segment that names no field of
 * its model but whose lowerCamelCase form does is taken in that form. The
 * path in the arena (path itself when nothing changed); NULL when out of
 * memory. */
static char *mask_path_fields(rd_arena *a, const store_schema *sch, const store_model *m,
                              char *path)
{
    if (strchr(path, '_') == NULL)
        return path;
    size_t len = strlen(path);
    char *out = rd_arena_alloc(a, len + 1), *w = out;
    if (out == NULL)
        return NULL;
    for (const char *s = path;;) {
        size_t n = strcspn(s, ".");
        char alt[72]; /* identifiers have at most 63 characters */
        const store_field *f = m != NULL ? field_n(m, s, n) : NULL;
        if (m != NULL && f == NULL && !is_system(s, n) && camel(s, n, alt, sizeof alt) &&
            ((f = field_n(m, alt, strlen(alt))) != NULL || is_system(alt, strlen(alt)))) {
            memcpy(w, alt, strlen(alt));
            w += strlen(alt);
        } else {
            memcpy(w, s, n);
            w += n;
        }
        m = f != NULL && f->type == STORE_T_REFERENCE ? store_schema_model(sch, f->references)
                                                      : NULL;
        if (s[n] == '\0')
            break;
        *w++ = '.';
        s += n + 1;
    }
    *w = '\0';
    return out;
}

rd_code svc_expand_parse(rd_arena *a, const store_schema *sch, const store_model *m,
                         char *const *expand, size_t n_expand,
                         const Google__Protobuf__FieldMask *mask, svc_expand **out, rd_err *err)
{
    *out = NULL;
    bool has_mask = mask != NULL && mask->n_paths > 0;
    if (n_expand == 0 && !has_mask)
        return RD_OK;
    svc_expand *x = rd_arena_calloc(a, sizeof *x);
    if (x == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    x->nodes[0] = (xnode){.path = "", .m = m, .parent = -1};
    x->n = 1;
    for (size_t i = 0; i < n_expand; i++) {
        int node;
        const char *last;
        size_t last_n;
        const char *p = expand[i] ? expand[i] : "";
        rd_code rc = walk_path(a, sch, x, p, true, "expand", &node, &last, &last_n, err);
        if (rc != RD_OK)
            return rc;
    }
    if (has_mask) {
        x->has_mask = true;
        x->mask = rd_arena_calloc(a, mask->n_paths * sizeof *x->mask);
        x->n_mask = mask->n_paths;
        if (x->mask == NULL)
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        for (size_t i = 0; i < mask->n_paths; i++) {
            int node;
            const char *last = NULL, *p = mask->paths[i] ? mask->paths[i] : "";
            if ((x->mask[i] = mask_path_fields(a, sch, m, (char *)p)) == NULL)
                return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            p = x->mask[i];
            size_t last_n = 0;
            rd_code rc = walk_path(a, sch, x, p, false, "readMask", &node, &last, &last_n, err);
            if (rc != RD_OK)
                return rc;
            if (!is_system(last, last_n) && field_n(x->nodes[node].m, last, last_n) == NULL)
                return rd_errf(err, RD_VALIDATION_FAILED, "readMask",
                               "readMask path '%.200s': '%.*s' is not a field of model '%s'", p,
                               (int)last_n, last, x->nodes[node].m->name);
        }
    }
    rd_code rc = select_nodes(a, x, err);
    if (rc != RD_OK)
        return rc;
    *out = x;
    return RD_OK;
}

size_t svc_expand_paths(const svc_expand *x)
{
    return x == NULL ? 0 : x->n - 1;
}

/* ---- applying ---------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_rec(const void *a, const void *b)
{
    return strcmp(((const store_record *)a)->id, ((const store_record *)b)->id);
}

/* The index of the record with id in r, -1 when absent. */
static long find(const xread *r, const char *id)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(r->recs[mid].id, id);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Keeps in a record's Struct only the members named in sel[0..n). */
static void mask_struct(Google__Protobuf__Struct *s, const char *const *sel, size_t n)
{
    if (s == NULL)
        return;
    size_t k = 0;
    for (size_t i = 0; i < s->n_fields; i++) {
        bool keep = false;
        for (size_t j = 0; j < n && !keep; j++)
            keep = strcmp(s->fields[i]->key, sel[j]) == 0;
        if (keep)
            s->fields[k++] = s->fields[i];
    }
    s->n_fields = k;
}

/* Reads node i's records: the distinct ids its parent's (visible) records
 * reference through its field. Leaves only what the caller may read of
 * each. */
static rd_code read_node(svc_call *call, store_conn *c, const svc_expand *x, size_t i,
                         const store_record *roots, size_t n_roots, xread *reads, rd_err *err)
{
    rd_arena *a = svc_call_arena(call);
    const xnode *nd = &x->nodes[i];
    const xread *pr = &reads[nd->parent];
    const store_record *src = nd->parent == 0 ? roots : pr->recs;
    size_t n_src = nd->parent == 0 ? n_roots : pr->n;
    const char **ids = rd_arena_alloc(a, (n_src ? n_src : 1) * sizeof *ids);
    if (ids == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    size_t k = 0;
    for (size_t j = 0; j < n_src; j++) {
        if (nd->parent != 0 && !pr->visible[j])
            continue;
        const json_t *v = json_object_get(src[j].data, nd->field);
        if (json_is_string(v))
            ids[k++] = json_string_value(v);
    }
    qsort(ids, k, sizeof *ids, cmp_str);
    size_t u = 0;
    for (size_t j = 0; j < k; j++)
        if (u == 0 || strcmp(ids[u - 1], ids[j]) != 0)
            ids[u++] = ids[j];
    xread *r = &reads[i];
    if (u == 0)
        return RD_OK;
    r->recs = calloc(u, sizeof *r->recs);
    r->visible = rd_arena_calloc(a, u * sizeof *r->visible);
    r->pb = rd_arena_calloc(a, u * sizeof *r->pb);
    if (r->recs == NULL || r->visible == NULL || r->pb == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    rd_code rc = store_get_many(c, svc_call_org(call), nd->m, ids, u, r->recs, &r->n, NULL, err);
    if (rc == RD_NOT_FOUND) { /* the model went since the schema snapshot: nothing to show */
        rd_err_clear(err);
        r->n = 0;
        return RD_OK;
    }
    if (rc != RD_OK)
        return rc;
    qsort(r->recs, r->n, sizeof *r->recs, cmp_rec);
    const auth_principal *p = svc_call_principal(call);
    const auth_caps *caps = p != NULL ? auth_principal_caps(p) : NULL;
    const char *last_group = NULL; /* records of one group share its scope */
    svc_read_scope scope = SVC_READ_NONE;
    for (size_t j = 0; j < r->n; j++) {
        store_record *rec = &r->recs[j];
        if (last_group == NULL || strcmp(last_group, rec->group) != 0) {
            scope = svc_authz_read_scope(caps, nd->m->name, rec->group);
            last_group = rec->group;
        }
        r->visible[j] = scope != SVC_READ_NONE;
        if (scope == SVC_READ_ALL)
            continue;
        const char *key;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(rec->data, tmp, key, v)
        {
            if (scope == SVC_READ_NONE ||
                !svc_authz_field_readable(caps, nd->m->name, rec->group, key))
                json_object_del(rec->data, key);
        }
    }
    return RD_OK;
}

/* Fills pb->expanded for a record of node i whose data is data. */
static rd_code attach(svc_call *call, const svc_expand *x, size_t i, const json_t *data,
                      Recordd__V1__Record *pb, const xread *reads, int64_t read_at, rd_err *err)
{
    rd_arena *a = svc_call_arena(call);
    for (size_t k = i + 1; k < x->n; k++) {
        const xnode *nd = &x->nodes[k];
        if (nd->parent != (int)i || !nd->returned)
            continue;
        const json_t *v = json_object_get(data, nd->field);
        if (!json_is_string(v))
            continue; /* no reference: no entry */
        if (pb->expanded == NULL) {
            pb->expanded = rd_arena_alloc(a, SVC_EXPAND_MAX_PATHS * sizeof *pb->expanded);
            if (pb->expanded == NULL)
                goto oom;
        }
        Recordd__V1__Record__ExpandedEntry *e = rd_arena_alloc(a, sizeof *e);
        Recordd__V1__ExpandedRecord *er = rd_arena_alloc(a, sizeof *er);
        if (e == NULL || er == NULL)
            goto oom;
        recordd__v1__record__expanded_entry__init(e);
        recordd__v1__expanded_record__init(er);
        e->key = (char *)nd->field;
        e->value = er;
        pb->expanded[pb->n_expanded++] = e;
        long at = find(&reads[k], json_string_value(v));
        if (at < 0 || !reads[k].visible[at]) {
            er->omitted = true; /* gone, or not the caller's to read */
            continue;
        }
        if (reads[k].pb[at] != NULL) { /* referred to before: the same message */
            er->record = reads[k].pb[at];
            continue;
        }
        const store_record *rec = &reads[k].recs[at];
        er->record = svc_record_to_pb(a, svc_call_org(call), nd->m->name, rec, read_at);
        if (er->record == NULL)
            goto oom;
        reads[k].pb[at] = er->record;
        if (!nd->whole)
            mask_struct(er->record->data, nd->sel, nd->n_sel);
        rd_code rc = attach(call, x, k, rec->data, er->record, reads, read_at, err);
        if (rc != RD_OK)
            return rc;
    }
    return RD_OK;
oom:
    return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
}

rd_code svc_expand_apply(svc_call *call, store_conn *c, const svc_expand *x,
                         const store_record *recs, Recordd__V1__Record **out, size_t n,
                         int64_t read_at, rd_err *err)
{
    if (x == NULL)
        return RD_OK;
    xread reads[1 + SVC_EXPAND_MAX_PATHS] = {{0}};
    rd_code rc = RD_OK;
    for (size_t i = 1; rc == RD_OK && i < x->n; i++)
        if (x->nodes[i].returned)
            rc = read_node(call, c, x, i, recs, n, reads, err);
    for (size_t j = 0; rc == RD_OK && j < n; j++) {
        rc = attach(call, x, 0, recs[j].data, out[j], reads, read_at, err);
        if (rc == RD_OK && !x->nodes[0].whole)
            mask_struct(out[j]->data, x->nodes[0].sel, x->nodes[0].n_sel);
    }
    for (size_t i = 1; i < x->n; i++) {
        for (size_t j = 0; j < reads[i].n; j++)
            store_record_clear(&reads[i].recs[j]);
        free(reads[i].recs);
    }
    return rc;
}
