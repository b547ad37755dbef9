/* Capabilities and principals: the caps list, its strict JSON form, the
 * authorisation decision for one request (verb, model, sync group, written
 * fields, per-field roles) and MintToken attenuation. Pure logic, no I/O. */
#include "auth/auth_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    auth_verb verb;
    const char *name;
} verbs[] = {
    {AUTH_READ, "read"},     {AUTH_CREATE, "create"}, {AUTH_UPDATE, "update"},
    {AUTH_DELETE, "delete"}, {AUTH_ADMIN, "admin"},
};
enum { N_VERBS = sizeof verbs / sizeof verbs[0] };

const char *auth_verb_str(auth_verb v)
{
    for (size_t i = 0; i < N_VERBS; i++)
        if (verbs[i].verb == v)
            return verbs[i].name;
    return "";
}

int auth_verb_parse(const char *s, auth_verb *out)
{
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < N_VERBS; i++) {
        if (strcmp(verbs[i].name, s) == 0) {
            *out = verbs[i].verb;
            return 0;
        }
    }
    return -1;
}

/* ---- the list ----------------------------------------------------------- */

auth_caps *auth_caps_new(void)
{
    return calloc(1, sizeof(auth_caps));
}

static void cap_release(auth__cap *c)
{
    free(c->model);
    free(c->group);
    for (size_t j = 0; j < c->n_fields; j++)
        free(c->fields[j]);
    free(c->fields);
}

void auth_caps_free(auth_caps *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        cap_release(&c->v[i]);
    free(c->v);
    free(c);
}

static int name_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strlen(s);
    return n > 0 && n <= AUTH__MAX_NAME;
}

rd_code auth_caps_add(auth_caps *c, unsigned verbset, const char *model, const char *group,
                      const char *const *fields, size_t n_fields, rd_err *err)
{
    auth__cap nc = {0};
    if (c == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "no capability list");
    if (verbset == 0 || (verbset & ~(unsigned)AUTH__ALL_VERBS) != 0)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "capability needs known verbs in can");
    if (!name_ok(model) || !name_ok(group))
        return rd_errf(err, RD_VALIDATION_FAILED, "caps",
                       "capability model and group must be 1..%d bytes", AUTH__MAX_NAME);
    if (c->n >= AUTH__MAX_CAPS)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "more than %d capabilities",
                       AUTH__MAX_CAPS);
    if (fields == NULL && n_fields > 0)
        return rd_errf(err, RD_INTERNAL, NULL, "field count without fields");
    if (n_fields > AUTH__MAX_FIELDS)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "more than %d fields in a capability",
                       AUTH__MAX_FIELDS);
    for (size_t j = 0; j < n_fields; j++) {
        if (!name_ok(fields[j]) || strcmp(fields[j], "*") == 0)
            return rd_errf(err, RD_VALIDATION_FAILED, "caps",
                           "capability fields must be names of 1..%d bytes (no \"*\")",
                           AUTH__MAX_NAME);
    }
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 4;
        auth__cap *v = realloc(c->v, ncap * sizeof *v);
        if (v == NULL)
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        c->v = v;
        c->cap = ncap;
    }
    nc.verbs = verbset;
    nc.model = strdup(model);
    nc.group = strdup(group);
    if (nc.model == NULL || nc.group == NULL)
        goto oom;
    if (fields != NULL) {
        nc.fields = calloc(n_fields ? n_fields : 1, sizeof(char *));
        if (nc.fields == NULL)
            goto oom;
        for (size_t j = 0; j < n_fields; j++) {
            nc.fields[j] = strdup(fields[j]);
            if (nc.fields[j] == NULL)
                goto oom;
            nc.n_fields = j + 1;
        }
    }
    c->v[c->n++] = nc;
    return RD_OK;
oom:
    cap_release(&nc);
    return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
}

auth_caps *auth_caps_clone(const auth_caps *c)
{
    auth_caps *out = auth_caps_new();
    if (out == NULL || c == NULL)
        return out;
    for (size_t i = 0; i < c->n; i++) {
        const auth__cap *k = &c->v[i];
        if (auth_caps_add(out, k->verbs, k->model, k->group, (const char *const *)k->fields,
                          k->n_fields, NULL) != RD_OK) {
            auth_caps_free(out);
            return NULL;
        }
    }
    return out;
}

