/* schema.c: schema definitions (reference counted, immutable once
 * published), their validation, their canonical JSON form (what _rd_schema
 * stores), and the per-organisation map of published snapshots that readers
 * and the writer share. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/store_int.h"

static const char *const type_names[] = {
    NULL, "STRING", "INTEGER", "NUMBER", "BOOLEAN", "TIMESTAMP", "JSON", "ENUM", "REFERENCE",
};
static const char *const on_delete_names[] = {NULL, "RESTRICT", "CASCADE", "SET_NULL"};

const char *store_type_name(store_type t)
{
    if (t < STORE_T_STRING || t > STORE_T_REFERENCE)
        return "UNKNOWN";
    return type_names[t];
}

const char *store_on_delete_name(store_on_delete d)
{
    return d >= STORE_DEL_RESTRICT && d <= STORE_DEL_SET_NULL ? on_delete_names[d] : "RESTRICT";
}

static int type_from_name(const char *name)
{
    for (int t = STORE_T_STRING; t <= STORE_T_REFERENCE; t++)
        if (name != NULL && strcmp(type_names[t], name) == 0)
            return t;
    return 0;
}

/* ---- objects --------------------------------------------------------------- */

store_schema *store_schema_new(void)
{
    store_schema *s = calloc(1, sizeof *s);
    if (s != NULL)
        s->refs_ = 1;
    return s;
}

store_schema *store_schema_ref(store_schema *s)
{
    if (s != NULL)
        __atomic_add_fetch(&s->refs_, 1, __ATOMIC_RELAXED);
    return s;
}

