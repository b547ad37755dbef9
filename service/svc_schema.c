/* recordd.v1.Schemas handlers: PushSchema converts the wire schema into the
 * store's definition and hands it to the writer (the store validates it and
 * applies the DDL atomically); GetSchema renders the current snapshot;
 * GetOpenApi describes the HTTP API of the caller's organisation
 * (service/gw_openapi.c). */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "recordd/v1/schema.pb-c.h"
#include "service/gw_openapi.h"
#include "service/receipt.h"
#include "service/svc_convert.h"
#include "service/svc_authz.h"
#include "service/svc_handlers.h"

/* Copies n strings into a malloc'd array (the store frees it with the
 * schema); NULL when out of memory. */
static char **dup_strings(char *const *src, size_t n)
{
    char **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; out != NULL && i < n; i++) {
        out[i] = strdup(src[i]);
        if (out[i] == NULL) {
            while (i > 0)
                free(out[--i]);
            free(out);
            return NULL;
        }
    }
    return out;
}

/* Fills dst (zeroed) from the wire field; the store owns what it allocates. */
static rd_code field_from_pb(store_field *dst, const Recordd__V1__Field *f, const char *path,
                             rd_err *err)
{
    dst->name = strdup(f->name);
    dst->type = (store_type)f->type;
    dst->required = f->required;
    dst->max_length = f->max_length;
    if (f->min != NULL) {
        dst->has_min = true;
        dst->min = f->min->value;
    }
    if (f->max != NULL) {
        dst->has_max = true;
        dst->max = f->max->value;
    }
    dst->unique = f->unique;
    dst->immutable = f->immutable;
    dst->enum_values = dup_strings(f->enum_values, f->n_enum_values);
    dst->n_enum_values = f->n_enum_values;
    dst->writable_by = dup_strings(f->writable_by, f->n_writable_by);
    dst->n_writable_by = f->n_writable_by;
    if (dst->name == NULL || dst->enum_values == NULL || dst->writable_by == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    if (f->references != NULL && f->references[0] != '\0' &&
        (dst->references = strdup(f->references)) == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    /* unspecified is RESTRICT, for a reference; any other value is checked
     * by the store's validation */
    dst->on_delete = f->on_delete == RECORDD__V1__ON_DELETE__ON_DELETE_UNSPECIFIED &&
                             f->type == RECORDD__V1__FIELD_TYPE__REFERENCE
                         ? STORE_DEL_RESTRICT
                         : (store_on_delete)f->on_delete;
    if (f->type < RECORDD__V1__FIELD_TYPE__STRING || f->type > RECORDD__V1__FIELD_TYPE__REFERENCE)
        return rd_errf(err, RD_VALIDATION_FAILED, path, "%s: type is missing or unknown", path);
    if (f->default_value != NULL &&
        f->default_value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE)
        return svc_value_to_json(f->default_value, path, &dst->default_value, err);
    return RD_OK;
}

/* Converts the wire schema into a new store definition (*out, refcount 1). */
static rd_code schema_from_pb(const Recordd__V1__Schema *src, store_schema **out, rd_err *err)
{
    store_schema *s = store_schema_new();
    size_t nm = src ? src->n_models : 0;
    char path[96];
    if (s == NULL || (s->models = calloc(nm + 1, sizeof *s->models)) == NULL)
        goto oom;
    for (size_t i = 0; i < nm; i++) {
        const Recordd__V1__Model *pm = src->models[i];
        store_model *m = &s->models[s->n_models++];
        m->name = strdup(pm->name);
        m->fields = calloc(pm->n_fields + 1, sizeof *m->fields);
        m->unique_together = calloc(pm->n_unique_together + 1, sizeof *m->unique_together);
        if (m->name == NULL || m->fields == NULL || m->unique_together == NULL)
            goto oom;
        for (size_t j = 0; j < pm->n_fields; j++) {
            snprintf(path, sizeof path, "models[%zu].fields[%zu]", i, j);
            if (field_from_pb(&m->fields[m->n_fields++], pm->fields[j], path, err) != RD_OK)
                goto fail;
        }
        for (size_t j = 0; j < pm->n_unique_together; j++) {
            store_unique *u = &m->unique_together[m->n_unique_together++];
            u->fields =
                dup_strings(pm->unique_together[j]->fields, pm->unique_together[j]->n_fields);
            u->n_fields = pm->unique_together[j]->n_fields;
            if (u->fields == NULL)
                goto oom;
        }
    }
    *out = s;
    return RD_OK;
oom:
    rd_errf(err, RD_INTERNAL, NULL, "out of memory");
fail:
    store_schema_release(s);
    return err->code;
}

/* Renders a store schema into the arena; NULL when out of memory. */
static Recordd__V1__Schema *schema_to_pb(rd_arena *a, const store_schema *s)
{
    Recordd__V1__Schema *out = rd_arena_alloc(a, sizeof *out);
    if (out == NULL)
        return NULL;
    recordd__v1__schema__init(out);
    out->revision = s->revision;
    out->n_models = s->n_models;
    out->models = rd_arena_calloc(a, (s->n_models + 1) * sizeof *out->models);
    if (out->models == NULL)
        return NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        const store_model *m = &s->models[i];
        Recordd__V1__Model *pm = rd_arena_alloc(a, sizeof *pm);
        if (pm == NULL)
            return NULL;
        recordd__v1__model__init(pm);
        out->models[i] = pm;
        pm->name = m->name;
        pm->n_fields = m->n_fields;
        pm->fields = rd_arena_calloc(a, (m->n_fields + 1) * sizeof *pm->fields);
        pm->n_unique_together = m->n_unique_together;
        pm->unique_together =
            rd_arena_calloc(a, (m->n_unique_together + 1) * sizeof *pm->unique_together);
        if (pm->fields == NULL || pm->unique_together == NULL)
            return NULL;
        for (size_t j = 0; j < m->n_fields; j++) {
            const store_field *f = &m->fields[j];
            Recordd__V1__Field *pf = rd_arena_alloc(a, sizeof *pf);
            if (pf == NULL)
                return NULL;
            recordd__v1__field__init(pf);
            pm->fields[j] = pf;
            pf->name = f->name;
            pf->type = (Recordd__V1__FieldType)f->type;
            pf->required = f->required;
            pf->max_length = f->max_length;
            pf->unique = f->unique;
            pf->immutable = f->immutable;
            pf->enum_values = f->enum_values;
            pf->n_enum_values = f->n_enum_values;
            pf->writable_by = f->writable_by;
            pf->n_writable_by = f->n_writable_by;
            if (f->type == STORE_T_REFERENCE) {
                pf->references = f->references;
                pf->on_delete =
                    (Recordd__V1__OnDelete)(f->on_delete ? f->on_delete : STORE_DEL_RESTRICT);
            }
            if (f->has_min) {
                pf->min = rd_arena_alloc(a, sizeof *pf->min);
                if (pf->min == NULL)
                    return NULL;
                google__protobuf__double_value__init(pf->min);
                pf->min->value = f->min;
            }
            if (f->has_max) {
                pf->max = rd_arena_alloc(a, sizeof *pf->max);
                if (pf->max == NULL)
                    return NULL;
                google__protobuf__double_value__init(pf->max);
                pf->max->value = f->max;
            }
            if (f->default_value != NULL) {
                pf->default_value = svc_json_to_value(a, f->default_value);
                if (pf->default_value == NULL)
                    return NULL;
            }
        }
        for (size_t j = 0; j < m->n_unique_together; j++) {
            Recordd__V1__UniqueConstraint *u = rd_arena_alloc(a, sizeof *u);
            if (u == NULL)
                return NULL;
            recordd__v1__unique_constraint__init(u);
            u->fields = m->unique_together[j].fields;
            u->n_fields = m->unique_together[j].n_fields;
            pm->unique_together[j] = u;
        }
    }
    return out;
}

/* A push in flight. The snapshot it answers with is taken after the commit;
 * its strings are referenced by the reply, so the reply is packed before the
 * snapshot is released. */
typedef struct push_call {
    store_write w;
    svc_call *call;
} push_call;

static void release_schema(void *arg)
{
    store_schema_release(arg);
}

/* s held until the call's arena goes (the reply points into it); NULL, s
 * released, when memory runs out. */
static store_schema *schema_held(svc_call *call, store_schema *s)
{
    if (s != NULL && !rd_arena_on_release(svc_call_arena(call), release_schema, s)) {
        store_schema_release(s);
        return NULL;
    }
    return s;
}

static void push_done(store_write *w)
{
    push_call *pc = w->ctx;
    svc_call *call = pc->call;
    rd_arena *a = svc_call_arena(call);
    rd_err err = w->err;
    json_t *changes = w->push.changes;
    store_schema_release(w->push.schema);
    if (err.code != RD_OK) {
        json_decref(changes);
        svc_fail(call, &err);
        return;
    }
    svc_ctx *ctx = svc_call_ctx(call);
    Recordd__V1__PushSchemaResponse *resp = rd_arena_alloc(a, sizeof *resp);
    store_schema *now = schema_held(call, store_schema_get(ctx->db, w->org));
    bool ok = resp != NULL && now != NULL;
    if (ok) {
        recordd__v1__push_schema_response__init(resp);
        resp->schema = schema_to_pb(a, now);
        resp->n_changes = json_array_size(changes);
        resp->changes = rd_arena_calloc(a, (resp->n_changes + 1) * sizeof *resp->changes);
        for (size_t i = 0; resp->changes != NULL && i < resp->n_changes; i++)
            resp->changes[i] = rd_arena_strdup(a, json_string_value(json_array_get(changes, i)));
        ok = resp->schema != NULL && resp->changes != NULL;
    }
    json_decref(changes);
    if (!ok) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        svc_fail(call, &err);
        return;
    }
    svc_reply(call, &resp->base);
}