size_t auth_caps_count(const auth_caps *c)
{
    return c ? c->n : 0;
}

unsigned auth_caps_verbs(const auth_caps *c, size_t i)
{
    return c && i < c->n ? c->v[i].verbs : 0;
}

const char *auth_caps_model(const auth_caps *c, size_t i)
{
    return c && i < c->n ? c->v[i].model : NULL;
}

const char *auth_caps_group(const auth_caps *c, size_t i)
{
    return c && i < c->n ? c->v[i].group : NULL;
}

const char *const *auth_caps_fields(const auth_caps *c, size_t i, size_t *n)
{
    *n = 0;
    if (c == NULL || i >= c->n || c->v[i].fields == NULL)
        return NULL;
    *n = c->v[i].n_fields;
    return (const char *const *)c->v[i].fields;
}

/* ---- JSON --------------------------------------------------------------- */

static rd_code cap_from_json(auth_caps *c, json_t *o, rd_err *err)
{
    const char *names[AUTH__MAX_FIELDS];
    const char *key;
    json_t *val;
    unsigned set = 0;
    if (!json_is_object(o))
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "each capability must be an object");
    json_object_foreach(o, key, val)
    {
        if (strcmp(key, "can") != 0 && strcmp(key, "model") != 0 && strcmp(key, "group") != 0 &&
            strcmp(key, "fields") != 0)
            return rd_errf(err, RD_VALIDATION_FAILED, "caps",
                           "capability members are can, model, group and fields");
    }
    json_t *can = json_object_get(o, "can");
    json_t *model = json_object_get(o, "model");
    json_t *group = json_object_get(o, "group");
    json_t *fields = json_object_get(o, "fields");
    if (!json_is_array(can) || json_array_size(can) == 0)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "capability can must be a verb list");
    size_t i;
    json_array_foreach(can, i, val)
    {
        auth_verb v;
        if (!json_is_string(val) || auth_verb_parse(json_string_value(val), &v) != 0)
            return rd_errf(err, RD_VALIDATION_FAILED, "caps",
                           "capability verbs are read, create, update, delete, admin");
        set |= (unsigned)v;
    }
    if (!json_is_string(model) || !json_is_string(group))
        return rd_errf(err, RD_VALIDATION_FAILED, "caps",
                       "capability model and group must be strings");
    if (fields == NULL)
        return auth_caps_add(c, set, json_string_value(model), json_string_value(group), NULL, 0,
                             err);
    if (!json_is_array(fields))
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "capability fields must be a list");
    size_t n = json_array_size(fields);
    if (n > AUTH__MAX_FIELDS)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "more than %d fields in a capability",
                       AUTH__MAX_FIELDS);
    json_array_foreach(fields, i, val)
    {
        if (!json_is_string(val))
            return rd_errf(err, RD_VALIDATION_FAILED, "caps", "capability fields are strings");
        names[i] = json_string_value(val);
    }
    return auth_caps_add(c, set, json_string_value(model), json_string_value(group), names, n, err);
}

rd_code auth__caps_from_json_value(const void *array, auth_caps **out, rd_err *err)
{
    json_t *a = (json_t *)array;
    rd_code rc;
    *out = NULL;
    if (!json_is_array(a))
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "caps must be a list");
    if (json_array_size(a) > AUTH__MAX_CAPS)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "more than %d capabilities",
                       AUTH__MAX_CAPS);
    auth_caps *c = auth_caps_new();
    if (c == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    size_t i;
    json_t *val;
    json_array_foreach(a, i, val)
    {
        rc = cap_from_json(c, val, err);
        if (rc != RD_OK) {
            auth_caps_free(c);
            return rc;
        }
    }
    *out = c;
    return RD_OK;
}

rd_code auth_caps_from_json(const char *json, size_t len, auth_caps **out, rd_err *err)
{
    json_error_t jerr;
    *out = NULL;
    if (json == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "caps must be a list");
    json_t *a = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (a == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "caps are not valid JSON");
    rd_code rc = auth__caps_from_json_value(a, out, err);
    json_decref(a);
    return rc;
}

