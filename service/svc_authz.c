/* svc_authz: the per-RPC authorisation checks (svc_authz.h). Pure glue
 * between the handlers, the schema (writableBy) and auth_allows; the only
 * store access is reading a record's sync group. */
#include "service/svc_authz.h"

#include <string.h>

#include "service/svc_auth.h"

bool svc_authz_model_in_caps(const auth_caps *caps, auth_verb can, const char *model)
{
    for (size_t i = 0; caps != NULL && i < auth_caps_count(caps); i++) {
        const char *cm = auth_caps_model(caps, i);
        if ((auth_caps_verbs(caps, i) & can) != 0 &&
            (strcmp(cm, "*") == 0 || (model != NULL && strcmp(cm, model) == 0)))
            return true;
    }
    return false;
}

static bool cap_matches(const auth_caps *caps, size_t i, auth_verb can, const char *model,
                        const char *group)
{
    const char *cm = auth_caps_model(caps, i), *cg = auth_caps_group(caps, i);
    if (group == NULL || group[0] == '\0')
        group = SVC_DEFAULT_GROUP;
    return (auth_caps_verbs(caps, i) & can) != 0 &&
           (strcmp(cm, "*") == 0 || strcmp(cm, model) == 0) &&
           (strcmp(cg, "*") == 0 || strcmp(cg, group) == 0);
}

svc_read_scope svc_authz_read_scope(const auth_caps *caps, const char *model, const char *group)
{
    svc_read_scope scope = SVC_READ_NONE;
    for (size_t i = 0; caps != NULL && model != NULL && i < auth_caps_count(caps); i++) {
        if (!cap_matches(caps, i, AUTH_READ, model, group))
            continue;
        size_t n;
        if (auth_caps_fields(caps, i, &n) == NULL)
            return SVC_READ_ALL;
        scope = SVC_READ_FIELDS;
    }
    return scope;
}

bool svc_authz_field_readable(const auth_caps *caps, const char *model, const char *group,
                              const char *field)
{
    for (size_t i = 0; caps != NULL && model != NULL && i < auth_caps_count(caps); i++) {
        if (!cap_matches(caps, i, AUTH_READ, model, group))
            continue;
        size_t n;
        const char *const *fields = auth_caps_fields(caps, i, &n);
        if (fields == NULL)
            return true;
        for (size_t j = 0; j < n; j++)
            if (strcmp(fields[j], field) == 0)
                return true;
    }
    return false;
}

bool svc_authz_reads_whole_model(svc_call *call, const char *model)
{
    /* group "*" matches only capabilities whose group is "*" */
    const auth_principal *p = svc_call_principal(call);
    return p != NULL && svc_authz_read_scope(auth_principal_caps(p), model, "*") == SVC_READ_ALL;
}

bool svc_authz_writable_by(rd_arena *a, const store_model *m, const char *const *fields, size_t n,
                           const char *const *const **out)
{
    const char *const **lists = NULL;
    *out = NULL;
    for (size_t i = 0; m != NULL && i < n; i++) {
        const store_field *f = store_model_field(m, fields[i]);
        if (f == NULL || f->n_writable_by == 0)
            continue;
        if (lists == NULL) {
            lists = rd_arena_calloc(a, n * sizeof *lists);
            if (lists == NULL)
                return false;
        }
        const char **roles = rd_arena_calloc(a, (f->n_writable_by + 1) * sizeof *roles);
        if (roles == NULL)
            return false;
        for (size_t k = 0; k < f->n_writable_by; k++)
            roles[k] = f->writable_by[k];
        lists[i] = roles;
    }
    *out = lists;
    return true;
}

bool svc_authz_data_fields(rd_arena *a, const json_t *data, const char *const **out, size_t *n)
{
    const char *key;
    json_t *v;
    size_t i = 0;
    *out = NULL;
    *n = 0;
    if (!json_is_object(data) || json_object_size(data) == 0)
        return true;
    const char **names = rd_arena_calloc(a, json_object_size(data) * sizeof *names);
    if (names == NULL)
        return false;
    json_object_foreach((json_t *)data, key, v)
    {
        (void)v;
        names[i++] = key;
    }
    *out = names;
    *n = i;
    return true;
}

