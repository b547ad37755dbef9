/* svc_idem: idempotency keys on the service side: the key from the request
 * field or the metadata, and the canonical request hash compared by the
 * store (svc_idem.h). */
#include "service/svc_idem.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/struct.pb-c.h"

rd_code svc_idem_key(svc_call *call, const char *field, const char **key, rd_err *err)
{
    const char *md = svc_call_metadata(call, "idempotency-key");
    bool has_field = field != NULL && field[0] != '\0';
    *key = NULL;
    if (has_field && md != NULL && strcmp(field, md) != 0)
        return rd_errf(err, RD_VALIDATION_FAILED, "idempotencyKey",
                       "the idempotency key in the request and in the idempotency-key metadata "
                       "differ");
    const char *k = has_field ? field : md;
    if (k == NULL || k[0] == '\0')
        return RD_OK;
    size_t len = strlen(k);
    if (len > STORE_IDEM_KEY_MAX)
        return rd_errf(err, RD_VALIDATION_FAILED, "idempotencyKey",
                       "the idempotency key is longer than %d bytes", STORE_IDEM_KEY_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)k[i] < 0x20 || k[i] == 0x7f)
            return rd_errf(err, RD_VALIDATION_FAILED, "idempotencyKey",
                           "the idempotency key holds a control character");
    /* scoped to the principal and its capabilities:
     * "<principal id>\x1f<16 hex digits of the caps' hash>\x1f<key>" (a key
     * holds no control character, so the scope cannot be forged from it). A
     * token with other capabilities than the key it was minted from has its
     * own scope: a stored receipt is only ever shown to the same rights. */
    const auth_principal *p = svc_call_principal(call);
    const char *who = p != NULL ? auth_principal_id(p) : "";
    char *caps = p != NULL ? auth_caps_to_json(auth_principal_caps(p)) : NULL;
    unsigned char h[8];
    crypto_generichash(h, sizeof h, (const unsigned char *)(caps ? caps : ""),
                       caps ? strlen(caps) : 0, NULL, 0);
    free(caps);
    size_t wlen = strlen(who);
    char *scoped = rd_arena_alloc(svc_call_arena(call), wlen + 1 + 16 + 1 + len + 1);
    if (scoped == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    memcpy(scoped, who, wlen);
    scoped[wlen] = 0x1f;
    sodium_bin2hex(scoped + wlen + 1, 17, h, sizeof h);
    scoped[wlen + 17] = 0x1f;
    memcpy(scoped + wlen + 18, k, len + 1);
    *key = scoped;
    return RD_OK;
}

/* ---- canonical form ----------------------------------------------------------- */

typedef struct sort_ent {
    Google__Protobuf__Struct__FieldsEntry *e;
    size_t idx;
} sort_ent;

static int cmp_ent(const void *x, const void *y)
{
    const sort_ent *a = x, *b = y;
    int c = strcmp(a->e->key ? a->e->key : "", b->e->key ? b->e->key : "");
    if (c != 0)
        return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static bool canon_message(rd_arena *a, ProtobufCMessage *m);

/* Sorts s's entries by key (ties keep their order), then its values. */
static bool canon_struct(rd_arena *a, Google__Protobuf__Struct *s)
{
    size_t n = s->n_fields;
    if (n > 1) {
        sort_ent *ents = rd_arena_alloc(a, n * sizeof *ents);
        if (ents == NULL)
            return false;
        for (size_t i = 0; i < n; i++)
            ents[i] = (sort_ent){s->fields[i], i};
        qsort(ents, n, sizeof *ents, cmp_ent);
        for (size_t i = 0; i < n; i++)
            s->fields[i] = ents[i].e;
    }
    for (size_t i = 0; i < n; i++)
        if (s->fields[i]->value != NULL && !canon_message(a, &s->fields[i]->value->base))
            return false;
    return true;
}

/* Walks every message field of m (set oneof members, repeated and singular)
 * and sorts the Structs it finds. */
static bool canon_message(rd_arena *a, ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &google__protobuf__struct__descriptor)
        return canon_struct(a, (Google__Protobuf__Struct *)m);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *base = (char *)m;
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(const void *)(base + f->quantifier_offset);
            ProtobufCMessage **items = *(ProtobufCMessage ***)(void *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (items[j] != NULL && !canon_message(a, items[j]))
                    return false;
            continue;
        }
        ProtobufCMessage *sub = *(ProtobufCMessage **)(void *)(base + f->offset);
        if (sub != NULL && !canon_message(a, sub))
            return false;
    }
    return true;
}

rd_code svc_idem_hash(rd_arena *a, const char *method, ProtobufCMessage *req,
                      uint8_t out[STORE_IDEM_HASH_BYTES], rd_err *err)
{
    const ProtobufCMessageDescriptor *d = req->descriptor;
    crypto_generichash_state st;
    if (!canon_message(a, req))
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    /* a shallow copy without the key: nested messages are shared */
    ProtobufCMessage *copy = rd_arena_alloc(a, d->sizeof_message);
    if (copy == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    memcpy(copy, req, d->sizeof_message);
    const ProtobufCFieldDescriptor *kf =
        protobuf_c_message_descriptor_get_field_by_name(d, "idempotency_key");
    if (kf != NULL && kf->type == PROTOBUF_C_TYPE_STRING && kf->label == PROTOBUF_C_LABEL_NONE)
        *(const char **)(void *)((char *)copy + kf->offset) = NULL;
    size_t len = protobuf_c_message_get_packed_size(copy);
    uint8_t *buf = rd_arena_alloc(a, len ? len : 1);
    if (buf == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    protobuf_c_message_pack(copy, buf);
    crypto_generichash_init(&st, NULL, 0, STORE_IDEM_HASH_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)method, strlen(method) + 1);
    crypto_generichash_update(&st, buf, len);
    crypto_generichash_final(&st, out, STORE_IDEM_HASH_BYTES);
    return RD_OK;
}
