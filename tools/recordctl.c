/* recordctl: the operator's tool for recordd's credentials (DESIGN.md §6).
 * `init` creates the database, the server's secrets and a first admin API
 * key; `key` creates, lists and revokes API keys; `token` mints (offline,
 * with the signing key), inspects and revokes capability tokens; `backup`
 * copies the database while a server runs (DESIGN.md §9). It opens
 * the database itself (store_open); SQLite's locking makes that safe while
 * a server runs on the same file, and the server sees new keys and
 * revocations on its next lookup (nothing is cached).
 *
 * Secrets are printed once (a new API key, a minted token) and otherwise
 * only written to files with mode 0600; buffers holding them are wiped. */
#include <errno.h>
#include <fcntl.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "grpc/health/v1/health.pb-c.h"
#include "recordd/v1/schema.pb-c.h"
#include "service/gw_json.h"
#include "service/config.h"
#include "service/svc_auth.h"
#include "store/store.h"

#define ADMIN_CAPS                                                                                 \
    "[{\"can\":[\"read\",\"create\",\"update\",\"delete\",\"admin\"],\"model\":\"*\",\"group\":"   \
    "\"*\"}]"

/* Options shared by every command; paths default to files under dir. */
typedef struct ctl {
    char dir[1024];
    char db[1024];
    char pepper[1024];
    char signing_key[1024];
    char trusted_keys[1024];
    const char *org, *role, *caps, *sub, *key_id, *issuer, *audience, *issued_at;
    const char *client_id; /* --bind-client */
    /* health: the server to ask and how to reach it */
    const char *addr, *service, *cacert, *cert, *key, *server_name;
    long timeout_s;
    long ttl;
    bool test_key, json;
    bool force, merge;   /* schema push */
    char key_file[1024]; /* schema: --key-file */
    const char *out;     /* backup --out */
    const char *args[4]; /* positional arguments after the command words */
    int n_args;
} ctl;

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: recordctl COMMAND [options]\n\n"
        "  init [--dir ./var] [--org NAME] [--db PATH]\n"
        "      create the database, the API-key pepper, the token signing key, the\n"
        "      trusted-keys directory and an admin API key for NAME (default 'default'),\n"
        "      printed once and saved (mode 0600) as DIR/admin.key. Keeps what exists.\n"
        "  key create --org ORG --role ROLE --caps JSON [--bind-client ID] [--test] [--json]\n"
        "      create an API key (sk_live_…, or sk_test_… with --test) and print it once;\n"
        "      --bind-client: accepted only over mutual TLS from a client certificate\n"
        "      whose URI or DNS subject alternative name is ID (tokens it mints too)\n"
        "  key list [--org ORG] [--json]\n"
        "  key revoke KEY_ID\n"
        "  token mint (--key-id ID | --org ORG --sub SUBJECT [--role ROLE]) --caps JSON\n"
        "             [--ttl SECONDS] [--issued-at RFC3339] [--bind-client ID] [--json]\n"
        "      sign a token offline with the signing key; with --key-id its caps must be\n"
        "      covered by that key's (and bound as the key is); --issued-at back-dates it\n"
        "      (tests, expiry drills)\n"
        "  token inspect TOKEN     verify with the trusted keys and print the claims\n"
        "  token revoke JTI\n"
        "  health [--addr HOST:PORT] [--service NAME] [--cacert FILE [--cert FILE --key FILE]]\n"
        "         [--server-name NAME] [--timeout SECONDS]\n"
        "      ask a running server's grpc.health.v1 Check (service '', 'readiness' or\n"
        "      'liveness'); exit 0 when SERVING. --cacert: over TLS, trusting FILE;\n"
        "      --cert/--key: the client certificate for mutual TLS; --server-name: the\n"
        "      name to verify in the server's certificate [the host of --addr]\n"
        "      (a Kubernetes exec probe over TLS: the kubelet's gRPC probe has no TLS)\n"
        "  backup --out FILE [--db PATH] [--json]\n"
        "      copy the database, also while recordd serves it, into a new FILE (never\n"
        "      overwritten): one consistent snapshot, integrity-checked and fsynced\n"
        "  schema get [--addr HOST:PORT] [--key-file FILE] [TLS options as for health]\n"
        "      print the organisation's schema as JSON, with its revision\n"
        "  schema push FILE [--force] [--merge] [--addr HOST:PORT] [--key-file FILE]\n"
        "      push the JSON schema in FILE (as schema get prints it; a \"revision\" in it\n"
        "      is refused when the schema moved on: leave it out to push over any); the\n"
        "      changes go to stderr, the schema now in force to stdout. Both send\n"
        "      RECORDD_TOKEN, else --key-file, else DIR/admin.key\n"
        "  errors [CODE]\n"
        "      the error catalogue as Markdown (docs/errors.md), or the entry of CODE\n\n"
        "Common options (each also read from its RECORDD_* variable):\n"
        "  --dir DIR             where init puts everything [./var]\n"
        "  --db PATH|URI         [DIR/recordd.db]      (RECORDD_DB; sqlite:PATH, postgres://...)\n"
        "  --pepper-file PATH    [DIR/pepper]          (RECORDD_PEPPER_FILE)\n"
        "  --signing-key PATH    [DIR/signing.key]     (RECORDD_SIGNING_KEY)\n"
        "  --trusted-keys PATH   [DIR/trusted-keys]    (RECORDD_TRUSTED_KEYS)\n"
        "  --issuer S, --audience S   token iss/aud [recordd] (RECORDD_TOKEN_ISSUER/_AUDIENCE)\n");
}

