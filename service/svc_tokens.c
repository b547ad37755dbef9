/* recordd.v1.Tokens handler: MintToken exchanges the calling API key for a
 * short-lived capability token signed with the server's key (auth_mint:
 * attenuation, TTL default and cap). The token goes into the reply straight
 * from the library's buffer, which is wiped right after the reply is
 * serialized; it is never logged or copied into the arena. */
#include <stdio.h>
#include <string.h>

#include "recordd/v1/tokens.pb-c.h"
#include "service/receipt.h"
#include "service/svc_convert.h"
#include "service/svc_handlers.h"

/* The requested capabilities as an auth_caps list. Errors:
 * RD_VALIDATION_FAILED naming caps[i].can for an unknown verb, or the
 * library's caps errors. */
static rd_code caps_from_pb(const Recordd__V1__MintTokenRequest *req, auth_caps **out, rd_err *err)
{
    auth_caps *caps = auth_caps_new();
    *out = NULL;
    if (caps == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    for (size_t i = 0; i < req->n_caps; i++) {
        const Recordd__V1__Capability *c = req->caps[i];
        unsigned verbs = 0;
        for (size_t k = 0; k < c->n_can; k++) {
            auth_verb v;
            if (auth_verb_parse(c->can[k], &v) != 0) {
                char field[48];
                snprintf(field, sizeof field, "caps[%zu].can", i);
                rd_errf(err, RD_VALIDATION_FAILED, field,
                        "%s: expected read, create, update, delete or admin", field);
                goto fail;
            }
            verbs |= (unsigned)v;
        }
        /* proto3 cannot tell an empty list from none: empty = every field */
        const char *const *fields = c->n_fields > 0 ? (const char *const *)c->fields : NULL;
        if (auth_caps_add(caps, verbs, c->model, c->group, fields, c->n_fields, err) != RD_OK)
            goto fail;
    }
    *out = caps;
    return RD_OK;
fail:
    auth_caps_free(caps);
    return err->code;
}

/* An arena cleanup: the minted token (the reply points to it) is wiped and
 * freed with the call. */
static void release_minted(void *arg)
{
    auth_minted_clear(arg);
}

void svc_mint_token(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__MintTokenRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    rd_arena *a = svc_call_arena(call);
    auth_caps *caps = NULL;
    auth_required required = {0};
    rd_err err;
    rd_err_clear(&err);
    auth_minted *minted = rd_arena_calloc(a, sizeof *minted);
    Recordd__V1__MintTokenResponse *resp = rd_arena_alloc(a, sizeof *resp);
    if (minted == NULL || resp == NULL || !rd_arena_on_release(a, release_minted, minted)) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    if (ctx->auth == NULL || ctx->signer == NULL) {
        rd_errf(&err, RD_UNAVAILABLE, NULL, "this server has no signing key");
        goto fail;
    }
    if (caps_from_pb(req, &caps, &err) != RD_OK)
        goto fail;
    if (auth_mint(ctx->auth, ctx->signer, svc_call_principal(call), caps, req->ttl_seconds, minted,
                  &required, &err) != RD_OK) {
        if (err.code == RD_PERMISSION_DENIED)
            svc_call_set_required(call, &required);
        goto fail;
    }
    recordd__v1__mint_token_response__init(resp);
    resp->token = minted->token;
    resp->jti = minted->jti;
    resp->expires_at = svc_timestamp(a, minted->expires_at_us);
    if (resp->expires_at == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    auth_caps_free(caps);
    svc_reply(call, &resp->base);
    return;
fail:
    auth_caps_free(caps);
    svc_fail(call, &err);
}