void *auth__caps_to_json_value(const auth_caps *c)
{
    json_t *a = json_array();
    if (a == NULL)
        return NULL;
    for (size_t i = 0; c != NULL && i < c->n; i++) {
        const auth__cap *k = &c->v[i];
        json_t *o = json_object();
        json_t *can = json_array();
        if (o == NULL || can == NULL || json_array_append_new(a, o) != 0) {
            json_decref(o);
            json_decref(can);
            goto fail;
        }
        if (json_object_set_new(o, "can", can) != 0)
            goto fail;
        for (size_t v = 0; v < N_VERBS; v++)
            if ((k->verbs & verbs[v].verb) &&
                json_array_append_new(can, json_string(verbs[v].name)))
                goto fail;
        if (json_object_set_new(o, "model", json_string(k->model)) != 0 ||
            json_object_set_new(o, "group", json_string(k->group)) != 0)
            goto fail;
        if (k->fields != NULL) {
            json_t *f = json_array();
            if (f == NULL || json_object_set_new(o, "fields", f) != 0)
                goto fail;
            for (size_t j = 0; j < k->n_fields; j++)
                if (json_array_append_new(f, json_string(k->fields[j])) != 0)
                    goto fail;
        }
    }
    return a;
fail:
    json_decref(a);
    return NULL;
}

char *auth_caps_to_json(const auth_caps *c)
{
    json_t *a = auth__caps_to_json_value(c);
    if (a == NULL)
        return NULL;
    char *s = json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(a);
    return s;
}

/* ---- decisions ------------------------------------------------------------ */

static int single_verb(auth_verb v)
{
    return v != 0 && ((unsigned)v & ((unsigned)v - 1)) == 0 &&
           ((unsigned)v & ~(unsigned)AUTH__ALL_VERBS) == 0;
}

static int has_field(const auth__cap *k, const char *f)
{
    for (size_t j = 0; j < k->n_fields; j++)
        if (strcmp(k->fields[j], f) == 0)
            return 1;
    return 0;
}

static int name_matches(const char *granted, const char *wanted)
{
    return strcmp(granted, "*") == 0 || strcmp(granted, wanted) == 0;
}

static void set_required(auth_required *r, auth_verb can, const char *model, const char *group,
                         const char *field)
{
    if (r == NULL)
        return;
    r->can = can;
    r->model = model;
    r->group = group;
    r->field = field;
}

rd_code auth_caps_allows(const auth_caps *caps, const char *role, auth_verb can, const char *model,
                         const char *group, const char *const *fields, size_t n,
                         const char *const *const *writable_by, auth_required *required,
                         rd_err *err)
{
    set_required(required, 0, NULL, NULL, NULL);
    if (!single_verb(can) || model == NULL || group == NULL || (fields == NULL && n > 0))
        return rd_errf(err, RD_INTERNAL, NULL, "bad authorisation request");
    const char *verb = auth_verb_str(can);
    size_t matched = 0;
    int unrestricted = 0;
    for (size_t i = 0; caps != NULL && i < caps->n; i++) {
        const auth__cap *k = &caps->v[i];
        if ((k->verbs & (unsigned)can) && name_matches(k->model, model) &&
            name_matches(k->group, group)) {
            matched++;
            if (k->fields == NULL)
                unrestricted = 1;
        }
    }
    if (matched == 0) {
        set_required(required, can, model, group, NULL);
        return rd_errf(err, RD_PERMISSION_DENIED, NULL,
                       "missing capability: %s on model %s in sync group %s", verb, model, group);
    }
    if (can != AUTH_CREATE && can != AUTH_UPDATE)
        return RD_OK;
    if (!unrestricted) {
        for (size_t f = 0; f < n; f++) {
            int ok = 0;
            for (size_t i = 0; !ok && i < caps->n; i++) {
                const auth__cap *k = &caps->v[i];
                ok = (k->verbs & (unsigned)can) && name_matches(k->model, model) &&
                     name_matches(k->group, group) && has_field(k, fields[f]);
            }
            if (!ok) {
                set_required(required, can, model, group, fields[f]);
                return rd_errf(err, RD_PERMISSION_DENIED, fields[f],
                               "missing capability: %s of field %s on model %s in sync group %s",
                               verb, fields[f], model, group);
            }
        }
    }
    for (size_t f = 0; writable_by != NULL && f < n; f++) {
        const char *const *roles = writable_by[f];
        int ok = roles == NULL;
        for (size_t r = 0; !ok && roles[r] != NULL; r++)
            ok = role != NULL && strcmp(roles[r], role) == 0;
        if (!ok) {
            set_required(required, can, model, group, fields[f]);
            return rd_errf(err, RD_PERMISSION_DENIED, fields[f],
                           "field %s of model %s is not writable by this principal's role",
                           fields[f], model);
        }
    }
    return RD_OK;
}