bool svc_authz_model_fields(rd_arena *a, const store_model *m, const char *const **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (m == NULL || m->n_fields == 0)
        return true;
    const char **names = rd_arena_calloc(a, m->n_fields * sizeof *names);
    if (names == NULL)
        return false;
    for (size_t i = 0; i < m->n_fields; i++)
        names[i] = m->fields[i].name;
    *out = names;
    *n = m->n_fields;
    return true;
}

rd_code svc_authz(svc_call *call, auth_verb can, const char *model, const char *group,
                  const char *const *fields, size_t n, const store_model *m, rd_err *err)
{
    const auth_principal *p = svc_call_principal(call);
    const char *const *const *writable_by = NULL;
    auth_required req = {0};
    if (p == NULL)
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "no credential");
    if (group == NULL || group[0] == '\0')
        group = SVC_DEFAULT_GROUP;
    if (!svc_authz_writable_by(svc_call_arena(call), m, fields, n, &writable_by))
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    rd_code code =
        auth_allows(p, can, model ? model : "", group, fields, n, writable_by, &req, err);
    if (code == RD_PERMISSION_DENIED)
        svc_call_set_required(call, &req);
    return code;
}

rd_code svc_authz_model(svc_call *call, auth_verb can, const char *model, rd_err *err)
{
    const auth_principal *p = svc_call_principal(call);
    if (p == NULL)
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "no credential");
    if (svc_authz_model_in_caps(auth_principal_caps(p), can, model))
        return RD_OK;
    auth_required req = {.can = can, .model = model ? model : "", .group = "*"};
    svc_call_set_required(call, &req);
    return rd_errf(err, RD_PERMISSION_DENIED, NULL, "no capability allows %s on %.64s",
                   auth_verb_str(can), model ? model : "");
}

rd_code svc_authz_groups(svc_call *call, auth_verb can, const char *model, bool *all,
                         const char ***groups, size_t *n, rd_err *err)
{
    *all = false;
    *groups = NULL;
    *n = 0;
    if (svc_authz_model(call, can, model, err) != RD_OK)
        return err->code;
    const auth_caps *caps = auth_principal_caps(svc_call_principal(call));
    size_t nc = auth_caps_count(caps);
    const char **g = rd_arena_calloc(svc_call_arena(call), (nc + 1) * sizeof *g);
    if (g == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    for (size_t i = 0; i < nc; i++) {
        const char *cm = auth_caps_model(caps, i), *cg = auth_caps_group(caps, i);
        if ((auth_caps_verbs(caps, i) & can) == 0 ||
            !(strcmp(cm, "*") == 0 || strcmp(cm, model) == 0))
            continue;
        if (strcmp(cg, "*") == 0) {
            *all = true;
            return RD_OK;
        }
        bool seen = false;
        for (size_t k = 0; k < *n && !seen; k++)
            seen = strcmp(g[k], cg) == 0;
        if (!seen)
            g[(*n)++] = cg;
    }
    *groups = g;
    return RD_OK;
}

rd_code svc_authz_read_groups(void *call, const char *model, bool *all, const char ***groups,
                              size_t *n, rd_err *err)
{
    return svc_authz_groups(call, AUTH_READ, model, all, groups, n, err);
}

rd_code svc_authz_any(svc_call *call, unsigned verbs, rd_err *err)
{
    const auth_principal *p = svc_call_principal(call);
    if (p == NULL)
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "no credential");
    const auth_caps *caps = auth_principal_caps(p);
    for (size_t i = 0; i < auth_caps_count(caps); i++)
        if ((auth_caps_verbs(caps, i) & verbs) != 0)
            return RD_OK;
    auth_verb lowest = (auth_verb)(verbs & -verbs);
    auth_required req = {.can = lowest, .model = "*", .group = "*"};
    svc_call_set_required(call, &req);
    return rd_errf(err, RD_PERMISSION_DENIED, NULL, "no capability allows %s",
                   auth_verb_str(lowest));
}
