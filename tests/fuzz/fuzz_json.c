/* libFuzzer target for the gateway's JSON codec (service/gw_json.c): JSON
 * text -> gw_json_parse -> gw_json_decode as one of several request types
 * (the first input byte picks it) -> gw_json_encode_text, then the output
 * must parse and decode again and re-encode to the same text. Query-style
 * gw_json_set calls take the text as a value too. Build and run: `make
 * fuzz`. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/status.pb-c.h"
#include "recordd/v1/claims.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "recordd/v1/schema.pb-c.h"
#include "recordd/v1/tokens.pb-c.h"
#include "service/gw_json.h"

static const ProtobufCMessageDescriptor *const types[] = {
    &recordd__v1__update_record_request__descriptor,
    &recordd__v1__create_record_request__descriptor,
    &recordd__v1__push_schema_request__descriptor,
    &recordd__v1__list_records_request__descriptor,
    &recordd__v1__watch_changes_request__descriptor,
    &recordd__v1__acquire_claim_request__descriptor,
    &recordd__v1__mint_token_request__descriptor,
    &recordd__v1__commit_receipt__descriptor,
    &google__rpc__status__descriptor,
};
#define N_TYPES (sizeof types / sizeof types[0])

/* Paths gw_json_set is tried on, per type index (NULL: none). */
static const char *const set_paths[N_TYPES][3] = {
    {"expected_version", "onStale", "returnRecord"},
    {"model", "id", "return_record"},
    {"force", NULL, NULL},
    {"page_size", "order_by", NULL},
    {"sinceSyncId", "models", NULL},
    {"ttl_seconds", "wait_seconds", NULL},
    {"ttlSeconds", NULL, NULL},
    {"status", "lastSyncId", "error.code"},
    {"code", NULL, NULL},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t t = data[0] % N_TYPES;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    rd_arena *a = rd_arena_new(64 << 20);
    if (a == NULL)
        return 0;
    rd_err err;
    json_t *j = NULL;
    if (gw_json_parse(text, len, &j, &err) == RD_OK) {
        ProtobufCMessage *m = NULL;
        rd_code rc = gw_json_decode(types[t], j, a, &m, &err);
        json_decref(j);
        if (rc == RD_OK) {
            size_t out_len = 0;
            char *out = gw_json_encode_text(m, &out_len);
            if (out == NULL || strlen(out) != out_len)
                abort(); /* a decoded message always encodes */
            json_t *j2 = NULL;
            ProtobufCMessage *m2 = NULL;
            if (gw_json_parse(out, out_len, &j2, &err) != RD_OK ||
                gw_json_decode(types[t], j2, a, &m2, &err) != RD_OK)
                abort(); /* our own output is always accepted */
            json_decref(j2);
            char *again = gw_json_encode_text(m2, NULL);
            if (again == NULL || strcmp(out, again) != 0)
                abort(); /* and stable */
            free(again);
            free(out);
        } else if (rc != RD_INVALID_BODY && rc != RD_UNKNOWN_FIELD && rc != RD_BODY_TOO_LARGE) {
            abort();
        }
    }
    /* the same bytes as a path variable / query parameter value */
    char *value = malloc(len + 1);
    if (value != NULL) {
        memcpy(value, text, len);
        value[len] = '\0';
        ProtobufCMessage *m = rd_arena_alloc(a, types[t]->sizeof_message);
        if (m != NULL) {
            types[t]->message_init(m);
            for (size_t i = 0; i < 3 && set_paths[t][i] != NULL; i++) {
                rd_code rc = gw_json_set(m, set_paths[t][i], value, a, &err);
                if (rc != RD_OK && rc != RD_INVALID_BODY && rc != RD_BODY_TOO_LARGE)
                    abort();
            }
            char *out = gw_json_encode_text(m, NULL);
            if (out == NULL)
                abort();
            free(out);
        }
        free(value);
    }
    rd_arena_free(a);
    return 0;
}
