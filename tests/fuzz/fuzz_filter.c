/* libFuzzer target for the filter grammar and order_by (store/filter.c)
 * against a fixed model with one field of every type. The first input byte
 * picks the parser; the rest is the text. A parsed filter must compile to
 * a fragment with one placeholder per non-null comparison at most. Build
 * and run: `make fuzz` (docs/internals/store.md, "Filters and listing"). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "store/store_int.h"

static store_schema *schema;
static const store_model *model;

static const char model_json[] =
    "{\"models\":[{\"name\":\"m\",\"fields\":["
    "{\"name\":\"s\",\"type\":\"STRING\"},{\"name\":\"i\",\"type\":\"INTEGER\"},"
    "{\"name\":\"n\",\"type\":\"NUMBER\"},{\"name\":\"b\",\"type\":\"BOOLEAN\"},"
    "{\"name\":\"t\",\"type\":\"TIMESTAMP\"},{\"name\":\"j\",\"type\":\"JSON\"},"
    "{\"name\":\"e\",\"type\":\"ENUM\",\"enumValues\":[\"x\",\"y\"]}]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (schema == NULL) {
        json_t *doc = json_loads(model_json, 0, NULL);
        schema = store_schema_from_json(doc, 1);
        json_decref(doc);
        model = store_schema_model(schema, "m");
        if (model == NULL)
            abort();
    }
    if (size < 1)
        return 0;
    char *text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    rd_err err;
    if (data[0] & 1) {
        store_order *o = NULL;
        if (store_order_parse(schema, "o", model, text, NULL, &o, &err) == RD_OK) {
            if (store_order_terms(o) < 1 || store_order_terms(o) > STORE_ORDER_MAX_TERMS + 1)
                abort();
            store_order_free(o);
        }
    } else {
        store_filter *f = NULL;
        if (store_filter_parse(schema, "o", model, text, NULL, &f, &err) == RD_OK) {
            size_t marks = 0;
            for (const char *p = store_filter_sql(f); *p; p++)
                marks += *p == '?';
            if (marks > store_filter_conditions(f) ||
                store_filter_conditions(f) > STORE_FILTER_MAX_CONDS)
                abort();
            store_filter_free(f);
        } else if (err.code != RD_VALIDATION_FAILED && err.code != RD_INTERNAL) {
            abort();
        }
    }
    free(text);
    return 0;
}
