/* data.c: record data rules. Checks a data object against a model (types,
 * constraints, unknown and system fields), normalises values to their
 * stored form, and implements RFC 7396 JSON merge patch. Pure functions:
 * nothing here touches the database. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "store/store_int.h"

#define MAX_SAFE_INTEGER 9007199254740992.0 /* 2^53 */

/* Formats a number for a message: integers without a fraction. */
static const char *num_str(double d, char *buf, size_t len)
{
    snprintf(buf, len, "%.15g", d);
    return buf;
}

/* Number of code points in a valid UTF-8 string of n bytes. */
static size_t utf8_len(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            count++;
    return count;
}

int store_json_depth(const json_t *v, int limit)
{
    int deepest = 0;
    if (limit < 0)
        return 1;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child)
        {
            int d = store_json_depth(child, limit - 1);
            if (d > deepest)
                deepest = d;
            if (deepest > limit)
                break;
        }
        return deepest + 1;
    }
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int d = store_json_depth(json_array_get(v, i), limit - 1);
            if (d > deepest)
                deepest = d;
            if (deepest > limit)
                break;
        }
        return deepest + 1;
    }
    return 0;
}

static rd_code check_range(const store_field *f, double d, rd_err *err)
{
    char a[32], b[32];
    if (f->has_min && d < f->min)
        return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: %s is below the minimum %s",
                       f->name, num_str(d, a, sizeof a), num_str(f->min, b, sizeof b));
    if (f->has_max && d > f->max)
        return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: %s is above the maximum %s",
                       f->name, num_str(d, a, sizeof a), num_str(f->max, b, sizeof b));
    return RD_OK;
}

static rd_code check_enum(const store_field *f, const json_t *v, rd_err *err)
{
    char allowed[200];
    size_t n = 0;
    if (!json_is_string(v))
        return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: expected a string (enum value)",
                       f->name);
    for (size_t i = 0; i < f->n_enum_values; i++)
        if (strcmp(f->enum_values[i], json_string_value(v)) == 0)
            return RD_OK;
    allowed[0] = '\0';
    for (size_t i = 0; i < f->n_enum_values && n < sizeof allowed - 8; i++) {
        int w = snprintf(allowed + n, sizeof allowed - n, "%s%s", i ? ", " : "", f->enum_values[i]);
        if (w < 0 || (size_t)w >= sizeof allowed - n) {
            snprintf(allowed + (sizeof allowed - 5), 5, "...");
            break;
        }
        n += (size_t)w;
    }
    return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: '%.64s' is not one of: %s", f->name,
                   json_string_value(v), allowed);
}

rd_code store_check_value(const store_field *f, const json_t *v, rd_err *err)
{
    char a[32];
    switch (f->type) {
    case STORE_T_STRING: {
        if (!json_is_string(v))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: expected a string", f->name);
        const char *str = json_string_value(v);
        size_t bytes = json_string_length(v);
        if (!rd_utf8_valid(str, bytes))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                           "%s: must be valid UTF-8 without NUL characters", f->name);
        size_t chars = f->max_length > 0 ? utf8_len(str, bytes) : 0;
        if (f->max_length > 0 && chars > f->max_length)
            return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                           "%s: %zu characters exceed the maximum length %u", f->name, chars,
                           f->max_length);
        return RD_OK;
    }
    case STORE_T_INTEGER: {
        double d;
        if (json_is_integer(v)) {
            d = (double)json_integer_value(v);
        } else if (json_is_real(v)) {
            d = json_real_value(v);
            if (!isfinite(d) || d != floor(d))
                return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: %s is not an integer",
                               f->name, num_str(d, a, sizeof a));
            if (fabs(d) > MAX_SAFE_INTEGER)
                return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                               "%s: %s is outside the exactly representable range (+-2^53)",
                               f->name, num_str(d, a, sizeof a));
        } else {
            return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: expected an integer", f->name);
        }
        return check_range(f, d, err);
    }
    case STORE_T_NUMBER:
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: expected a finite number",
                           f->name);
        return check_range(f, json_number_value(v), err);
    case STORE_T_BOOLEAN:
        if (!json_is_boolean(v))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: expected true or false",
                           f->name);
        return RD_OK;
    case STORE_T_TIMESTAMP: {
        int64_t t;
        if (!json_is_string(v) || rd_parse_rfc3339(json_string_value(v), &t) != 0)
            return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                           "%s: expected an RFC 3339 timestamp such as 2024-05-01T12:00:00Z",
                           f->name);
        return RD_OK;
    }
    case STORE_T_JSON:
        if (store_json_depth(v, STORE_MAX_DEPTH) > STORE_MAX_DEPTH)
            return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                           "%s: value is nested deeper than %d levels", f->name, STORE_MAX_DEPTH);
        return RD_OK;
    case STORE_T_ENUM:
        return check_enum(f, v, err);
    case STORE_T_REFERENCE:
        /* whether the record exists is checked where the write runs */
        if (!json_is_string(v) || !store_id_valid(json_string_value(v)))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                           "%s: expected the id of a %s record (1 to %d characters of A-Z a-z "
                           "0-9 . _ ~ : -)",
                           f->name, f->references ? f->references : "", STORE_ID_MAX);
        return RD_OK;
    }
    return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: the field has an unknown type",
                   f->name);
}