static int fail(const char *what, const rd_err *err)
{
    fprintf(stderr, "recordctl: %s: %s\n", what, err->msg);
    return 1;
}

/* ---- files -------------------------------------------------------------------- */

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Writes len bytes to a new file (never overwrites) with mode. 0 on
 * success, else -1 with errno. */
static int write_new(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            errno = e;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return -1;
    return 0;
}

/* Creates dir (and its parents) when missing; only a directory created
 * here gets mode: an existing one (a home directory, /data, a mounted
 * volume) keeps the mode its owner gave it. */
static int mkdir_p(const char *dir, mode_t mode)
{
    char buf[1024];
    struct stat sb;
    if (snprintf(buf, sizeof buf, "%s/x", dir) >= (int)sizeof buf)
        return -1;
    bool existed = stat(dir, &sb) == 0;
    rd_err err;
    if (svc_config_make_db_dir(buf, &err) != RD_OK) {
        fprintf(stderr, "recordctl: %s\n", err.msg);
        return -1;
    }
    if (!existed)
        chmod(dir, mode);
    return 0;
}

/* ---- store -------------------------------------------------------------------- */

static rd_code open_store(const ctl *c, store **out, rd_err *err)
{
    store_options so = {.path = c->db, .sync_normal = false, .max_batch = 0, .tool = true};
    const char *file = store_target_file(c->db);
    if (file != NULL && svc_config_make_db_dir(file, err) != RD_OK)
        return err->code;
    return store_open(&so, out, err);
}

/* ---- keys ----------------------------------------------------------------------- */

/* Creates an API key (org, role, caps JSON) in db; key receives the key
 * (the caller wipes it), id its id. */