rd_code auth_allows(const auth_principal *p, auth_verb can, const char *model, const char *group,
                    const char *const *fields, size_t n, const char *const *const *writable_by,
                    auth_required *required, rd_err *err)
{
    if (p == NULL) {
        set_required(required, can, model, group, NULL);
        return rd_errf(err, RD_PERMISSION_DENIED, NULL, "no principal");
    }
    return auth_caps_allows(p->caps, p->role, can, model, group, fields, n, writable_by, required,
                            err);
}

/* Literal coverage of one requested (verb, cap) by parent. */
static rd_code cover_one(const auth_caps *parent, auth_verb v, const auth__cap *r,
                         auth_required *required, rd_err *err)
{
    const char *verb = auth_verb_str(v);
    size_t matched = 0;
    int unrestricted = 0;
    for (size_t i = 0; parent != NULL && i < parent->n; i++) {
        const auth__cap *k = &parent->v[i];
        if ((k->verbs & (unsigned)v) && name_matches(k->model, r->model) &&
            name_matches(k->group, r->group)) {
            matched++;
            if (k->fields == NULL)
                unrestricted = 1;
        }
    }
    if (matched == 0) {
        set_required(required, v, r->model, r->group, NULL);
        return rd_errf(err, RD_PERMISSION_DENIED, NULL,
                       "the key lacks capability %s on model %s in sync group %s", verb, r->model,
                       r->group);
    }
    if (unrestricted)
        return RD_OK;
    if (r->fields == NULL) {
        set_required(required, v, r->model, r->group, NULL);
        return rd_errf(err, RD_PERMISSION_DENIED, NULL,
                       "the key allows %s on model %s in sync group %s only for listed fields; "
                       "the requested capability must list fields",
                       verb, r->model, r->group);
    }
    for (size_t f = 0; f < r->n_fields; f++) {
        int ok = 0;
        for (size_t i = 0; !ok && i < parent->n; i++) {
            const auth__cap *k = &parent->v[i];
            ok = (k->verbs & (unsigned)v) && name_matches(k->model, r->model) &&
                 name_matches(k->group, r->group) && has_field(k, r->fields[f]);
        }
        if (!ok) {
            set_required(required, v, r->model, r->group, r->fields[f]);
            return rd_errf(err, RD_PERMISSION_DENIED, r->fields[f],
                           "the key lacks capability %s of field %s on model %s in sync group %s",
                           verb, r->fields[f], r->model, r->group);
        }
    }
    return RD_OK;
}

rd_code auth_caps_covers(const auth_caps *parent, const auth_caps *requested,
                         auth_required *required, rd_err *err)
{
    set_required(required, 0, NULL, NULL, NULL);
    for (size_t i = 0; requested != NULL && i < requested->n; i++) {
        const auth__cap *r = &requested->v[i];
        for (size_t v = 0; v < N_VERBS; v++) {
            if (!(r->verbs & verbs[v].verb))
                continue;
            rd_code rc = cover_one(parent, verbs[v].verb, r, required, err);
            if (rc != RD_OK)
                return rc;
        }
    }
    return RD_OK;
}

