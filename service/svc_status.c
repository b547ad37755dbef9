/* svc_status: an outcome as google.rpc.Status details (svc_status.h). */
#include "service/svc_status.h"

#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#define TYPE_URL_PREFIX "type.googleapis.com/"

Google__Protobuf__Any *svc_status_any(rd_arena *a, const ProtobufCMessage *msg)
{
    Google__Protobuf__Any *any = rd_arena_alloc(a, sizeof *any);
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = rd_arena_alloc(a, len ? len : 1);
    if (any == NULL || buf == NULL)
        return NULL;
    google__protobuf__any__init(any);
    protobuf_c_message_pack(msg, buf);
    any->type_url = rd_arena_printf(a, TYPE_URL_PREFIX "%s", msg->descriptor->name);
    any->value.data = buf;
    any->value.len = len;
    return any->type_url ? any : NULL;
}

/* ErrorInfo: the code, the field, the capability, the outcome's extras. */
static Google__Protobuf__Any *error_info(rd_arena *a, const svc_outcome *o)
{
    Google__Rpc__ErrorInfo info = GOOGLE__RPC__ERROR_INFO__INIT;
    size_t cap = 4 + o->n_info;
    Google__Rpc__ErrorInfo__MetadataEntry *ents = rd_arena_alloc(a, cap * sizeof *ents);
    Google__Rpc__ErrorInfo__MetadataEntry **md = rd_arena_alloc(a, cap * sizeof *md);
    if (ents == NULL || md == NULL)
        return NULL;
    info.reason = (char *)rd_code_str(o->err.code);
    info.domain = "recordd";
    info.metadata = md;
    const char *keys[4] = {"field", "can", "model", "sync_group"};
    const char *vals[4] = {o->err.field[0] != '\0' ? o->err.field : NULL, o->can, o->model,
                           o->group};
    if (o->can == NULL)
        vals[2] = vals[3] = NULL;
    for (size_t i = 0; i < 4 + o->n_info; i++) {
        const char *k = i < 4 ? keys[i] : o->info[i - 4].key;
        const char *v = i < 4 ? vals[i] : o->info[i - 4].value;
        if (k == NULL || v == NULL)
            continue;
        google__rpc__error_info__metadata_entry__init(&ents[info.n_metadata]);
        ents[info.n_metadata].key = (char *)k;
        ents[info.n_metadata].value = (char *)v;
        md[info.n_metadata] = &ents[info.n_metadata];
        info.n_metadata++;
    }
    return svc_status_any(a, &info.base);
}

static Google__Protobuf__Any *retry_info(rd_arena *a, int64_t ms)
{
    Google__Rpc__RetryInfo retry = GOOGLE__RPC__RETRY_INFO__INIT;
    Google__Protobuf__Duration delay = GOOGLE__PROTOBUF__DURATION__INIT;
    delay.seconds = ms / 1000;
    delay.nanos = (int32_t)(ms % 1000) * 1000000;
    retry.retry_delay = &delay;
    return svc_status_any(a, &retry.base);
}

/* BadRequest: the outcome's violations, else err.field for
 * INVALID_ARGUMENT; NULL (and *none) when there is nothing to say. */
static Google__Protobuf__Any *bad_request(rd_arena *a, const svc_outcome *o, bool *none)
{
    Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
    size_t n = o->n_violations > 0 ? o->n_violations : 1;
    Google__Rpc__BadRequest__FieldViolation *fvs = rd_arena_alloc(a, n * sizeof *fvs);
    Google__Rpc__BadRequest__FieldViolation **list = rd_arena_alloc(a, n * sizeof *list);
    *none = false;
    if (fvs == NULL || list == NULL)
        return NULL;
    br.field_violations = list;
    for (size_t i = 0; i < o->n_violations; i++) {
        google__rpc__bad_request__field_violation__init(&fvs[i]);
        fvs[i].field = (char *)o->violations[i].key;
        fvs[i].description = (char *)o->violations[i].value;
        list[br.n_field_violations++] = &fvs[i];
    }
    if (o->n_violations == 0 && o->err.field[0] != '\0' && rd_code_grpc(o->err.code) == 3) {
        google__rpc__bad_request__field_violation__init(&fvs[0]);
        fvs[0].field = (char *)o->err.field;
        fvs[0].description = (char *)o->err.msg;
        list[br.n_field_violations++] = &fvs[0];
    }
    if (br.n_field_violations == 0) {
        *none = true;
        return NULL;
    }
    return svc_status_any(a, &br.base);
}

uint8_t *svc_status_details(rd_arena *a, const svc_outcome *o, size_t *len)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    Google__Protobuf__Any *details[5];
    bool no_br;
    st.code = rd_code_grpc(o->err.code);
    st.message = (char *)o->err.msg;
    st.details = details;
    details[st.n_details++] = error_info(a, o);
    if (o->retry_after_ms > 0)
        details[st.n_details++] = retry_info(a, o->retry_after_ms);
    Google__Protobuf__Any *br = bad_request(a, o, &no_br);
    if (!no_br)
        details[st.n_details++] = br;
    if (o->receipt != NULL)
        details[st.n_details++] = svc_status_any(a, o->receipt);
    if (o->bulk != NULL)
        details[st.n_details++] = svc_status_any(a, o->bulk);
    for (size_t i = 0; i < st.n_details; i++)
        if (details[i] == NULL)
            return NULL;
    *len = google__rpc__status__get_packed_size(&st);
    uint8_t *buf = rd_arena_alloc(a, *len ? *len : 1);
    if (buf != NULL)
        google__rpc__status__pack(&st, buf);
    return buf;
}
