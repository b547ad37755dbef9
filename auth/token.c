/* Capability tokens: the recordd profile of PASETO v4.public. Verification
 * checks size, header and the exact kid footer, verifies the signature, and
 * only then parses and checks the claims; minting signs attenuated caps for
 * an API-key caller. */
#include "auth/auth_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char FOOTER_HEAD[] = "{\"kid\":\"";
static const char FOOTER_TAIL[] = "\"}";
enum {
    FOOTER_HEAD_LEN = sizeof FOOTER_HEAD - 1,
    FOOTER_TAIL_LEN = sizeof FOOTER_TAIL - 1,
    FOOTER_LEN = FOOTER_HEAD_LEN + AUTH_KID_LEN + FOOTER_TAIL_LEN,
    US = 1000000,
};

void auth_config_init(auth_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->issuer = "recordd";
    cfg->audience = "recordd";
    cfg->skew_s = AUTH_DEFAULT_SKEW_S;
    cfg->max_ttl_s = AUTH_DEFAULT_MAX_TTL_S;
    cfg->max_token_bytes = AUTH_DEFAULT_MAX_TOKEN_BYTES;
}

static int64_t config_now(const auth_config *cfg)
{
    return cfg->now_us != 0 ? cfg->now_us : rd_now_us();
}

/* ---- time --------------------------------------------------------------- */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int auth__parse_time(const char *s, int64_t *t_us)
{
    /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM), checked character by
     * character, then converted by the common parser. */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    size_t i = 0;
    if (s == NULL)
        return -1;
    for (; shape[i] != '\0'; i++) {
        if (shape[i] == 'd' ? !is_digit(s[i]) : s[i] != shape[i])
            return -1;
    }
    if (s[i] == '.') {
        i++;
        if (!is_digit(s[i]))
            return -1;
        while (is_digit(s[i]))
            i++;
    }
    if (s[i] == 'Z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        if (!is_digit(s[i + 1]) || !is_digit(s[i + 2]) || s[i + 3] != ':' || !is_digit(s[i + 4]) ||
            !is_digit(s[i + 5]))
            return -1;
        i += 6;
    } else {
        return -1;
    }
    if (s[i] != '\0')
        return -1;
    return rd_parse_rfc3339(s, t_us) == 0 ? 0 : -1;
}

/* ---- verification ------------------------------------------------------------ */

/* A string claim: non-empty, at most AUTH__MAX_CLAIM bytes. *out is NULL
 * when absent. -1 when present with another type or size. */
static int claim_str(json_t *claims, const char *name, const char **out)
{
    json_t *v = json_object_get(claims, name);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > AUTH__MAX_CLAIM)
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* A date-time claim. *present is 0 when absent. -1 when not RFC 3339. */
static int claim_time(json_t *claims, const char *name, int64_t *t_us, int *present)
{
    json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return -1;
    return auth__parse_time(json_string_value(v), t_us);
}

