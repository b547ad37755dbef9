/* The front door: classify an `authorization` value by its shape and turn it
 * into a principal (API key via the store's lookup, or capability token).
 * Called once per request before the handler; messages never echo input. */
#include "auth/auth_int.h"

#include <sodium.h>
#include <string.h>

static const char SCHEME[] = "bearer";
enum { SCHEME_LEN = sizeof SCHEME - 1 };

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

rd_code auth_classify(const char *value, size_t len, auth_kind *kind, const char **cred,
                      size_t *cred_len, rd_err *err)
{
    const rd_code rc = RD_UNAUTHENTICATED;
    *cred = NULL;
    *cred_len = 0;
    if (value == NULL || len == 0)
        return rd_errf(err, rc, NULL, "missing authorization: send Bearer <API key or token>");
    size_t i = 0;
    for (; i < SCHEME_LEN; i++)
        if (i >= len || lower((unsigned char)value[i]) != SCHEME[i])
            return rd_errf(err, rc, NULL, "authorization scheme must be Bearer");
    if (i >= len || value[i] != ' ')
        return rd_errf(err, rc, NULL, "authorization scheme must be Bearer");
    while (i < len && value[i] == ' ')
        i++;
    size_t end = len;
    while (end > i && (value[end - 1] == ' ' || value[end - 1] == '\t'))
        end--;
    if (end == i)
        return rd_errf(err, rc, NULL, "authorization has no credential");
    const char *c = value + i;
    size_t n = end - i;
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)c[k];
        if (ch < 0x21 || ch > 0x7e)
            return rd_errf(err, rc, NULL, "credential contains invalid characters");
    }
    if (has_prefix(c, n, "sk_live_") || has_prefix(c, n, "sk_test_")) {
        *kind = AUTH_KIND_API_KEY;
    } else if (has_prefix(c, n, "v4.public.")) {
        *kind = AUTH_KIND_TOKEN;
    } else if (has_prefix(c, n, "v4.local.")) {
        return rd_errf(err, rc, NULL, "v4.local tokens are not accepted; expected v4.public");
    } else {
        return rd_errf(err, rc, NULL,
                       "credential is neither an API key (sk_live_/sk_test_) nor a v4.public "
                       "token");
    }
    *cred = c;
    *cred_len = n;
    return RD_OK;
}

static rd_code authenticate_key(const auth_config *cfg, const char *key, size_t len,
                                auth_principal **out, rd_err *err)
{
    unsigned char hash[AUTH_APIKEY_HASH_BYTES];
    rd_code rc;
    if (cfg->pepper == NULL || cfg->lookup_key == NULL)
        return rd_errf(err, RD_UNAUTHENTICATED, NULL, "API keys are not enabled");
    rc = auth_apikey_hash(cfg->pepper, key, len, hash, err);
    if (rc != RD_OK)
        goto done;
    rc = cfg->lookup_key(cfg->lookup_ctx, hash, out, err);
    if (rc == RD_OK && *out == NULL)
        rc = rd_errf(err, RD_INTERNAL, NULL, "API key lookup returned no principal");
    if (rc != RD_OK && *out != NULL) {
        auth_principal_free(*out);
        *out = NULL;
    }
done:
    sodium_memzero(hash, sizeof hash);
    return rc;
}

rd_code auth_authenticate(const auth_config *cfg, const char *value, size_t len,
                          auth_principal **out, rd_err *err)
{
    auth_kind kind = 0;
    const char *cred = NULL;
    size_t cred_len = 0;
    *out = NULL;
    if (cfg == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "authentication is not configured");
    rd_code rc = auth_classify(value, len, &kind, &cred, &cred_len, err);
    if (rc != RD_OK)
        return rc;
    if (kind == AUTH_KIND_API_KEY)
        return authenticate_key(cfg, cred, cred_len, out, err);
    return auth_token_verify(cfg, cred, cred_len, out, err);
}
