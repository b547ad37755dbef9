/* recordd.v1.Records/ListRecords: authorise (read on the model; the groups
 * the principal may read), parse filter and order_by against the schema,
 * decode the page token, read one page with store_list on the worker's
 * read connection, and encode the next token.
 *
 * Page tokens are opaque and tamper-evident: base64url (no padding) of a
 * random nonce and crypto_secretbox (XSalsa20-Poly1305) of
 *   version (1) | fingerprint (16) | n keys (1) | keys
 * where the fingerprint is BLAKE2b of (org, model, filter, order_by) and
 * each key is a type byte and its value (int64 / IEEE double big-endian,
 * or a 4-byte length and text). The box key is derived from the server's
 * API-key pepper with a distinct context, so tokens survive restarts and
 * never collide with key hashes. A token that does not open, or was made
 * for another org, model, filter or order, is INVALID_ARGUMENT. */
#include <pthread.h>
#include <sodium.h>
#include <string.h>

#include "recordd/v1/records.pb-c.h"
#include "service/receipt.h"
#include "service/svc_auth.h"
#include "service/svc_authz.h"
#include "service/svc_convert.h"
#include "service/svc_expand.h"
#include "service/svc_handlers.h"

#define LIST_DEFAULT_PAGE 50
#define TOKEN_VERSION 1
#define TOKEN_FP_BYTES 16
#define TOKEN_MAX_CHARS (1u << 20) /* base64url characters of a page token */

static const char token_context[] = "recordd.v1.ListRecords.page_token";

/* ---- the token key ------------------------------------------------------------- */

static unsigned char random_key[crypto_secretbox_KEYBYTES];
static pthread_once_t random_once = PTHREAD_ONCE_INIT;

static void random_key_init(void)
{
    randombytes_buf(random_key, sizeof random_key);
}

/* The box key: BLAKE2b(context) keyed with the pepper, or (no pepper: a
 * server without API keys) a per-process random key. */
static void token_key(const svc_ctx *ctx, unsigned char key[crypto_secretbox_KEYBYTES])
{
    if (ctx->auth == NULL || ctx->auth->pepper == NULL) {
        pthread_once(&random_once, random_key_init);
        memcpy(key, random_key, crypto_secretbox_KEYBYTES);
        return;
    }
    crypto_generichash(key, crypto_secretbox_KEYBYTES, (const unsigned char *)token_context,
                       sizeof token_context - 1, ctx->auth->pepper, AUTH_PEPPER_BYTES);
}

/* BLAKE2b-128 of the length-prefixed parts. */
static void fingerprint(const char *const parts[4], unsigned char out[TOKEN_FP_BYTES])
{
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, TOKEN_FP_BYTES);
    for (int i = 0; i < 4; i++) {
        const char *p = parts[i] ? parts[i] : "";
        uint64_t n = strlen(p);
        unsigned char len[8];
        for (int b = 0; b < 8; b++)
            len[b] = (unsigned char)(n >> (56 - 8 * b));
        crypto_generichash_update(&h, len, sizeof len);
        crypto_generichash_update(&h, (const unsigned char *)p, n);
    }
    crypto_generichash_final(&h, out, TOKEN_FP_BYTES);
}

/* ---- token encoding ------------------------------------------------------------- */

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int b = 0; b < 8; b++)
        p[b] = (unsigned char)(v >> (56 - 8 * b));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int b = 0; b < 8; b++)
        v = v << 8 | p[b];
    return v;
}