rd_code store_check_values(const store_model *m, const json_t *data, store_check_mode mode,
                           rd_err *err)
{
    const char *key;
    json_t *v;
    if (data == NULL)
        return RD_OK;
    if (!json_is_object(data))
        return rd_errf(err, RD_VALIDATION_FAILED, "data", "data must be an object");
    json_object_foreach((json_t *)data, key, v)
    {
        if (store_is_system_field(key))
            return rd_errf(err, RD_VALIDATION_FAILED, key, "field '%s' is server-managed", key);
        const store_field *f = store_model_field(m, key);
        if (f == NULL)
            return rd_errf(err, RD_UNKNOWN_FIELD, key,
                           "unknown field '%.64s' (model %s has no such field)", key, m->name);
        if (json_is_null(v)) {
            if (mode == STORE_CHECK_PATCH && f->required)
                return rd_errf(err, RD_VALIDATION_FAILED, f->name,
                               "%s: a required field cannot be cleared", f->name);
            continue;
        }
        if (store_check_value(f, v, err) != RD_OK)
            return err->code;
    }
    return RD_OK;
}

rd_code store_check_required(const store_model *m, const json_t *data, rd_err *err)
{
    for (size_t i = 0; i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        json_t *v = json_object_get(data, f->name);
        if (f->required && (v == NULL || json_is_null(v)))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: a required field is missing",
                           f->name);
    }
    return RD_OK;
}

rd_code store_check_data(const store_model *model, const json_t *data, store_check_mode mode,
                         rd_err *err)
{
    if (model == NULL)
        return rd_errf(err, RD_NOT_FOUND, "model", "model is not in the schema");
    if (store_check_values(model, data, mode, err) != RD_OK)
        return err->code;
    if (mode == STORE_CHECK_PATCH)
        return RD_OK;
    for (size_t i = 0; i < model->n_fields; i++) {
        const store_field *f = &model->fields[i];
        json_t *v = json_object_get(data, f->name);
        bool has_default = f->default_value != NULL && !json_is_null(f->default_value);
        if (f->required && !has_default && (v == NULL || json_is_null(v)))
            return rd_errf(err, RD_VALIDATION_FAILED, f->name, "%s: a required field is missing",
                           f->name);
    }
    return RD_OK;
}

json_t *store_normalize(const store_field *f, const json_t *v)
{
    if (v == NULL || json_is_null(v))
        return NULL;
    switch (f->type) {
    case STORE_T_INTEGER:
        if (json_is_real(v))
            return json_integer((json_int_t)json_real_value(v));
        break;
    case STORE_T_NUMBER:
        if (json_is_integer(v))
            return json_real((double)json_integer_value(v));
        break;
    case STORE_T_TIMESTAMP: {
        int64_t t;
        char buf[48];
        if (json_is_string(v) && rd_parse_rfc3339(json_string_value(v), &t) == 0)
            return json_string(rd_rfc3339(t, buf, sizeof buf));
        break;
    }
    default:
        break;
    }
    return json_incref((json_t *)v);
}

/* ---- RFC 7396 ------------------------------------------------------------------ */

json_t *store_merge_patch(json_t *target, const json_t *patch)
{
    const char *key;
    json_t *value;
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_deep_copy(patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
        if (target == NULL)
            return NULL;
    }
    json_object_foreach((json_t *)patch, key, value)
    {
        if (json_is_null(value)) {
            json_object_del(target, key);
            continue;
        }
        json_t *cur = json_incref(json_object_get(target, key));
        json_t *merged = store_merge_patch(cur, value);
        if (merged == NULL || json_object_set_new(target, key, merged) != 0) {
            json_decref(target);
            return NULL;
        }
    }
    return target;
}