rd_code auth_mint_check(const auth_principal *caller, const auth_caps *requested,
                        int64_t requested_ttl_s, int64_t *issued_ttl_s, auth_required *required,
                        rd_err *err)
{
    set_required(required, 0, NULL, NULL, NULL);
    if (caller == NULL || caller->kind != AUTH_KIND_API_KEY)
        return rd_errf(err, RD_PERMISSION_DENIED, NULL, "only API keys can mint tokens");
    if (requested == NULL || requested->n == 0)
        return rd_errf(err, RD_VALIDATION_FAILED, "caps", "at least one capability is required");
    if (requested_ttl_s < 0)
        return rd_errf(err, RD_VALIDATION_FAILED, "ttl", "ttl must not be negative");
    rd_code rc = auth_caps_covers(caller->caps, requested, required, err);
    if (rc != RD_OK)
        return rc;
    int64_t ttl = requested_ttl_s == 0 ? AUTH_MINT_DEFAULT_TTL_S : requested_ttl_s;
    if (ttl > AUTH_MINT_MAX_TTL_S)
        ttl = AUTH_MINT_MAX_TTL_S;
    if (issued_ttl_s != NULL)
        *issued_ttl_s = ttl;
    return RD_OK;
}

/* ---- principals ----------------------------------------------------------- */

rd_code auth__principal_new(auth_kind kind, const char *id, const char *org, const char *role,
                            const char *jti, int64_t expires_us, auth_caps *caps,
                            auth_principal **out, rd_err *err)
{
    *out = NULL;
    auth_principal *p = calloc(1, sizeof *p);
    if (p == NULL)
        goto oom;
    p->kind = kind;
    p->refs = 1;
    p->expires_us = expires_us;
    p->caps = caps;
    caps = NULL;
    p->id = strdup(id);
    p->org = strdup(org);
    if (p->id == NULL || p->org == NULL)
        goto oom;
    if (role != NULL) {
        p->role = strdup(role);
        if (p->role == NULL)
            goto oom;
    }
    if (jti != NULL) {
        p->jti = strdup(jti);
        if (p->jti == NULL)
            goto oom;
    }
    *out = p;
    return RD_OK;
oom:
    auth_caps_free(caps);
    auth_principal_free(p);
    return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
}

rd_code auth_principal_new_api_key(const char *key_id, const char *org, const char *role,
                                   const auth_caps *caps, auth_principal **out, rd_err *err)
{
    *out = NULL;
    if (key_id == NULL || key_id[0] == '\0' || org == NULL || org[0] == '\0')
        return rd_errf(err, RD_INTERNAL, NULL, "API key principal needs an id and an org");
    auth_caps *copy = auth_caps_clone(caps);
    if (copy == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    return auth__principal_new(AUTH_KIND_API_KEY, key_id, org, role, NULL, 0, copy, out, err);
}

bool auth_client_id_ok(const char *client_id)
{
    size_t n = client_id != NULL ? strlen(client_id) : 0;
    if (n == 0 || n > AUTH_CLIENT_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (client_id[i] <= ' ' || client_id[i] > '~')
            return false;
    return true;
}

rd_code auth_principal_bind(auth_principal *p, const char *client_id, rd_err *err)
{
    if (!auth_client_id_ok(client_id))
        return rd_errf(err, RD_VALIDATION_FAILED, "client_id",
                       "a client identity is 1 to %d printable ASCII characters without spaces "
                       "(a URI or DNS name of the client certificate)",
                       AUTH_CLIENT_ID_MAX);
    char *copy = strdup(client_id);
    if (copy == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    free(p->client_id);
    p->client_id = copy;
    return RD_OK;
}

auth_principal *auth_principal_ref(auth_principal *p)
{
    if (p != NULL)
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
    return p;
}

void auth_principal_free(auth_principal *p)
{
    if (p == NULL || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    free(p->id);
    free(p->org);
    free(p->role);
    free(p->jti);
    free(p->client_id);
    auth_caps_free(p->caps);
    free(p);
}

auth_kind auth_principal_kind(const auth_principal *p)
{
    return p->kind;
}

const char *auth_principal_id(const auth_principal *p)
{
    return p->id;
}

const char *auth_principal_org(const auth_principal *p)
{
    return p->org;
}

const char *auth_principal_role(const auth_principal *p)
{
    return p->role;
}

const char *auth_principal_client_id(const auth_principal *p)
{
    return p->client_id;
}

const char *auth_principal_jti(const auth_principal *p)
{
    return p->jti;
}

int64_t auth_principal_expires_us(const auth_principal *p)
{
    return p->expires_us;
}

const auth_caps *auth_principal_caps(const auth_principal *p)
{
    return p->caps;
}