/* The next page token for keys[0..n) in the arena; NULL when out of memory. */
static char *token_encode(svc_call *call, const unsigned char fp[TOKEN_FP_BYTES],
                          const store_value *keys, size_t n)
{
    rd_arena *a = svc_call_arena(call);
    unsigned char key[crypto_secretbox_KEYBYTES];
    size_t plen = 2 + TOKEN_FP_BYTES;
    for (size_t i = 0; i < n; i++)
        plen += 1 + (keys[i].type == STORE_V_TEXT   ? 4 + keys[i].n
                     : keys[i].type == STORE_V_NULL ? 0
                                                    : 8);
    size_t blen = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plen;
    unsigned char *plain = rd_arena_alloc(a, plen);
    unsigned char *box = rd_arena_alloc(a, blen);
    size_t tlen = sodium_base64_ENCODED_LEN(blen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *tok = rd_arena_alloc(a, tlen);
    if (plain == NULL || box == NULL || tok == NULL || n > 255)
        return NULL;
    unsigned char *p = plain;
    *p++ = TOKEN_VERSION;
    memcpy(p, fp, TOKEN_FP_BYTES);
    p += TOKEN_FP_BYTES;
    *p++ = (unsigned char)n;
    for (size_t i = 0; i < n; i++) {
        *p++ = (unsigned char)keys[i].type;
        if (keys[i].type == STORE_V_INT) {
            put_u64(p, (uint64_t)keys[i].i);
            p += 8;
        } else if (keys[i].type == STORE_V_REAL) {
            uint64_t bits;
            memcpy(&bits, &keys[i].d, sizeof bits);
            put_u64(p, bits);
            p += 8;
        } else if (keys[i].type == STORE_V_TEXT) {
            uint32_t len = (uint32_t)keys[i].n;
            for (int b = 0; b < 4; b++)
                *p++ = (unsigned char)(len >> (24 - 8 * b));
            memcpy(p, keys[i].s, keys[i].n);
            p += keys[i].n;
        }
    }
    randombytes_buf(box, crypto_secretbox_NONCEBYTES);
    token_key(svc_call_ctx(call), key);
    crypto_secretbox_easy(box + crypto_secretbox_NONCEBYTES, plain, plen, box, key);
    sodium_memzero(key, sizeof key);
    sodium_bin2base64(tok, tlen, box, blen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return tok;
}

static rd_code bad_token(rd_err *err)
{
    return rd_errf(err, RD_VALIDATION_FAILED, "pageToken",
                   "pageToken is malformed, was modified, or belongs to another model, filter "
                   "or orderBy");
}

/* Opens token and checks it against fp; *keys gets nk values in the arena
 * (texts point into the arena). Errors: RD_VALIDATION_FAILED (pageToken),
 * RD_INTERNAL. */
static rd_code token_decode(svc_call *call, const char *token,
                            const unsigned char fp[TOKEN_FP_BYTES], size_t nk, store_value **keys,
                            rd_err *err)
{
    rd_arena *a = svc_call_arena(call);
    unsigned char key[crypto_secretbox_KEYBYTES];
    size_t tlen = strlen(token), blen = 0;
    if (tlen > TOKEN_MAX_CHARS)
        return bad_token(err);
    unsigned char *box = rd_arena_alloc(a, tlen + 1);
    if (box == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    if (sodium_base642bin(box, tlen + 1, token, tlen, NULL, &blen, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        blen < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + 2 + TOKEN_FP_BYTES)
        return bad_token(err);
    size_t plen = blen - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    unsigned char *plain = rd_arena_alloc(a, plen);
    store_value *v = rd_arena_calloc(a, nk * sizeof *v);
    if (plain == NULL || v == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    token_key(svc_call_ctx(call), key);
    int opened = crypto_secretbox_open_easy(plain, box + crypto_secretbox_NONCEBYTES,
                                            blen - crypto_secretbox_NONCEBYTES, box, key);
    sodium_memzero(key, sizeof key);
    if (opened != 0 || plain[0] != TOKEN_VERSION ||
        sodium_memcmp(plain + 1, fp, TOKEN_FP_BYTES) != 0 || plain[1 + TOKEN_FP_BYTES] != nk)
        return bad_token(err);
    const unsigned char *p = plain + 2 + TOKEN_FP_BYTES, *end = plain + plen;
    for (size_t i = 0; i < nk; i++) {
        if (p >= end)
            return bad_token(err);
        v[i].type = (store_vtype)*p++;
        if (v[i].type == STORE_V_INT || v[i].type == STORE_V_REAL) {
            if (end - p < 8)
                return bad_token(err);
            uint64_t bits = get_u64(p);
            p += 8;
            if (v[i].type == STORE_V_INT)
                v[i].i = (int64_t)bits;
            else
                memcpy(&v[i].d, &bits, sizeof bits);
        } else if (v[i].type == STORE_V_TEXT) {
            if (end - p < 4)
                return bad_token(err);
            uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            p += 4;
            if ((size_t)(end - p) < len)
                return bad_token(err);
            v[i].s = rd_arena_strndup(a, (const char *)p, len);
            if (v[i].s == NULL)
                return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
            v[i].n = len;
            p += len;
        } else if (v[i].type != STORE_V_NULL) {
            return bad_token(err);
        }
    }
    if (p != end)
        return bad_token(err);
    *keys = v;
    return RD_OK;
}

/* ---- groups ------------------------------------------------------------------- */

/* ---- the handler ------------------------------------------------------------- */

void svc_list_records(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__ListRecordsRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    rd_arena *a = svc_call_arena(call);
    const char *org = svc_call_org(call);
    store_schema *schema = NULL;
    store_filter *filter = NULL;
    store_order *order = NULL;
    store_page page = {0};
    store_value *after = NULL;
    svc_expand *x = NULL;
    store_conn *conn = NULL;
    const char **groups = NULL;
    size_t n_groups = 0;
    bool all = false;
    unsigned char fp[TOKEN_FP_BYTES];
    rd_err err;
    rd_err_clear(&err);

    if (req->model == NULL || req->model[0] == '\0') {
        rd_errf(&err, RD_VALIDATION_FAILED, "model", "model is required");
        goto fail;
    }
    if (req->page_size < 0) {
        rd_errf(&err, RD_VALIDATION_FAILED, "pageSize", "pageSize must not be negative");
        goto fail;
    }
    size_t limit = req->page_size == 0                     ? LIST_DEFAULT_PAGE
                   : req->page_size > STORE_LIST_MAX_LIMIT ? STORE_LIST_MAX_LIMIT
                                                           : (size_t)req->page_size;
    if (svc_authz_groups(call, svc_call_method(call)->can, req->model, &all, &groups, &n_groups,
                         &err) != RD_OK)
        goto fail;
    schema = store_schema_get_model(ctx->db, org, req->model);
    const store_model *m = store_schema_model(schema, req->model);
    if (m == NULL) {
        rd_errf(&err, RD_NOT_FOUND, "model", "model '%.64s' is not in the schema", req->model);
        goto fail;
    }
    /* a path through a reference reads the target only in the groups the
     * principal may read it in (none at all: PERMISSION_DENIED) */
    store_filter_access access = {svc_authz_read_groups, call};
    if (store_filter_parse(schema, org, m, req->filter, &access, &filter, &err) != RD_OK ||
        store_order_parse(schema, org, m, req->order_by, &access, &order, &err) != RD_OK)
        goto fail;
    const char *parts[4] = {org, req->model, req->filter, req->order_by};
    fingerprint(parts, fp);
    if (req->page_token != NULL && req->page_token[0] != '\0' &&
        token_decode(call, req->page_token, fp, store_order_terms(order), &after, &err) != RD_OK)
        goto fail;
    if (svc_expand_parse(a, schema, m, req->expand, req->n_expand, req->read_mask, &x, &err) !=
        RD_OK)
        goto fail;
    conn = store_thread_conn(ctx->db, &err);
    if (conn == NULL)
        goto fail;
    /* expand: the page and the records it references from one snapshot */
    if (svc_expand_paths(x) > 0 && store_read_hold(conn, org, NULL, &err) != RD_OK)
        goto fail;
    /* a page ends by size too, so it fits in one reply: the stored size is
     * counted, and a record's protobuf form can be up to ~3x its stored
     * JSON (small numbers), hence a quarter of the message limit, shared
     * with the records each expanded path may add */
    if (store_list(conn, org, m, filter, order, after, store_order_terms(order), limit,
                   (size_t)svc_call_max_message_bytes(call) / 4 / (1 + svc_expand_paths(x)),
                   all ? NULL : groups, n_groups, &page, &err) != RD_OK)
        goto fail;

    Recordd__V1__ListRecordsResponse *out = rd_arena_alloc(a, sizeof *out);
    if (out == NULL)
        goto oom;
    recordd__v1__list_records_response__init(out);
    out->read_at = page.read_at;
    out->n_records = page.n;
    out->records = page.n ? rd_arena_alloc(a, page.n * sizeof *out->records) : NULL;
    if (page.n > 0 && out->records == NULL)
        goto oom;
    for (size_t i = 0; i < page.n; i++) {
        out->records[i] = svc_record_to_pb(a, org, req->model, &page.records[i], page.read_at);
        if (out->records[i] == NULL)
            goto oom;
    }
    if (svc_expand_apply(call, conn, x, page.records, out->records, page.n, page.read_at, &err) !=
        RD_OK)
        goto fail;
    if (page.more) {
        out->next_page_token = token_encode(call, fp, page.last, page.n_last);
        if (out->next_page_token == NULL)
            goto oom;
    }
    svc_reply(call, &out->base);
    goto done;
oom:
    rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
fail:
    svc_fail(call, &err);
done:
    if (conn != NULL)
        store_read_release(conn);
    store_page_free(&page);
    store_order_free(order);
    store_filter_free(filter);
    if (schema != NULL)
        store_schema_release(schema);
}