/* Checks the verified payload's claims and builds the principal. */
static rd_code check_token_claims(const auth_config *cfg, const unsigned char *m, size_t m_len,
                                  auth_principal **out, rd_err *err)
{
    const rd_code rc = RD_UNAUTHENTICATED;
    json_error_t jerr;
    json_t *claims = NULL;
    auth_caps *caps = NULL;
    rd_code ret = rc;
    int present = 0;
    int64_t iat = 0, exp = 0, nbf = 0;

    if (!rd_utf8_valid((const char *)m, m_len)) {
        rd_errf(err, rc, NULL, "token payload is not valid UTF-8");
        goto done;
    }
    claims = json_loadb((const char *)m, m_len, JSON_REJECT_DUPLICATES, &jerr);
    if (claims == NULL) {
        if (json_error_code(&jerr) == json_error_duplicate_key)
            rd_errf(err, rc, NULL, "token payload repeats a claim");
        else
            rd_errf(err, rc, NULL, "token payload is not valid JSON");
        goto done;
    }
    if (!json_is_object(claims)) {
        rd_errf(err, rc, NULL, "token payload must be a JSON object");
        goto done;
    }
    /* required string claims, then the optional role */
    static const char *const names[] = {"iss", "aud", "sub", "org", "jti", "role"};
    const char *vals[6] = {NULL};
    for (size_t k = 0; k < 6; k++) {
        if (claim_str(claims, names[k], &vals[k]) != 0 || (k < 5 && vals[k] == NULL)) {
            rd_errf(err, rc, NULL, "token claim %s must be a non-empty string", names[k]);
            goto done;
        }
    }
    const char *iss = vals[0], *aud = vals[1], *sub = vals[2], *org = vals[3], *jti = vals[4];
    const char *role = vals[5];
    static const char *const tnames[] = {"iat", "exp", "nbf"};
    int64_t *times[3] = {&iat, &exp, &nbf};
    int has_nbf = 0;
    for (size_t k = 0; k < 3; k++) {
        if (claim_time(claims, tnames[k], times[k], &present) != 0 || (k < 2 && !present)) {
            rd_errf(err, rc, NULL, "token claim %s must be an RFC 3339 date-time string",
                    tnames[k]);
            goto done;
        }
        if (k == 2)
            has_nbf = present;
    }
    if (json_object_get(claims, "caps") == NULL) {
        rd_errf(err, rc, NULL, "token claim caps is missing");
        goto done;
    }
    if (strcmp(iss, cfg->issuer) != 0) {
        rd_errf(err, rc, NULL, "token issuer is not trusted");
        goto done;
    }
    if (strcmp(aud, cfg->audience) != 0) {
        rd_errf(err, rc, NULL, "token audience is not this service");
        goto done;
    }
    if (exp <= iat) {
        rd_errf(err, rc, NULL, "token expires before it is issued");
        goto done;
    }
    if (exp - iat > cfg->max_ttl_s * US) {
        rd_errf(err, rc, NULL, "token lifetime exceeds %lld s", (long long)cfg->max_ttl_s);
        goto done;
    }
    int64_t now = config_now(cfg), skew = cfg->skew_s * US;
    if (now > exp + skew) {
        ret = rd_errf(err, RD_TOKEN_EXPIRED, NULL, "token has expired");
        goto done;
    }
    if ((has_nbf && now < nbf - skew) || now < iat - skew) {
        rd_errf(err, rc, NULL, "token is not valid yet");
        goto done;
    }
    if (auth__caps_from_json_value(json_object_get(claims, "caps"), &caps, NULL) != RD_OK ||
        auth_caps_count(caps) == 0) {
        rd_errf(err, rc, NULL, "token caps are malformed");
        goto done;
    }
    /* cnf (RFC 7800 style): {"client_id": "..."} binds the token to a client
     * certificate identity */
    const char *client_id = NULL;
    json_t *cnf = json_object_get(claims, "cnf");
    if (cnf != NULL) {
        json_t *cid = json_is_object(cnf) && json_object_size(cnf) == 1
                          ? json_object_get(cnf, "client_id")
                          : NULL;
        client_id = json_string_value(cid);
        if (!auth_client_id_ok(client_id)) {
            rd_errf(err, rc, NULL, "token claim cnf must be {\"client_id\": identity}");
            goto done;
        }
    }
    if (cfg->is_revoked != NULL && cfg->is_revoked(cfg->revoked_ctx, jti, sub) != 0) {
        rd_errf(err, rc, NULL, "token or the key that minted it has been revoked");
        goto done;
    }
    ret = auth__principal_new(AUTH_KIND_TOKEN, sub, org, role, jti, exp, caps, out, err);
    caps = NULL;
    if (ret == RD_OK && client_id != NULL &&
        (ret = auth_principal_bind(*out, client_id, err)) != RD_OK) {
        auth_principal_free(*out);
        *out = NULL;
    }
done:
    auth_caps_free(caps);
    json_decref(claims);
    return ret;
}

rd_code auth_token_verify(const auth_config *cfg, const char *token, size_t len,
                          auth_principal **out, rd_err *err)
{
    const rd_code rc = RD_UNAUTHENTICATED;
    auth__paseto_parts parts;
    unsigned char footer[FOOTER_LEN + 3];
    unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
    unsigned char *m = NULL, *f = NULL;
    size_t m_len = 0, f_len = 0, footer_len = 0;
    rd_code ret = rc;
    *out = NULL;

    if (cfg == NULL || cfg->keyring == NULL)
        return rd_errf(err, rc, NULL, "capability tokens are not enabled");
    if (token == NULL || len == 0)
        return rd_errf(err, rc, NULL, "token is empty");
    if (len > cfg->max_token_bytes)
        return rd_errf(err, rc, NULL, "token exceeds %zu bytes", cfg->max_token_bytes);
    ret = auth__paseto_split(token, len, &parts, err);
    if (ret != RD_OK)
        return ret;
    /* The footer selects the key, so it is read before the signature is
     * checked; it is matched byte for byte, never parsed as JSON. */
    if (parts.footer == NULL)
        return rd_errf(err, rc, NULL, "token footer with a kid is required");
    if (auth__b64url_decode(parts.footer, parts.footer_len, footer, sizeof footer, &footer_len) !=
            0 ||
        footer_len != FOOTER_LEN || memcmp(footer, FOOTER_HEAD, FOOTER_HEAD_LEN) != 0 ||
        memcmp(footer + FOOTER_LEN - FOOTER_TAIL_LEN, FOOTER_TAIL, FOOTER_TAIL_LEN) != 0 ||
        memcmp(footer + FOOTER_HEAD_LEN, "k4.pid.", 7) != 0)
        return rd_errf(err, rc, NULL, "token footer must be exactly {\"kid\":\"k4.pid.…\"}");
    if (auth__keyring_lookup(cfg->keyring, (const char *)footer + FOOTER_HEAD_LEN, AUTH_KID_LEN,
                             pk) != 0)
        return rd_errf(err, rc, NULL, "token key id is not trusted");
    ret = auth__paseto_verify_parts(pk, &parts, NULL, 0, &m, &m_len, &f, &f_len, err);
    if (ret != RD_OK)
        goto done;
    ret = check_token_claims(cfg, m, m_len, out, err);
done:
    free(m);
    free(f);
    return ret;
}