static void free_strings(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_model(store_model *m)
{
    free(m->name);
    for (size_t j = 0; m->fields != NULL && j < m->n_fields; j++) {
        store_field *f = &m->fields[j];
        free(f->name);
        json_decref(f->default_value);
        free_strings(f->enum_values, f->n_enum_values);
        free_strings(f->writable_by, f->n_writable_by);
        free(f->references);
    }
    free(m->fields);
    for (size_t j = 0; m->unique_together != NULL && j < m->n_unique_together; j++)
        free_strings(m->unique_together[j].fields, m->unique_together[j].n_fields);
    free(m->unique_together);
}

void store_schema_release(store_schema *s)
{
    if (s == NULL)
        return;
    if (__atomic_sub_fetch(&s->refs_, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; s->models != NULL && i < s->n_models; i++)
        free_model(&s->models[i]);
    free(s->models);
    free(s);
}

const store_model *store_schema_model(const store_schema *s, const char *name)
{
    if (s == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < s->n_models; i++)
        if (s->models[i].name != NULL && strcmp(s->models[i].name, name) == 0)
            return &s->models[i];
    return NULL;
}

const store_field *store_model_field(const store_model *m, const char *name)
{
    if (m == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < m->n_fields; i++)
        if (m->fields[i].name != NULL && strcmp(m->fields[i].name, name) == 0)
            return &m->fields[i];
    return NULL;
}

/* ---- validation -------------------------------------------------------------- */

#define IDENT_RULE "a letter, then letters, digits or _, at most 63 characters"

static rd_code check_name(const char *name, const char *path, rd_err *err)
{
    if (name == NULL || name[0] == '\0')
        return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: a name is required", path);
    if (!store_ident_valid(name))
        return rd_errf(err, RD_VALIDATION_FAILED, path,
                       "%s: '%.64s' is not a valid identifier (" IDENT_RULE ")", path, name);
    return RD_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first value of list[0..n) that occurs twice, or NULL: sorted copy,
 * O(n log n) (a 60,000-value enum once took 13 s pairwise). *oom is set
 * when the copy cannot be made. */
static const char *first_duplicate(char *const *list, size_t n, bool *oom)
{
    const char *dup = NULL;
    if (n < 2)
        return NULL;
    const char **sorted = malloc(n * sizeof *sorted);
    if (sorted == NULL) {
        *oom = true;
        return NULL;
    }
    memcpy(sorted, list, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    for (size_t i = 1; i < n && dup == NULL; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            dup = sorted[i];
    free(sorted);
    return dup;
}

/* Checks the constraints of one field; path is "models[i].fields[j]". */
static rd_code check_field(const store_field *f, const char *path, rd_err *err)
{
    char p[160];
    bool numeric = f->type == STORE_T_INTEGER || f->type == STORE_T_NUMBER;
    snprintf(p, sizeof p, "%s.type", path);
    if (f->type < STORE_T_STRING || f->type > STORE_T_REFERENCE)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: type is missing or unknown", p);
    snprintf(p, sizeof p, "%s.enumValues", path);
    if (f->type == STORE_T_ENUM && (f->n_enum_values == 0 || f->enum_values == NULL))
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: an ENUM field needs at least one value",
                       p);
    if (f->type != STORE_T_ENUM && f->n_enum_values > 0)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: only ENUM fields take enum values", p);
    if (f->n_enum_values > STORE_MAX_ENUM_VALUES)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: an ENUM field has at most %d values", p,
                       STORE_MAX_ENUM_VALUES);
    for (size_t k = 0; k < f->n_enum_values; k++) {
        const char *v = f->enum_values[k];
        if (v == NULL || v[0] == '\0')
            return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: enum values may not be empty", p);
    }
    bool oom = false;
    const char *dup = first_duplicate(f->enum_values, f->n_enum_values, &oom);
    if (oom)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    if (dup != NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: duplicate enum value '%.64s'", p, dup);
    snprintf(p, sizeof p, "%s.maxLength", path);
    if (f->max_length > 0 && f->type != STORE_T_STRING)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: only STRING fields take maxLength", p);
    snprintf(p, sizeof p, "%s.%s", path, f->has_min ? "min" : "max");
    if ((f->has_min || f->has_max) && !numeric)
        return rd_errf(err, RD_VALIDATION_FAILED, p,
                       "%s: only INTEGER and NUMBER fields take min and max", p);
    if ((f->has_min && !isfinite(f->min)) || (f->has_max && !isfinite(f->max)))
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: must be a finite number", p);
    snprintf(p, sizeof p, "%s.min", path);
    if (f->has_min && f->has_max && f->min > f->max)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: min %.15g is greater than max %.15g", p,
                       f->min, f->max);
    snprintf(p, sizeof p, "%s.writableBy", path);
    if (f->n_writable_by > STORE_MAX_WRITABLE_BY)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: a field lists at most %d roles", p,
                       STORE_MAX_WRITABLE_BY);
    for (size_t k = 0; k < f->n_writable_by; k++)
        if (f->writable_by == NULL || f->writable_by[k] == NULL || f->writable_by[k][0] == '\0')
            return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: roles may not be empty", p);
    snprintf(p, sizeof p, "%s.references", path);
    if (f->type == STORE_T_REFERENCE && (f->references == NULL || f->references[0] == '\0'))
        return rd_errf(err, RD_VALIDATION_FAILED, p,
                       "%s: a REFERENCE field names the model it points at", p);
    if (f->type != STORE_T_REFERENCE && f->references != NULL && f->references[0] != '\0')
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: only REFERENCE fields take references",
                       p);
    snprintf(p, sizeof p, "%s.onDelete", path);
    if (f->on_delete != 0 && f->type != STORE_T_REFERENCE)
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: only REFERENCE fields take onDelete", p);
    if (f->on_delete != 0 &&
        (f->on_delete < STORE_DEL_RESTRICT || f->on_delete > STORE_DEL_SET_NULL))
        return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: unknown value %d", p, (int)f->on_delete);
    if (f->on_delete == STORE_DEL_SET_NULL && f->required)
        return rd_errf(err, RD_VALIDATION_FAILED, p,
                       "%s: SET_NULL cannot clear a required field; make it optional or use "
                       "RESTRICT or CASCADE",
                       p);
    snprintf(p, sizeof p, "%s.defaultValue", path);
    if (f->default_value != NULL && !json_is_null(f->default_value)) {
        rd_err inner;
        rd_err_clear(&inner);
        if (store_check_value(f, f->default_value, &inner) != RD_OK)
            return rd_errf(err, RD_VALIDATION_FAILED, p, "%s: invalid default: %s", p, inner.msg);
    }
    return RD_OK;
}

/* Whether two uniqueTogether entries (each without repeats, at most
 * STORE_MAX_UNIQUE_FIELDS) name the same fields. */
static bool same_field_set(const store_unique *a, const store_unique *b)
{
    if (a->n_fields != b->n_fields)
        return false;
    for (size_t i = 0; i < a->n_fields; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n_fields && !found; j++)
            found = strcmp(a->fields[i], b->fields[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static rd_code check_model(const store_model *m, size_t i, rd_err *err)
{
    char path[128];
    snprintf(path, sizeof path, "models[%zu].fields", i);
    if (m->n_fields > STORE_MAX_FIELDS)
        return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: a model has at most %d fields", path,
                       STORE_MAX_FIELDS);
    if (m->n_fields > 0 && m->fields == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: fields are missing", path);
    for (size_t j = 0; j < m->n_fields; j++) {
        const store_field *f = &m->fields[j];
        snprintf(path, sizeof path, "models[%zu].fields[%zu].name", i, j);
        if (check_name(f->name, path, err) != RD_OK)
            return err->code;
        if (store_is_system_field(f->name))
            return rd_errf(err, RD_VALIDATION_FAILED, path,
                           "%s: '%s' is a system field name and cannot be used", path, f->name);
        for (size_t k = 0; k < j; k++)
            if (strcasecmp(m->fields[k].name, f->name) == 0)
                return rd_errf(err, RD_VALIDATION_FAILED, path,
                               "%s: duplicate field name '%s' (names are case-insensitive)", path,
                               f->name);
        snprintf(path, sizeof path, "models[%zu].fields[%zu]", i, j);
        if (check_field(f, path, err) != RD_OK)
            return err->code;
    }
    if (m->n_unique_together > STORE_MAX_UNIQUE_TOGETHER) {
        snprintf(path, sizeof path, "models[%zu].uniqueTogether", i);
        return rd_errf(err, RD_VALIDATION_FAILED, path,
                       "%s: a model has at most %d uniqueTogether entries", path,
                       STORE_MAX_UNIQUE_TOGETHER);
    }
    for (size_t k = 0; k < m->n_unique_together; k++) {
        const store_unique *u = &m->unique_together[k];
        snprintf(path, sizeof path, "models[%zu].uniqueTogether[%zu]", i, k);
        if (u->n_fields == 0 || u->fields == NULL)
            return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: names no fields", path);
        if (u->n_fields > STORE_MAX_UNIQUE_FIELDS)
            return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: names at most %d fields", path,
                           STORE_MAX_UNIQUE_FIELDS);
        for (size_t q = 0; q < u->n_fields; q++) {
            if (store_model_field(m, u->fields[q]) == NULL)
                return rd_errf(err, RD_VALIDATION_FAILED, path,
                               "%s: '%.64s' is not a field of model %s", path,
                               u->fields[q] ? u->fields[q] : "", m->name);
            for (size_t r = 0; r < q; r++)
                if (strcmp(u->fields[r], u->fields[q]) == 0)
                    return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: '%s' is named twice", path,
                                   u->fields[q]);
        }
        /* the same set of fields twice (in any order) is one constraint */
        for (size_t e = 0; e < k; e++)
            if (same_field_set(&m->unique_together[e], u))
                return rd_errf(err, RD_VALIDATION_FAILED, path,
                               "%s: the same fields as uniqueTogether[%zu]", path, e);
    }
    return RD_OK;
}

rd_code store_schema_validate(const store_schema *s, rd_err *err)
{
    char path[128];
    if (s == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "schema", "schema is required");
    if (s->n_models > STORE_MAX_MODELS)
        return rd_errf(err, RD_VALIDATION_FAILED, "models", "a schema has at most %d models",
                       STORE_MAX_MODELS);
    if (s->n_models > 0 && s->models == NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "models", "models are missing");
    for (size_t i = 0; i < s->n_models; i++) {
        const store_model *m = &s->models[i];
        snprintf(path, sizeof path, "models[%zu].name", i);
        if (check_name(m->name, path, err) != RD_OK)
            return err->code;
        for (size_t k = 0; k < i; k++)
            if (strcasecmp(s->models[k].name, m->name) == 0)
                return rd_errf(err, RD_VALIDATION_FAILED, path,
                               "%s: duplicate model name '%s' (names are case-insensitive)", path,
                               m->name);
        if (check_model(m, i, err) != RD_OK)
            return err->code;
    }
    /* references point at a model of the same schema (names exactly) */
    for (size_t i = 0; i < s->n_models; i++)
        for (size_t j = 0; j < s->models[i].n_fields; j++) {
            const store_field *f = &s->models[i].fields[j];
            if (f->type != STORE_T_REFERENCE || store_schema_model(s, f->references) != NULL)
                continue;
            snprintf(path, sizeof path, "models[%zu].fields[%zu].references", i, j);
            return rd_errf(err, RD_VALIDATION_FAILED, path,
                           "%s: model '%.64s' is not in the schema (a reference points at a "
                           "model of the same organisation)",
                           path, f->references);
        }
    return RD_OK;
}

/* ---- canonical JSON ---------------------------------------------------------- */

static json_t *strings_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++)
        if (json_array_append_new(a, json_string(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* Sets key to value (a new reference) and records a failure in *ok. */
static void put(json_t *obj, const char *key, json_t *value, bool *ok)
{
    if (value == NULL || json_object_set_new(obj, key, value) != 0)
        *ok = false;
}

json_t *store_field_to_json(const store_field *f)
{
    json_t *o = json_object();
    bool ok = o != NULL;
    if (!ok)
        return NULL;
    put(o, "name", json_string(f->name), &ok);
    put(o, "type", json_string(store_type_name(f->type)), &ok);
    if (f->required)
        put(o, "required", json_true(), &ok);
    if (f->max_length > 0)
        put(o, "maxLength", json_integer(f->max_length), &ok);
    if (f->has_min)
        put(o, "min", json_real(f->min), &ok);
    if (f->has_max)
        put(o, "max", json_real(f->max), &ok);
    if (f->unique)
        put(o, "unique", json_true(), &ok);
    if (f->default_value != NULL && !json_is_null(f->default_value)) {
        json_t *d = store_normalize(f, f->default_value);
        put(o, "default", d ? d : json_deep_copy(f->default_value), &ok);
    }
    if (f->n_enum_values > 0)
        put(o, "enumValues", strings_json(f->enum_values, f->n_enum_values), &ok);
    if (f->immutable)
        put(o, "immutable", json_true(), &ok);
    if (f->n_writable_by > 0)
        put(o, "writableBy", strings_json(f->writable_by, f->n_writable_by), &ok);
    if (f->type == STORE_T_REFERENCE) {
        put(o, "references", json_string(f->references ? f->references : ""), &ok);
        put(o, "onDelete", json_string(store_on_delete_name(f->on_delete)), &ok);
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *model_to_json(const store_model *m)
{
    json_t *o = json_object(), *fields = json_array(), *uts = json_array();
    bool ok = o != NULL && fields != NULL && uts != NULL;
    for (size_t j = 0; ok && j < m->n_fields; j++)
        if (json_array_append_new(fields, store_field_to_json(&m->fields[j])) != 0)
            ok = false;
    for (size_t j = 0; ok && j < m->n_unique_together; j++)
        if (json_array_append_new(uts, strings_json(m->unique_together[j].fields,
                                                    m->unique_together[j].n_fields)) != 0)
            ok = false;
    if (!ok) {
        json_decref(o);
        json_decref(fields);
        json_decref(uts);
        return NULL;
    }
    put(o, "name", json_string(m->name), &ok);
    put(o, "fields", fields, &ok);
    if (m->n_unique_together > 0)
        put(o, "uniqueTogether", uts, &ok);
    else
        json_decref(uts);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *store_schema_to_json(const store_schema *s)
{
    json_t *models = json_array();
    for (size_t i = 0; models != NULL && i < s->n_models; i++)
        if (json_array_append_new(models, model_to_json(&s->models[i])) != 0) {
            json_decref(models);
            return NULL;
        }
    if (models == NULL)
        return NULL;
    return json_pack("{s:o}", "models", models);
}

/* Copies a JSON array of strings into a malloc'd array; false when v is
 * not such an array or out of memory. */
static bool strings_from_json(const json_t *v, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (v == NULL)
        return true;
    if (!json_is_array(v))
        return false;
    size_t len = json_array_size(v);
    char **a = calloc(len + 1, sizeof *a);
    if (a == NULL)
        return false;
    *out = a;
    for (size_t i = 0; i < len; i++) {
        const char *str = json_string_value(json_array_get(v, i));
        a[i] = str ? strdup(str) : NULL;
        if (a[i] == NULL)
            return false;
        *n = i + 1;
    }
    return true;
}

static bool field_from_json(const json_t *o, store_field *f)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const json_t *v;
    if (!json_is_object(o) || name == NULL)
        return false;
    f->name = strdup(name);
    f->type = (store_type)type_from_name(json_string_value(json_object_get(o, "type")));
    f->required = json_is_true(json_object_get(o, "required"));
    f->unique = json_is_true(json_object_get(o, "unique"));
    f->immutable = json_is_true(json_object_get(o, "immutable"));
    v = json_object_get(o, "maxLength");
    if (v != NULL)
        f->max_length = (uint32_t)json_integer_value(v);
    v = json_object_get(o, "min");
    if (v != NULL) {
        f->has_min = true;
        f->min = json_number_value(v);
    }
    v = json_object_get(o, "max");
    if (v != NULL) {
        f->has_max = true;
        f->max = json_number_value(v);
    }
    v = json_object_get(o, "default");
    if (v != NULL)
        f->default_value = json_deep_copy(v);
    const char *refs = json_string_value(json_object_get(o, "references"));
    if (refs != NULL && (f->references = strdup(refs)) == NULL)
        return false;
    const char *del = json_string_value(json_object_get(o, "onDelete"));
    for (int k = STORE_DEL_RESTRICT; del != NULL && k <= STORE_DEL_SET_NULL; k++)
        if (strcmp(on_delete_names[k], del) == 0)
            f->on_delete = (store_on_delete)k;
    if (!strings_from_json(json_object_get(o, "enumValues"), &f->enum_values, &f->n_enum_values) ||
        !strings_from_json(json_object_get(o, "writableBy"), &f->writable_by, &f->n_writable_by))
        return false;
    return f->name != NULL && f->type != 0 && (v == NULL || f->default_value != NULL);
}

static bool model_from_json(const json_t *o, store_model *m)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const json_t *fields = json_object_get(o, "fields");
    const json_t *uts = json_object_get(o, "uniqueTogether");
    if (name == NULL || !json_is_array(fields) || (uts != NULL && !json_is_array(uts)))
        return false;
    m->name = strdup(name);
    m->fields = calloc(json_array_size(fields) + 1, sizeof *m->fields);
    m->unique_together = calloc(json_array_size(uts) + 1, sizeof *m->unique_together);
    if (m->name == NULL || m->fields == NULL || m->unique_together == NULL)
        return false;
    for (size_t j = 0; j < json_array_size(fields); j++) {
        m->n_fields = j + 1;
        if (!field_from_json(json_array_get(fields, j), &m->fields[j]))
            return false;
    }
    for (size_t j = 0; j < json_array_size(uts); j++) {
        m->n_unique_together = j + 1;
        store_unique *u = &m->unique_together[j];
        if (!strings_from_json(json_array_get(uts, j), &u->fields, &u->n_fields) ||
            u->fields == NULL)
            return false;
    }
    return true;
}

store_schema *store_schema_from_json(const json_t *doc, int64_t revision)
{
    const json_t *models = json_object_get(doc, "models");
    store_schema *s = store_schema_new();
    if (s == NULL || !json_is_array(models))
        goto fail;
    s->revision = revision;
    s->models = calloc(json_array_size(models) + 1, sizeof *s->models);
    if (s->models == NULL)
        goto fail;
    for (size_t i = 0; i < json_array_size(models); i++) {
        s->n_models = i + 1;
        const json_t *m = json_array_get(models, i);
        if (!json_is_object(m) || !model_from_json(m, &s->models[i]))
            goto fail;
    }
    return s;
fail:
    store_schema_release(s);
    return NULL;
}

/* ---- published snapshots -------------------------------------------------------
 * A sorted array of (org, schema) under s->smu; a reader takes a reference
 * under the lock and uses the snapshot without it. */

/* Index of org in the sorted array, or where it would go (*found = false). */
static size_t snap_find(const store *s, const char *org, bool *found)
{
    size_t lo = 0, hi = s->n_snaps;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->snaps[mid].org, org);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void store_snap_publish(store *s, const char *org, store_schema *schema)
{
    store_schema *old = NULL;
    bool found;
    pthread_mutex_lock(&s->smu);
    size_t i = snap_find(s, org, &found);
    if (found && s->snaps[i].schema->revision > schema->revision) {
        old = schema; /* a newer one is out already (another process's, pg_listen.c) */
        goto done;
    }
    if (found) {
        old = s->snaps[i].schema;
        s->snaps[i].schema = schema;
        goto done;
    }
    char *copy = strdup(org);
    if (copy == NULL) {
        old = schema; /* out of memory: the snapshot stays unpublished */
        goto done;
    }
    if (s->n_snaps == s->cap_snaps) {
        size_t cap = s->cap_snaps ? s->cap_snaps * 2 : 16;
        store_snap *n = realloc(s->snaps, cap * sizeof *n);
        if (n == NULL) {
            free(copy);
            old = schema;
            goto done;
        }
        s->snaps = n;
        s->cap_snaps = cap;
    }
    memmove(&s->snaps[i + 1], &s->snaps[i], (s->n_snaps - i) * sizeof *s->snaps);
    s->snaps[i].org = copy;
    s->snaps[i].schema = schema;
    s->n_snaps++;
done:
    pthread_mutex_unlock(&s->smu);
    store_schema_release(old);
}

store_schema *store_schema_get(store *s, const char *org)
{
    store_schema *out;
    bool found = false;
    pthread_mutex_lock(&s->smu);
    size_t i = org != NULL ? snap_find(s, org, &found) : 0;
    out = store_schema_ref(found ? s->snaps[i].schema : s->empty);
    pthread_mutex_unlock(&s->smu);
    return out;
}

void store_snaps_free(store *s)
{
    for (size_t i = 0; i < s->n_snaps; i++) {
        free(s->snaps[i].org);
        store_schema_release(s->snaps[i].schema);
    }
    free(s->snaps);
    s->snaps = NULL;
    s->n_snaps = s->cap_snaps = 0;
}

rd_code store_schema_reload(store *s, store_stmt_cache *c, const char *org, rd_err *err)
{
    static const char one_sql[] = "SELECT org, revision, doc FROM _rd_schema WHERE org = ?1"
                                  " ORDER BY revision DESC LIMIT 1";
    static const char all_sql[] = "SELECT org, revision, doc FROM _rd_schema AS a"
                                  " WHERE revision = (SELECT max(revision) FROM _rd_schema"
                                  " WHERE org = a.org)";
    store_dbst *st = NULL;
    rd_code code = RD_OK;
    int rc = store_stmt_get(c, org != NULL ? one_sql : all_sql, &st);
    if (rc == STORE_DB_OK && org != NULL)
        rc = store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC);
    while (rc == STORE_DB_OK || rc == STORE_DB_ROW) {
        rc = store_db_step(st);
        if (rc != STORE_DB_ROW)
            break;
        const char *name = (const char *)store_db_column_text(st, 0);
        int64_t revision = store_db_column_int64(st, 1);
        store_schema *now = store_schema_get(s, name);
        bool newer = revision > now->revision;
        store_schema_release(now);
        if (!newer)
            continue;
        const char *text = (const char *)store_db_column_text(st, 2);
        json_t *doc = text != NULL ? json_loads(text, 0, NULL) : NULL;
        store_schema *sch = doc != NULL ? store_schema_from_json(doc, revision) : NULL;
        json_decref(doc);
        if (sch == NULL || name == NULL) {
            store_schema_release(sch);
            code = rd_errf(err, RD_INTERNAL, NULL, "a stored schema could not be decoded");
            break;
        }
        store_snap_publish(s, name, sch);
    }
    if (code == RD_OK && rc != STORE_DB_DONE)
        code = store_sql_err(c->db, rc, err);
    store_stmt_put(st);
    return code;
}

bool store_schema_refresh(store *s, const char *org, const store_schema *seen)
{
    if (org == NULL || store_db_dialect(s->wdb) != STORE_DIALECT_POSTGRES)
        return false;
    rd_err err;
    rd_err_clear(&err);
    bool borrowed;
    store_conn *c = store_conn_borrow(s, &borrowed);
    store_dbst *st = NULL;
    int64_t newest = 0;
    if (c == NULL)
        return false;
    if (store_stmt_get(&c->cache, "SELECT max(revision) FROM _rd_schema WHERE org = ?1", &st) ==
        STORE_DB_OK) {
        store_db_bind_text(st, 1, org, -1, STORE_DB_STATIC);
        if (store_db_step(st) == STORE_DB_ROW)
            newest = store_db_column_int64(st, 0);
        store_stmt_put(st);
    }
    /* only a newer revision is fetched whole: a refused call costs one
     * index lookup */
    bool loaded = newest > (seen != NULL ? seen->revision : 0) &&
                  store_schema_reload(s, &c->cache, org, &err) == RD_OK;
    if (borrowed)
        store_conn_give_back(c);
    if (!loaded)
        return false;
    store_schema *now = store_schema_get(s, org);
    bool newer = now->revision > (seen != NULL ? seen->revision : 0);
    store_schema_release(now);
    return newer;
}

store_schema *store_schema_get_model(store *s, const char *org, const char *model)
{
    store_schema *sch = store_schema_get(s, org);
    if (model == NULL || store_schema_model(sch, model) != NULL ||
        !store_schema_refresh(s, org, sch))
        return sch;
    store_schema_release(sch);
    return store_schema_get(s, org);
}