static rd_code create_key(const ctl *c, store *db, const char *org, const char *role,
                          const char *caps_json, bool test, char key[AUTH_APIKEY_LEN + 1],
                          char id[32], rd_err *err)
{
    unsigned char *pepper = sodium_malloc(AUTH_PEPPER_BYTES);
    unsigned char hash[AUTH_APIKEY_HASH_BYTES];
    auth_caps *caps = NULL;
    char *canon = NULL;
    rd_code code;
    if (pepper == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    if (c->client_id != NULL && !auth_client_id_ok(c->client_id)) {
        code = rd_errf(err, RD_VALIDATION_FAILED, "bind-client",
                       "--bind-client: 1 to %d printable characters without spaces (a URI or "
                       "DNS name of the client certificate)",
                       AUTH_CLIENT_ID_MAX);
        goto done;
    }
    code = auth_caps_from_json(caps_json, strlen(caps_json), &caps, err);
    if (code != RD_OK)
        goto done;
    if (auth_caps_count(caps) == 0) {
        code = rd_errf(err, RD_VALIDATION_FAILED, "caps", "--caps: at least one capability");
        goto done;
    }
    canon = auth_caps_to_json(caps);
    if (canon == NULL) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    code = svc_pepper_load(c->pepper, pepper, err);
    if (code != RD_OK)
        goto done;
    code = auth_apikey_generate(test ? AUTH_KEY_TEST : AUTH_KEY_LIVE, key, err);
    if (code == RD_OK)
        code = auth_apikey_hash(pepper, key, AUTH_APIKEY_LEN, hash, err);
    if (code != RD_OK)
        goto done;
    rd_random_id("key_", id, 20);
    code = store_key_insert(db, id, hash, org, role, canon, c->client_id, err);
done:
    if (code != RD_OK)
        sodium_memzero(key, AUTH_APIKEY_LEN + 1);
    sodium_memzero(hash, sizeof hash);
    sodium_free(pepper);
    free(canon);
    auth_caps_free(caps);
    return code;
}

static int cmd_key_create(const ctl *c)
{
    store *db = NULL;
    char key[AUTH_APIKEY_LEN + 1] = {0}, id[32];
    rd_err err;
    if (c->org == NULL || c->role == NULL || c->caps == NULL) {
        fprintf(stderr, "recordctl: key create needs --org, --role and --caps\n");
        return 2;
    }
    if (open_store(c, &db, &err) != RD_OK)
        return fail("cannot open the database", &err);
    rd_code code = create_key(c, db, c->org, c->role, c->caps, c->test_key, key, id, &err);
    store_close(db);
    if (code != RD_OK)
        return fail("cannot create the key", &err);
    if (c->json)
        printf("{\"key_id\":\"%s\",\"org\":\"%s\",\"role\":\"%s\",\"key\":\"%s\"}\n", id, c->org,
               c->role, key);
    else
        printf("%s\n", key);
    fflush(stdout);
    sodium_memzero(key, sizeof key);
    fprintf(stderr, "created API key %s (org %s, role %s); it is shown only once\n", id, c->org,
            c->role);
    return 0;
}

static int cmd_key_list(const ctl *c)
{
    store *db = NULL;
    store_conn *conn = NULL;
    store_api_key *keys = NULL;
    size_t n = 0;
    rd_err err;
    int rc = 1;
    if (open_store(c, &db, &err) != RD_OK)
        return fail("cannot open the database", &err);
    if (store_conn_open(db, &conn, &err) != RD_OK ||
        store_key_list(conn, c->org, &keys, &n, &err) != RD_OK) {
        fail("cannot list keys", &err);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char created[40], revoked[40] = "-";
        rd_rfc3339(keys[i].created_at_us - keys[i].created_at_us % 1000000, created,
                   sizeof created);
        if (keys[i].revoked_at_us != 0)
            rd_rfc3339(keys[i].revoked_at_us - keys[i].revoked_at_us % 1000000, revoked,
                       sizeof revoked);
        if (c->json) {
            json_t *caps = json_loads(keys[i].caps, 0, NULL);
            json_t *o =
                json_pack("{s:s,s:s,s:s,s:o*,s:s,s:s?,s:s?}", "key_id", keys[i].key_id, "org",
                          keys[i].org, "role", keys[i].role, "caps", caps, "created_at", created,
                          "revoked_at", keys[i].revoked_at_us ? revoked : NULL, "client_id",
                          keys[i].client_id[0] ? keys[i].client_id : NULL);
            char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (s != NULL)
                printf("%s\n", s);
            free(s);
            json_decref(o);
        } else {
            printf("%s  org=%s  role=%s  created=%s  revoked=%s  client=%s  caps=%s\n",
                   keys[i].key_id, keys[i].org, keys[i].role, created, revoked,
                   keys[i].client_id[0] ? keys[i].client_id : "-", keys[i].caps);
        }
    }
    rc = 0;
done:
    store_api_keys_free(keys, n);
    if (conn != NULL)
        store_conn_close(conn);
    store_close(db);
    return rc;
}

static int cmd_key_revoke(const ctl *c)
{
    store *db = NULL;
    rd_err err;
    if (c->n_args != 1) {
        fprintf(stderr, "recordctl: key revoke KEY_ID\n");
        return 2;
    }
    if (open_store(c, &db, &err) != RD_OK)
        return fail("cannot open the database", &err);
    rd_code code = store_key_revoke(db, c->args[0], &err);
    store_close(db);
    if (code != RD_OK)
        return fail("cannot revoke the key", &err);
    fprintf(stderr, "revoked API key %s (and every token it minted)\n", c->args[0]);
    return 0;
}

/* ---- tokens ------------------------------------------------------------------- */

static void auth_cfg(const ctl *c, auth_config *cfg)
{
    auth_config_init(cfg);
    if (c->issuer != NULL)
        cfg->issuer = c->issuer;
    if (c->audience != NULL)
        cfg->audience = c->audience;
}

/* The minting principal: the stored key --key-id (must be live), or an
 * ad-hoc one for --org/--sub holding exactly the requested caps. */
static rd_code mint_principal(const ctl *c, const auth_caps *requested, auth_principal **out,
                              rd_err *err)
{
    store *db = NULL;
    store_conn *conn = NULL;
    store_api_key *keys = NULL;
    size_t n = 0;
    auth_caps *caps = NULL;
    rd_code code;
    if (c->key_id == NULL) {
        if (c->org == NULL || c->sub == NULL)
            return rd_errf(err, RD_VALIDATION_FAILED, NULL,
                           "token mint needs --key-id, or --org and --sub");
        code = auth_principal_new_api_key(c->sub, c->org, c->role, requested, out, err);
        if (code == RD_OK && c->client_id != NULL &&
            (code = auth_principal_bind(*out, c->client_id, err)) != RD_OK) {
            auth_principal_free(*out);
            *out = NULL;
        }
        return code;
    }
    if (c->client_id != NULL)
        return rd_errf(err, RD_VALIDATION_FAILED, "bind-client",
                       "--bind-client goes with --org/--sub; a token of --key-id is bound as "
                       "its key is");
    code = open_store(c, &db, err);
    if (code != RD_OK)
        return code;
    code = store_conn_open(db, &conn, err);
    if (code == RD_OK)
        code = store_key_list(conn, NULL, &keys, &n, err);
    if (code != RD_OK)
        goto done;
    code = rd_errf(err, RD_NOT_FOUND, "key-id", "no such key");
    for (size_t i = 0; i < n; i++) {
        if (strcmp(keys[i].key_id, c->key_id) != 0)
            continue;
        if (keys[i].revoked_at_us != 0) {
            code = rd_errf(err, RD_PERMISSION_DENIED, "key-id", "the key is revoked");
            break;
        }
        code = auth_caps_from_json(keys[i].caps, strlen(keys[i].caps), &caps, err);
        if (code == RD_OK)
            code = auth_principal_new_api_key(keys[i].key_id, keys[i].org, keys[i].role, caps, out,
                                              err);
        if (code == RD_OK && keys[i].client_id[0] != '\0' &&
            (code = auth_principal_bind(*out, keys[i].client_id, err)) != RD_OK) {
            auth_principal_free(*out);
            *out = NULL;
        }
        break;
    }
done:
    auth_caps_free(caps);
    store_api_keys_free(keys, n);
    if (conn != NULL)
        store_conn_close(conn);
    if (db != NULL)
        store_close(db);
    return code;
}

static int cmd_token_mint(const ctl *c)
{
    auth_caps *caps = NULL;
    auth_principal *p = NULL;
    auth_signer *signer = NULL;
    auth_minted minted;
    auth_required req = {0};
    auth_config cfg;
    rd_err err;
    int rc = 1;
    memset(&minted, 0, sizeof minted);
    if (c->caps == NULL) {
        fprintf(stderr, "recordctl: token mint needs --caps\n");
        return 2;
    }
    auth_cfg(c, &cfg);
    if (c->issued_at != NULL && rd_parse_rfc3339(c->issued_at, &cfg.now_us) != 0) {
        fprintf(stderr, "recordctl: --issued-at: expected an RFC 3339 time\n");
        return 2;
    }
    if (auth_caps_from_json(c->caps, strlen(c->caps), &caps, &err) != RD_OK) {
        fail("--caps", &err);
        goto done;
    }
    if (mint_principal(c, caps, &p, &err) != RD_OK) {
        fail("cannot mint", &err);
        goto done;
    }
    if (auth_signer_load(c->signing_key, &signer, &err) != RD_OK) {
        fail(c->signing_key, &err);
        goto done;
    }
    if (auth_mint(&cfg, signer, p, caps, c->ttl, &minted, &req, &err) != RD_OK) {
        if (req.can != 0)
            fprintf(stderr, "recordctl: the key lacks %s on model %s, group %s%s%s\n",
                    auth_verb_str(req.can), req.model, req.group, req.field ? ", field " : "",
                    req.field ? req.field : "");
        fail("cannot mint", &err);
        goto done;
    }
    if (c->json) {
        char exp[40];
        rd_rfc3339(minted.expires_at_us, exp, sizeof exp);
        printf("{\"token\":\"%s\",\"jti\":\"%s\",\"expires_at\":\"%s\"}\n", minted.token,
               minted.jti, exp);
    } else {
        printf("%s\n", minted.token);
    }
    fflush(stdout);
    fprintf(stderr, "minted token %s for %s (org %s), valid %lld s\n", minted.jti,
            auth_principal_id(p), auth_principal_org(p), (long long)minted.ttl_s);
    rc = 0;
done:
    auth_minted_clear(&minted);
    auth_signer_free(signer);
    auth_principal_free(p);
    auth_caps_free(caps);
    return rc;
}

static int cmd_token_inspect(const ctl *c)
{
    auth_keyring *kr = auth_keyring_new();
    auth_signer *signer = NULL;
    auth_principal *p = NULL;
    auth_config cfg;
    rd_err err;
    int rc = 1;
    if (c->n_args != 1) {
        fprintf(stderr, "recordctl: token inspect TOKEN\n");
        auth_keyring_free(kr);
        return 2;
    }
    const char *tok = c->args[0];
    auth_cfg(c, &cfg);
    cfg.keyring = kr;
    if (kr == NULL)
        goto done;
    if (exists(c->trusted_keys) && auth_keyring_load(kr, c->trusted_keys, &err) != RD_OK) {
        fail("--trusted-keys", &err);
        goto done;
    }
    if (exists(c->signing_key) && auth_signer_load(c->signing_key, &signer, &err) == RD_OK) {
        unsigned char pk[AUTH_PUBLIC_KEY_BYTES];
        auth_signer_public_key(signer, pk);
        auth_keyring_add(kr, pk, NULL, &err);
    }
    if (auth_token_verify(&cfg, tok, strlen(tok), &p, &err) != RD_OK) {
        fail("token rejected", &err);
        goto done;
    }
    /* verified: the payload is the body minus the 64-byte signature */
    const char *body = tok + strlen("v4.public.");
    const char *dot = strchr(body, '.');
    size_t cap = strlen(body), len = 0;
    unsigned char *m = malloc(cap + 1);
    if (m == NULL || dot == NULL ||
        sodium_base642bin(m, cap, body, (size_t)(dot - body), NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len < 64) {
        free(m);
        fprintf(stderr, "recordctl: cannot decode the verified token\n");
        goto done;
    }
    json_t *claims = json_loadb((const char *)m, len - 64, 0, NULL);
    free(m);
    char *s = claims ? json_dumps(claims, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    if (s != NULL)
        printf("%s\n", s);
    free(s);
    json_decref(claims);
    rc = 0;
done:
    auth_principal_free(p);
    auth_signer_free(signer);
    auth_keyring_free(kr);
    return rc;
}

static int cmd_token_revoke(const ctl *c)
{
    store *db = NULL;
    rd_err err;
    if (c->n_args != 1) {
        fprintf(stderr, "recordctl: token revoke JTI\n");
        return 2;
    }
    if (open_store(c, &db, &err) != RD_OK)
        return fail("cannot open the database", &err);
    rd_code code = store_token_revoke(db, c->args[0], &err);
    store_close(db);
    if (code != RD_OK)
        return fail("cannot revoke the token", &err);
    fprintf(stderr, "revoked token %s\n", c->args[0]);
    return 0;
}

/* ---- init --------------------------------------------------------------------- */

static int init_pepper(const ctl *c)
{
    unsigned char raw[AUTH_PEPPER_BYTES];
    char hex[2 * AUTH_PEPPER_BYTES + 2];
    if (exists(c->pepper)) {
        fprintf(stderr, "kept the existing pepper %s\n", c->pepper);
        return 0;
    }
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    size_t n = strlen(hex);
    hex[n++] = '\n';
    int rc = write_new(c->pepper, hex, n, 0600);
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(hex, sizeof hex);
    if (rc != 0) {
        fprintf(stderr, "recordctl: cannot write %s: %s\n", c->pepper, strerror(errno));
        return 1;
    }
    fprintf(stderr, "created the API-key pepper %s\n", c->pepper);
    return 0;
}

/* The signing key (created when missing) and its public key in the
 * trusted-keys directory as <kid>.pub. */
static int init_signing_key(const ctl *c)
{
    auth_signer *s = NULL;
    rd_err err;
    int rc = 1;
    char secret[AUTH_PASERK_SECRET_LEN + 2];
    if (exists(c->signing_key)) {
        if (auth_signer_load(c->signing_key, &s, &err) != RD_OK)
            return fail(c->signing_key, &err);
        fprintf(stderr, "kept the existing signing key %s (%s)\n", c->signing_key,
                auth_signer_kid(s));
    } else {
        if (auth_signer_generate(&s, &err) != RD_OK ||
            auth_signer_export_secret(s, secret, sizeof secret, &err) != RD_OK) {
            auth_signer_free(s);
            return fail("cannot create the signing key", &err);
        }
        size_t n = strlen(secret);
        secret[n++] = '\n';
        int w = write_new(c->signing_key, secret, n, 0600);
        sodium_memzero(secret, sizeof secret);
        if (w != 0) {
            fprintf(stderr, "recordctl: cannot write %s: %s\n", c->signing_key, strerror(errno));
            goto done;
        }
        fprintf(stderr, "created the token signing key %s (%s)\n", c->signing_key,
                auth_signer_kid(s));
    }
    struct stat st;
    if (stat(c->trusted_keys, &st) == 0 && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s is a file: add the signing key's public key to it yourself\n",
                c->trusted_keys);
        rc = 0;
        goto done;
    }
    if (mkdir_p(c->trusted_keys, 0755) != 0)
        goto done;
    char path[1200], line[AUTH_PASERK_PUBLIC_LEN + 2];
    snprintf(path, sizeof path, "%s/%s.pub", c->trusted_keys, auth_signer_kid(s));
    if (!exists(path)) {
        auth_signer_public_paserk(s, line);
        strcat(line, "\n");
        if (write_new(path, line, strlen(line), 0644) != 0) {
            fprintf(stderr, "recordctl: cannot write %s: %s\n", path, strerror(errno));
            goto done;
        }
        fprintf(stderr, "trusted the signing key's public key in %s\n", path);
    }
    rc = 0;
done:
    auth_signer_free(s);
    return rc;
}

static int cmd_init(const ctl *c)
{
    store *db = NULL;
    rd_err err;
    char key[AUTH_APIKEY_LEN + 1] = {0}, id[32], path[1100];
    const char *org = c->org ? c->org : "default";
    int rc = 1;
    if (mkdir_p(c->dir, 0700) != 0)
        return 1;
    if (open_store(c, &db, &err) != RD_OK)
        return fail("cannot open the database", &err);
    if (init_pepper(c) != 0 || init_signing_key(c) != 0)
        goto done;
    snprintf(path, sizeof path, "%s/admin.key", c->dir);
    if (exists(path)) {
        fprintf(stderr, "already initialised: kept %s (the admin key is not shown again)\n", path);
        rc = 0;
        goto done;
    }
    if (create_key(c, db, org, "admin", ADMIN_CAPS, false, key, id, &err) != RD_OK) {
        fail("cannot create the admin key", &err);
        goto done;
    }
    char line[AUTH_APIKEY_LEN + 2];
    snprintf(line, sizeof line, "%s\n", key);
    int w = write_new(path, line, strlen(line), 0600);
    sodium_memzero(line, sizeof line);
    if (w != 0) {
        fprintf(stderr, "recordctl: cannot write %s: %s\n", path, strerror(errno));
        goto done;
    }
    printf("%s\n", key);
    fflush(stdout);
    fprintf(stderr,
            "created organisation %s and its admin API key %s (saved as %s, mode 0600).\n"
            "It is printed above once; use it as: authorization: Bearer <key>\n",
            org, id, path);
    rc = 0;
done:
    sodium_memzero(key, sizeof key);
    store_close(db);
    return rc;
}

/* ---- backup ------------------------------------------------------------------------- */

static int cmd_backup(const ctl *c)
{
    rd_err err;
    int64_t pages = 0;
    if (c->out == NULL || c->out[0] == '\0') {
        fprintf(stderr, "recordctl: backup needs --out FILE\n");
        return 2;
    }
    const char *file = store_target_file(c->db);
    if (file == NULL) {
        fprintf(stderr, "recordctl: backup copies a SQLite database; for PostgreSQL use its own "
                        "tools: pg_dump (a logical copy) or pg_basebackup (a physical one)\n");
        return 2;
    }
    int64_t t0 = rd_now_us();
    if (store_backup(file, c->out, &pages, &err) != RD_OK)
        return fail("backup failed", &err);
    int64_t ms = (rd_now_us() - t0) / 1000;
    if (c->json) {
        json_t *o = json_pack("{s:s,s:s,s:I,s:I}", "db", file, "out", c->out, "pages",
                              (json_int_t)pages, "ms", (json_int_t)ms);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(o);
    } else {
        fprintf(stderr, "backed up %s to %s (%lld pages, %lld ms, integrity ok)\n", file, c->out,
                (long long)pages, (long long)ms);
    }
    return 0;
}

/* ---- arguments ------------------------------------------------------------------ */

/* Reads a whole (small) file into a new NUL-terminated buffer. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = cap <= (1 << 20) ? realloc(buf, cap) : NULL;
            if (grown == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096)
            break;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* One grpc.health.v1.Health/Check call: 0 when SERVING, 1 otherwise (the
 * status or the error on stderr), 2 on bad options. */
/* A call's answer: the gRPC status and message, and on OK the reply's
 * bytes (malloc'd). */
typedef struct answer {
    grpc_status_code status;
    char msg[512];
    uint8_t *reply;
    size_t reply_len;
} answer;

/* One unary call of method (request req) on the server c names (--addr,
 * TLS with --cacert/--cert/--key, --server-name, --timeout), sending
 * `authorization: Bearer <bearer>` when bearer is not NULL. 0, or 2 when
 * a file cannot be read (said on stderr). */
static int unary_call(const ctl *c, const char *what, const char *method,
                      const ProtobufCMessage *req, const char *bearer, answer *out)
{
    const char *addr = c->addr ? c->addr : "127.0.0.1:50051";
    memset(out, 0, sizeof *out);
    out->status = GRPC_STATUS_UNKNOWN;
    if ((c->cert == NULL) != (c->key == NULL) || (c->cert != NULL && c->cacert == NULL)) {
        fprintf(stderr, "recordctl: %s: --cert and --key go together, with --cacert\n", what);
        return 2;
    }
    char *pem[3] = {NULL, NULL, NULL};
    const char *paths[3] = {c->cacert, c->cert, c->key};
    for (int i = 0; i < 3; i++)
        if (paths[i] != NULL && (pem[i] = read_text(paths[i])) == NULL) {
            fprintf(stderr, "recordctl: %s: cannot read %s: %s\n", what, paths[i], strerror(errno));
            for (int j = 0; j < i; j++)
                free(pem[j]);
            return 2;
        }
    grpc_init();
    grpc_channel_credentials *creds;
    if (pem[0] != NULL) {
        grpc_ssl_pem_key_cert_pair pair = {pem[2], pem[1]};
        creds = grpc_ssl_credentials_create(pem[0], pem[1] ? &pair : NULL, NULL, NULL);
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_arg arg = {.type = GRPC_ARG_STRING,
                    .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                    .value.string = (char *)c->server_name};
    grpc_channel_args args = {c->server_name ? 1 : 0, &arg};
    grpc_channel *ch = grpc_channel_create(addr, creds, &args);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                     gpr_time_from_seconds(c->timeout_s > 0 ? c->timeout_s : 5, GPR_TIMESPAN));
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                 grpc_slice_from_static_string(method), NULL, deadline, NULL);
    size_t packed_len = protobuf_c_message_get_packed_size(req);
    grpc_slice body = grpc_slice_malloc(packed_len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_slice details = grpc_empty_slice();
    char *auth = NULL;
    grpc_metadata md;
    memset(&md, 0, sizeof md);
    if (bearer != NULL && (auth = malloc(strlen(bearer) + 8)) != NULL) {
        sprintf(auth, "Bearer %s", bearer);
        md.key = grpc_slice_from_static_string("authorization");
        md.value = grpc_slice_from_static_string(auth);
    }
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = auth != NULL ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = auth != NULL ? &md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &out->status;
    ops[5].data.recv_status_on_client.status_details = &details;
    if (grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    char *m = grpc_slice_to_c_string(details);
    snprintf(out->msg, sizeof out->msg, "%s", m);
    gpr_free(m);
    if (out->status == GRPC_STATUS_OK && recv != NULL) {
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        out->reply_len = GRPC_SLICE_LENGTH(all);
        out->reply = malloc(out->reply_len ? out->reply_len : 1);
        if (out->reply != NULL)
            memcpy(out->reply, GRPC_SLICE_START_PTR(all), out->reply_len);
        grpc_slice_unref(all);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_byte_buffer_destroy(send);
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    if (auth != NULL) {
        sodium_memzero(auth, strlen(auth));
        free(auth);
    }
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    for (int i = 0; i < 3; i++) {
        if (pem[i] != NULL)
            sodium_memzero(pem[i], strlen(pem[i]));
        free(pem[i]);
    }
    return 0;
}

static int cmd_health(const ctl *c)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(c->service ? c->service : "");
    answer a;
    if (strlen(req.service) > 256) {
        fprintf(stderr, "recordctl: health: --service is too long\n");
        return 2;
    }
    int rc = unary_call(c, "health", "/grpc.health.v1.Health/Check", &req.base, NULL, &a);
    if (rc != 0)
        return rc;
    if (a.status != GRPC_STATUS_OK) {
        fprintf(stderr, "recordctl: health: %s: status %d: %s\n",
                c->addr ? c->addr : "127.0.0.1:50051", (int)a.status, a.msg);
        return 1;
    }
    Grpc__Health__V1__HealthCheckResponse *resp =
        grpc__health__v1__health_check_response__unpack(NULL, a.reply_len, a.reply);
    free(a.reply);
    const char *name =
        resp == NULL ? "malformed reply"
        : resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
            ? "SERVING"
        : resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
            ? "NOT_SERVING"
            : "UNKNOWN";
    printf("%s\n", name);
    if (resp != NULL)
        grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    return strcmp(name, "SERVING") == 0 ? 0 : 1;
}

/* The API key or token schema commands send: RECORDD_TOKEN, else the file
 * --key-file names, else DIR/admin.key (what init saved). malloc'd; NULL
 * (said on stderr) when none can be read. */
static char *bearer_of(const ctl *c)
{
    const char *env = getenv("RECORDD_TOKEN");
    if (env != NULL && env[0] != '\0')
        return strdup(env);
    char path[1100];
    snprintf(path, sizeof path, "%s", c->key_file);
    if (path[0] == '\0')
        snprintf(path, sizeof path, "%s/admin.key", c->dir[0] ? c->dir : "./var");
    char *text = read_text(path);
    if (text == NULL) {
        fprintf(stderr,
                "recordctl: no credential: set RECORDD_TOKEN or --key-file (cannot read %s: %s)\n",
                path, strerror(errno));
        return NULL;
    }
    text[strcspn(text, "\r\n")] = '\0';
    return text;
}

/* schema get: the organisation's schema as JSON (with its revision, which
 * a later push of the file then expects). schema push FILE [--force]
 * [--merge]: pushes the JSON schema document in FILE (as get writes it;
 * a "revision" in it guards against a concurrent edit: leave it out to push
 * over whatever is current) and prints the changes. */
static int cmd_schema(const ctl *c, const char *sub)
{
    bool get = strcmp(sub, "get") == 0;
    if ((get && c->n_args != 0) || (!get && c->n_args != 1)) {
        fprintf(stderr, "recordctl: schema get | schema push FILE\n");
        return 2;
    }
    char *bearer = bearer_of(c);
    if (bearer == NULL)
        return 1;
    rd_arena *a = rd_arena_new((size_t)64 << 20);
    answer ans = {0};
    int rc = 1;
    rd_err err;
    rd_err_clear(&err);
    if (a == NULL)
        goto done;
    if (get) {
        Recordd__V1__GetSchemaRequest req = RECORDD__V1__GET_SCHEMA_REQUEST__INIT;
        if ((rc = unary_call(c, "schema get", "/recordd.v1.Schemas/GetSchema", &req.base, bearer,
                             &ans)) != 0)
            goto done;
    } else {
        char *text = read_text(c->args[0]);
        json_t *doc = NULL;
        ProtobufCMessage *schema = NULL;
        if (text == NULL) {
            fprintf(stderr, "recordctl: schema push: cannot read %s: %s\n", c->args[0],
                    strerror(errno));
            rc = 2;
            goto done;
        }
        rd_code code = gw_json_parse(text, strlen(text), &doc, &err);
        free(text);
        if (code == RD_OK)
            code = gw_json_decode(&recordd__v1__schema__descriptor, doc, a, &schema, &err);
        json_decref(doc);
        if (code != RD_OK) {
            fprintf(stderr, "recordctl: schema push: %s: %s\n", c->args[0], err.msg);
            rc = 2;
            goto done;
        }
        Recordd__V1__PushSchemaRequest req = RECORDD__V1__PUSH_SCHEMA_REQUEST__INIT;
        req.schema = (Recordd__V1__Schema *)schema;
        req.force = c->force;
        req.merge = c->merge;
        if ((rc = unary_call(c, "schema push", "/recordd.v1.Schemas/PushSchema", &req.base, bearer,
                             &ans)) != 0)
            goto done;
    }
    rc = 1;
    if (ans.status != GRPC_STATUS_OK) {
        fprintf(stderr, "recordctl: schema %s: status %d: %s\n", sub, (int)ans.status, ans.msg);
        goto done;
    }
    const ProtobufCMessageDescriptor *d =
        get ? &recordd__v1__schema__descriptor : &recordd__v1__push_schema_response__descriptor;
    ProtobufCMessage *reply = protobuf_c_message_unpack(d, NULL, ans.reply_len, ans.reply);
    if (reply == NULL) {
        fprintf(stderr, "recordctl: schema %s: malformed reply\n", sub);
        goto done;
    }
    const ProtobufCMessage *shown = reply;
    if (!get) { /* the changes on stderr, the schema now in force on stdout */
        const Recordd__V1__PushSchemaResponse *pr = (const void *)reply;
        for (size_t i = 0; i < pr->n_changes; i++)
            fprintf(stderr, "%s\n", pr->changes[i]);
        if (pr->n_changes == 0)
            fprintf(stderr, "no change\n");
        shown = &pr->schema->base;
    }
    char *out = shown != NULL ? gw_json_encode_text(shown, NULL) : NULL;
    if (out != NULL) {
        printf("%s\n", out);
        rc = 0;
    }
    free(out);
    protobuf_c_message_free_unpacked(reply, NULL);
done:
    free(ans.reply);
    rd_arena_free(a);
    sodium_memzero(bearer, strlen(bearer));
    free(bearer);
    return rc;
}

static void path_default(char *dst, size_t cap, const char *env, const char *dir, const char *name)
{
    if (dst[0] != '\0')
        return;
    const char *v = getenv(env);
    if (v != NULL && v[0] != '\0')
        snprintf(dst, cap, "%s", v);
    else
        snprintf(dst, cap, "%s/%s", dir, name);
}

/* Parses argv from index i on into c. 0 on success, 2 on a usage error. */
static int parse(int argc, char **argv, int i, ctl *c)
{
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (c->n_args >= 4)
                return 2;
            c->args[c->n_args++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
#define IS(s) (nl == strlen(s) && strncmp(name, s, nl) == 0)
        if (IS("test")) {
            c->test_key = true;
            continue;
        }
        if (IS("json")) {
            c->json = true;
            continue;
        }
        if (IS("force") || IS("merge")) {
            *(IS("force") ? &c->force : &c->merge) = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (v == NULL) {
            fprintf(stderr, "recordctl: %s needs a value\n", a);
            return 2;
        }
        if (IS("dir"))
            snprintf(c->dir, sizeof c->dir, "%s", v);
        else if (IS("db"))
            snprintf(c->db, sizeof c->db, "%s", v);
        else if (IS("pepper-file"))
            snprintf(c->pepper, sizeof c->pepper, "%s", v);
        else if (IS("signing-key"))
            snprintf(c->signing_key, sizeof c->signing_key, "%s", v);
        else if (IS("trusted-keys"))
            snprintf(c->trusted_keys, sizeof c->trusted_keys, "%s", v);
        else if (IS("org"))
            c->org = v;
        else if (IS("role"))
            c->role = v;
        else if (IS("caps"))
            c->caps = v;
        else if (IS("sub"))
            c->sub = v;
        else if (IS("key-id"))
            c->key_id = v;
        else if (IS("bind-client"))
            c->client_id = v;
        else if (IS("addr"))
            c->addr = v;
        else if (IS("service"))
            c->service = v;
        else if (IS("cacert"))
            c->cacert = v;
        else if (IS("cert"))
            c->cert = v;
        else if (IS("key"))
            c->key = v;
        else if (IS("server-name"))
            c->server_name = v;
        else if (IS("key-file"))
            snprintf(c->key_file, sizeof c->key_file, "%s", v);
        else if (IS("timeout")) {
            char *end;
            c->timeout_s = strtol(v, &end, 10);
            if (*end != '\0' || end == v || c->timeout_s <= 0 || c->timeout_s > 3600) {
                fprintf(stderr, "recordctl: --timeout: expected seconds from 1 to 3600\n");
                return 2;
            }
        } else if (IS("issuer"))
            c->issuer = v;
        else if (IS("audience"))
            c->audience = v;
        else if (IS("issued-at"))
            c->issued_at = v;
        else if (IS("out"))
            c->out = v;
        else if (IS("ttl")) {
            char *end;
            c->ttl = strtol(v, &end, 10);
            if (*end != '\0' || end == v || c->ttl < 0) {
                fprintf(stderr, "recordctl: --ttl: expected seconds\n");
                return 2;
            }
        } else {
            fprintf(stderr, "recordctl: unknown option %s\n", a);
            return 2;
        }
#undef IS
    }
    if (c->dir[0] == '\0')
        snprintf(c->dir, sizeof c->dir, "./var");
    path_default(c->db, sizeof c->db, "RECORDD_DB", c->dir, "recordd.db");
    path_default(c->pepper, sizeof c->pepper, "RECORDD_PEPPER_FILE", c->dir, "pepper");
    path_default(c->signing_key, sizeof c->signing_key, "RECORDD_SIGNING_KEY", c->dir,
                 "signing.key");
    path_default(c->trusted_keys, sizeof c->trusted_keys, "RECORDD_TRUSTED_KEYS", c->dir,
                 "trusted-keys");
    if (c->issuer == NULL && getenv("RECORDD_TOKEN_ISSUER") != NULL)
        c->issuer = getenv("RECORDD_TOKEN_ISSUER");
    if (c->audience == NULL && getenv("RECORDD_TOKEN_AUDIENCE") != NULL)
        c->audience = getenv("RECORDD_TOKEN_AUDIENCE");
    return 0;
}

/* The error catalogue, or one entry (rd_code_catalogue_md, common/rd.h). */
static int cmd_errors(const ctl *c)
{
    if (c->n_args == 0) {
        char *md = rd_code_catalogue_md();
        if (md == NULL)
            return 1;
        fputs(md, stdout);
        free(md);
        return 0;
    }
    rd_code code = rd_code_from_str(c->args[0]);
    if (c->n_args != 1 || strcmp(rd_code_str(code), c->args[0]) != 0) {
        fprintf(stderr, "recordctl: errors: no code '%s' (recordctl errors lists them)\n",
                c->args[0]);
        return 1;
    }
    char buf[4096];
    rd_code_entry_md(code, buf, sizeof buf);
    fputs(buf, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    ctl c;
    memset(&c, 0, sizeof c);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "recordctl: libsodium failed to initialise\n");
        return 1;
    }
    const char *cmd = argv[1];
    const char *sub = argc > 2 ? argv[2] : "";
    bool two = strcmp(cmd, "key") == 0 || strcmp(cmd, "token") == 0 || strcmp(cmd, "schema") == 0;
    if (parse(argc, argv, two ? 3 : 2, &c) != 0) {
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) /* the --db password, out of ps's sight */
        store_target_scrub(argv[i]);
    if (strcmp(cmd, "init") == 0 && c.n_args == 0)
        return cmd_init(&c);
    if (strcmp(cmd, "backup") == 0 && c.n_args == 0)
        return cmd_backup(&c);
    if (strcmp(cmd, "health") == 0 && c.n_args == 0)
        return cmd_health(&c);
    if (strcmp(cmd, "errors") == 0)
        return cmd_errors(&c);
    if (strcmp(cmd, "schema") == 0 && (strcmp(sub, "get") == 0 || strcmp(sub, "push") == 0))
        return cmd_schema(&c, sub);
    if (strcmp(cmd, "key") == 0 && strcmp(sub, "create") == 0)
        return cmd_key_create(&c);
    if (strcmp(cmd, "key") == 0 && strcmp(sub, "list") == 0)
        return cmd_key_list(&c);
    if (strcmp(cmd, "key") == 0 && strcmp(sub, "revoke") == 0)
        return cmd_key_revoke(&c);
    if (strcmp(cmd, "token") == 0 && strcmp(sub, "mint") == 0)
        return cmd_token_mint(&c);
    if (strcmp(cmd, "token") == 0 && strcmp(sub, "inspect") == 0)
        return cmd_token_inspect(&c);
    if (strcmp(cmd, "token") == 0 && strcmp(sub, "revoke") == 0)
        return cmd_token_revoke(&c);
    usage(stderr);
    return 2;
}