/* ---- signing -------------------------------------------------------------------- */

rd_code auth__token_sign_payload(const auth_signer *s, const char *payload, size_t len,
                                 char **token_out, rd_err *err)
{
    char footer[FOOTER_LEN + 1];
    *token_out = NULL;
    if (s == NULL || payload == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "no signer or payload");
    snprintf(footer, sizeof footer, "%s%s%s", FOOTER_HEAD, s->kid, FOOTER_TAIL);
    return auth__paseto_sign(s->sk, (const unsigned char *)payload, len,
                             (const unsigned char *)footer, FOOTER_LEN, NULL, 0, token_out, err);
}

void auth_minted_clear(auth_minted *m)
{
    if (m == NULL)
        return;
    free(m->token);
    memset(m, 0, sizeof *m);
}

rd_code auth_mint(const auth_config *cfg, const auth_signer *signer, const auth_principal *caller,
                  const auth_caps *requested, int64_t requested_ttl_s, auth_minted *out,
                  auth_required *required, rd_err *err)
{
    rd_code rc;
    int64_t ttl = 0;
    json_t *claims = NULL;
    char *payload = NULL;
    char iat_s[40], exp_s[40];
    memset(out, 0, sizeof *out);
    if (cfg == NULL || signer == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "token minting is not configured");
    rc = auth_mint_check(caller, requested, requested_ttl_s, &ttl, required, err);
    if (rc != RD_OK)
        return rc;
    if (cfg->max_ttl_s > 0 && ttl > cfg->max_ttl_s)
        ttl = cfg->max_ttl_s;
    int64_t iat = config_now(cfg) / US * US;
    int64_t exp = iat + ttl * US;
    rd_random_id("tok_", out->jti, 26);
    rd_rfc3339(iat, iat_s, sizeof iat_s);
    rd_rfc3339(exp, exp_s, sizeof exp_s);
    rc = RD_INTERNAL;
    claims = json_object();
    json_t *caps = auth__caps_to_json_value(requested);
    if (claims == NULL || caps == NULL) {
        json_decref(caps);
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    if (json_object_set_new(claims, "iss", json_string(cfg->issuer)) != 0 ||
        json_object_set_new(claims, "aud", json_string(cfg->audience)) != 0 ||
        json_object_set_new(claims, "sub", json_string(caller->id)) != 0 ||
        json_object_set_new(claims, "org", json_string(caller->org)) != 0 ||
        (caller->role != NULL &&
         json_object_set_new(claims, "role", json_string(caller->role)) != 0) ||
        json_object_set_new(claims, "iat", json_string(iat_s)) != 0 ||
        json_object_set_new(claims, "exp", json_string(exp_s)) != 0 ||
        json_object_set_new(claims, "jti", json_string(out->jti)) != 0) {
        json_decref(caps);
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    if (caller->client_id != NULL &&
        json_object_set_new(claims, "cnf", json_pack("{s:s}", "client_id", caller->client_id)) !=
            0) {
        json_decref(caps);
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    if (json_object_set_new(claims, "caps", caps) != 0) { /* consumes caps */
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    payload = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (payload == NULL) {
        rd_errf(err, rc, NULL, "out of memory");
        goto done;
    }
    rc = auth__token_sign_payload(signer, payload, strlen(payload), &out->token, err);
    if (rc != RD_OK)
        goto done;
    out->issued_at_us = iat;
    out->expires_at_us = exp;
    out->ttl_s = ttl;
done:
    if (rc != RD_OK)
        auth_minted_clear(out);
    free(payload);
    json_decref(claims);
    return rc;
}