void svc_push_schema(svc_call *call, const ProtobufCMessage *msg)
{
    const Recordd__V1__PushSchemaRequest *req = (const void *)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    store_schema *def = NULL;
    rd_err err;
    rd_err_clear(&err);
    if (svc_authz(call, svc_call_method(call)->can, "*", "*", NULL, 0, NULL, &err) != RD_OK)
        goto fail;
    if (req->schema == NULL) {
        rd_errf(&err, RD_VALIDATION_FAILED, "schema", "schema is required");
        goto fail;
    }
    /* a merge is validated once merged, in the store: what it sends may
     * refer to models and fields it does not send */
    if (schema_from_pb(req->schema, &def, &err) != RD_OK ||
        (!req->merge && store_schema_validate(def, &err) != RD_OK))
        goto fail;
    push_call *pc = rd_arena_calloc(svc_call_arena(call), sizeof *pc);
    if (pc == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    pc->call = call;
    pc->w.op = STORE_OP_PUSH_SCHEMA;
    pc->w.org = svc_call_org(call);
    pc->w.actor = svc_call_actor(call);
    pc->w.push.schema = def;
    pc->w.push.force = req->force;
    pc->w.push.merge = req->merge;
    /* the revision the push was made from: expectedRevision, else the one
     * the schema document carries */
    if (req->expected_revision != NULL || req->schema->revision != 0) {
        pc->w.push.has_expected_revision = true;
        pc->w.push.expected_revision =
            req->expected_revision != NULL ? req->expected_revision->value : req->schema->revision;
    }
    pc->w.deadline_us = svc_call_deadline_us(call);
    pc->w.done = push_done;
    pc->w.ctx = pc;
    store_submit(ctx->db, &pc->w);
    return;
fail:
    if (def != NULL)
        store_schema_release(def);
    svc_fail(call, &err);
}

/* GetSchema shows the organisation's whole schema to any principal that may
 * read or administer something in it: clients need the field definitions
 * to build their writes, and the schema holds no record data. */
void svc_get_schema(svc_call *call, const ProtobufCMessage *msg)
{
    (void)msg;
    svc_ctx *ctx = svc_call_ctx(call);
    rd_err denied;
    if (svc_authz_any(call, svc_call_method(call)->can, &denied) != RD_OK) {
        svc_fail(call, &denied);
        return;
    }
    store_schema *s = schema_held(call, store_schema_get(ctx->db, svc_call_org(call)));
    Recordd__V1__Schema *out = s != NULL ? schema_to_pb(svc_call_arena(call), s) : NULL;
    if (out == NULL) {
        rd_err err;
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        svc_fail(call, &err);
        return;
    }
    svc_reply(call, &out->base);
}

/* ---- GetOpenApi ---------------------------------------------------------------------- */

extern unsigned char rd_descriptor_set[];
extern unsigned int rd_descriptor_set_len;

/* Built once: the routes, and the document without a credential (packed),
 * so an anonymous caller cannot make the server build one per request. */
static struct {
    pthread_once_t once;
    gw_routes *routes;
    uint8_t *generic;
    size_t generic_len;
} openapi = {.once = PTHREAD_ONCE_INIT};

/* The document as a reply in the arena: the Struct and an etag, a hash of
 * its canonical text. NULL when out of memory. */
static Recordd__V1__OpenApiDocument *openapi_reply(rd_arena *a, json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    Recordd__V1__OpenApiDocument *out = rd_arena_calloc(a, sizeof *out);
    char *etag = rd_arena_alloc(a, 2 * 16 + 1);
    if (text == NULL || out == NULL || etag == NULL) {
        free(text);
        return NULL;
    }
    unsigned char h[16];
    crypto_generichash(h, sizeof h, (const unsigned char *)text, strlen(text), NULL, 0);
    free(text);
    sodium_bin2hex(etag, 2 * sizeof h + 1, h, sizeof h);
    recordd__v1__open_api_document__init(out);
    out->etag = etag;
    out->document = svc_json_to_struct(a, doc);
    return out->document != NULL ? out : NULL;
}

static void openapi_init(void)
{
    rd_err err;
    if (gw_routes_build(rd_descriptor_set, rd_descriptor_set_len, &openapi.routes, &err) != RD_OK)
        return;
    rd_arena *a = rd_arena_new(1 << 20);
    json_t *doc = gw_openapi_build(openapi.routes, NULL);
    Recordd__V1__OpenApiDocument *d = a != NULL ? openapi_reply(a, doc) : NULL;
    size_t len = d != NULL ? recordd__v1__open_api_document__get_packed_size(d) : 0;
    uint8_t *buf = len > 0 ? malloc(len) : NULL;
    if (buf != NULL) {
        recordd__v1__open_api_document__pack(d, buf);
        openapi.generic = buf;
        openapi.generic_len = len;
    }
    json_decref(doc);
    rd_arena_free(a);
}

/* Organisations' documents, packed, by (organisation, schema revision): a
 * repeated GET, or an If-None-Match check, unpacks one instead of building
 * it again (hundreds of ms for a schema of 200 models). A few entries, each
 * bounded; the least recently used one goes. */
#define DOCS_CACHED 8
#define DOC_CACHED_MAX ((size_t)8 << 20)

static struct {
    pthread_mutex_t mu;
    uint64_t clock;
    struct {
        char *org;
        int64_t revision;
        uint8_t *bytes;
        size_t len;
        uint64_t used;
    } e[DOCS_CACHED];
} docs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static Recordd__V1__OpenApiDocument *doc_unpack(rd_arena *a, const uint8_t *bytes, size_t len)
{
    ProtobufCAllocator alloc;
    rd_arena_pb_allocator(a, &alloc);
    return recordd__v1__open_api_document__unpack(&alloc, len, bytes);
}

/* The cached document of (org, revision), unpacked into a; NULL on a miss. */
static Recordd__V1__OpenApiDocument *doc_cached(rd_arena *a, const char *org, int64_t revision)
{
    uint8_t *copy = NULL;
    size_t len = 0;
    pthread_mutex_lock(&docs.mu);
    for (size_t i = 0; i < DOCS_CACHED; i++)
        if (docs.e[i].org != NULL && docs.e[i].revision == revision &&
            strcmp(docs.e[i].org, org) == 0) {
            docs.e[i].used = ++docs.clock;
            len = docs.e[i].len;
            if ((copy = rd_arena_alloc(a, len)) != NULL)
                memcpy(copy, docs.e[i].bytes, len);
            break;
        }
    pthread_mutex_unlock(&docs.mu);
    return copy != NULL ? doc_unpack(a, copy, len) : NULL;
}

static void doc_cache(const char *org, int64_t revision, const Recordd__V1__OpenApiDocument *d)
{
    size_t len = recordd__v1__open_api_document__get_packed_size(d);
    uint8_t *bytes = len <= DOC_CACHED_MAX ? malloc(len) : NULL;
    char *key = bytes != NULL ? strdup(org) : NULL;
    if (key == NULL) {
        free(bytes);
        return;
    }
    recordd__v1__open_api_document__pack(d, bytes);
    pthread_mutex_lock(&docs.mu);
    size_t victim = 0;
    for (size_t i = 1; i < DOCS_CACHED; i++)
        if (docs.e[i].used < docs.e[victim].used)
            victim = i;
    free(docs.e[victim].org);
    free(docs.e[victim].bytes);
    docs.e[victim].org = key;
    docs.e[victim].revision = revision;
    docs.e[victim].bytes = bytes;
    docs.e[victim].len = len;
    docs.e[victim].used = ++docs.clock;
    pthread_mutex_unlock(&docs.mu);
}

void svc_get_openapi(svc_call *call, const ProtobufCMessage *msg)
{
    (void)msg;
    rd_err err;
    rd_arena *a = svc_call_arena(call);
    pthread_once(&openapi.once, openapi_init);
    if (openapi.routes == NULL || openapi.generic == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "the OpenAPI document could not be built");
        svc_fail(call, &err);
        return;
    }
    Recordd__V1__OpenApiDocument *out = NULL;
    if (svc_call_principal(call) == NULL) {
        out = doc_unpack(a, openapi.generic, openapi.generic_len);
    } else {
        if (svc_authz_any(call, svc_call_method(call)->can, &err) != RD_OK) {
            svc_fail(call, &err);
            return;
        }
        svc_ctx *ctx = svc_call_ctx(call);
        const char *org = svc_call_org(call);
        store_schema *s = schema_held(call, store_schema_get(ctx->db, org));
        out = s != NULL ? doc_cached(a, org, s->revision) : NULL;
        if (out == NULL && s != NULL) {
            Recordd__V1__Schema *pb = schema_to_pb(a, s);
            json_t *doc = pb != NULL ? gw_openapi_build(openapi.routes, pb) : NULL;
            out = openapi_reply(a, doc);
            json_decref(doc);
            if (out != NULL)
                doc_cache(org, s->revision, out);
        }
    }
    if (out == NULL) {
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory");
        svc_fail(call, &err);
        return;
    }
    svc_reply(call, &out->base);
}
