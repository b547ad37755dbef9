/* Unit tests for service/svc_idem.c: the canonical request hash that
 * decides whether a retry with an idempotency key is the same request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "google/protobuf/struct.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "service/svc_idem.h"

#define METHOD "/recordd.v1.Records/UpdateRecord"

/* An entry key -> string value or (str NULL) number value, in the arena. */
static Google__Protobuf__Struct__FieldsEntry *entry(rd_arena *a, const char *key, const char *str,
                                                    double num)
{
    Google__Protobuf__Struct__FieldsEntry *e = rd_arena_alloc(a, sizeof *e);
    Google__Protobuf__Value *v = rd_arena_alloc(a, sizeof *v);
    google__protobuf__struct__fields_entry__init(e);
    google__protobuf__value__init(v);
    if (str != NULL) {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        v->string_value = (char *)str;
    } else {
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        v->number_value = num;
    }
    e->key = (char *)key;
    e->value = v;
    return e;
}

typedef struct req_parts {
    const char *k1, *k2;
    double n;
    const char *idempotency_key, *client_tx_id;
} req_parts;

/* Hash of UpdateRecord {model "items", id "r1", data {k1: "x", k2: n}}. */
static void hash_of(const req_parts *p, const char *method, uint8_t out[STORE_IDEM_HASH_BYTES])
{
    rd_arena *a = rd_arena_new(1 << 16);
    Recordd__V1__UpdateRecordRequest req = RECORDD__V1__UPDATE_RECORD_REQUEST__INIT;
    Google__Protobuf__Struct data = GOOGLE__PROTOBUF__STRUCT__INIT;
    Google__Protobuf__Struct__FieldsEntry *fields[2];
    fields[0] = strcmp(p->k1, "a") == 0 ? entry(a, p->k1, "x", 0) : entry(a, p->k1, NULL, p->n);
    fields[1] = strcmp(p->k2, "a") == 0 ? entry(a, p->k2, "x", 0) : entry(a, p->k2, NULL, p->n);
    data.fields = fields;
    data.n_fields = 2;
    req.model = "items";
    req.id = "r1";
    req.data = &data;
    req.idempotency_key = (char *)p->idempotency_key;
    req.client_tx_id = (char *)p->client_tx_id;
    rd_err err;
    rd_err_clear(&err);
    assert_int_equal(svc_idem_hash(a, method, &req.base, out, &err), RD_OK);
    rd_arena_free(a);
}

static void test_struct_key_order_does_not_change_the_hash(void **state)
{
    (void)state;
    uint8_t x[STORE_IDEM_HASH_BYTES], y[STORE_IDEM_HASH_BYTES];
    hash_of(&(req_parts){"a", "n", 4, "k", ""}, METHOD, x);
    hash_of(&(req_parts){"n", "a", 4, "k", ""}, METHOD, y);
    assert_memory_equal(x, y, sizeof x);
}

static void test_a_different_value_changes_the_hash(void **state)
{
    (void)state;
    uint8_t x[STORE_IDEM_HASH_BYTES], y[STORE_IDEM_HASH_BYTES];
    hash_of(&(req_parts){"a", "n", 4, "k", ""}, METHOD, x);
    hash_of(&(req_parts){"a", "n", 5, "k", ""}, METHOD, y);
    assert_memory_not_equal(x, y, sizeof x);
}

static void test_the_idempotency_key_itself_is_not_hashed(void **state)
{
    (void)state;
    uint8_t x[STORE_IDEM_HASH_BYTES], y[STORE_IDEM_HASH_BYTES];
    hash_of(&(req_parts){"a", "n", 4, "key-1", ""}, METHOD, x);
    hash_of(&(req_parts){"a", "n", 4, "", ""}, METHOD, y);
    assert_memory_equal(x, y, sizeof x);
}

static void test_client_tx_id_is_part_of_the_request(void **state)
{
    (void)state;
    uint8_t x[STORE_IDEM_HASH_BYTES], y[STORE_IDEM_HASH_BYTES];
    hash_of(&(req_parts){"a", "n", 4, "k", "tx-1"}, METHOD, x);
    hash_of(&(req_parts){"a", "n", 4, "k", "tx-2"}, METHOD, y);
    assert_memory_not_equal(x, y, sizeof x);
}

static void test_the_method_is_part_of_the_request(void **state)
{
    (void)state;
    uint8_t x[STORE_IDEM_HASH_BYTES], y[STORE_IDEM_HASH_BYTES];
    hash_of(&(req_parts){"a", "n", 4, "k", ""}, METHOD, x);
    hash_of(&(req_parts){"a", "n", 4, "k", ""}, "/recordd.v1.Records/ReplaceRecord", y);
    assert_memory_not_equal(x, y, sizeof x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_struct_key_order_does_not_change_the_hash),
        cmocka_unit_test(test_a_different_value_changes_the_hash),
        cmocka_unit_test(test_the_idempotency_key_itself_is_not_hashed),
        cmocka_unit_test(test_client_tx_id_is_part_of_the_request),
        cmocka_unit_test(test_the_method_is_part_of_the_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
