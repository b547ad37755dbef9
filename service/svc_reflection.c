/* gRPC server reflection (grpc.reflection.v1 and v1alpha, wire-identical),
 * answered from the descriptor set the build embeds (build/gen/
 * descriptor_set.c). Start-up parses the set once, slices the serialized
 * FileDescriptorProto of every file out of it and indexes every symbol;
 * answers then reference those bytes without copying. Lookup failures are
 * error_response messages inside the stream, never call failures. */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "service/server_int.h"

extern unsigned char rd_descriptor_set[];
extern unsigned int rd_descriptor_set_len;

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_request;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_response;

/* The oneof cases, shortened. */
#define REQ_CASE(x) GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##x
#define RESP_CASE(x) GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##x

typedef struct refl_file {
    const Google__Protobuf__FileDescriptorProto *fd;
    const uint8_t *bytes; /* the serialized file, inside rd_descriptor_set */
    size_t len;
} refl_file;

typedef enum sym_kind { SYM_MESSAGE, SYM_OTHER } sym_kind;

typedef struct refl_symbol {
    char *name; /* fully qualified, no leading dot */
    size_t file;
    sym_kind kind;
} refl_symbol;

typedef struct refl_ext {
    const char *extendee; /* fully qualified, no leading dot */
    int32_t number;
    size_t file;
} refl_ext;

struct svc_reflection {
    Google__Protobuf__FileDescriptorSet *set;
    refl_file *files;
    size_t n_files;
    refl_symbol *syms; /* sorted by name */
    size_t n_syms, cap_syms;
    refl_ext *exts;
    size_t n_exts, cap_exts;
};

/* ---- building the index ---------------------------------------------------- */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return 0;
    }
    return -1;
}

/* Slices field 1 (repeated FileDescriptorProto file) out of the serialized
 * set, in order, so files[i] matches set->file[i]. */
static rd_code slice_files(svc_reflection *r, const uint8_t *buf, size_t len, rd_err *err)
{
    const uint8_t *p = buf, *end = buf + len;
    size_t i = 0;
    while (p < end) {
        uint64_t key, n;
        if (read_varint(&p, end, &key) != 0 || key != ((1 << 3) | 2) ||
            read_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p) || i >= r->n_files)
            return rd_errf(err, RD_INTERNAL, NULL, "embedded descriptor set is malformed");
        r->files[i].bytes = p;
        r->files[i].len = (size_t)n;
        p += n;
        i++;
    }
    if (i != r->n_files)
        return rd_errf(err, RD_INTERNAL, NULL, "embedded descriptor set is malformed");
    return RD_OK;
}

/* "prefix.name", or name when prefix is empty; malloc'd. */
static char *join(const char *prefix, const char *name)
{
    size_t a = strlen(prefix), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (s == NULL)
        return NULL;
    if (a > 0) {
        memcpy(s, prefix, a);
        s[a++] = '.';
    }
    memcpy(s + a, name, b + 1);
    return s;
}

/* Adds prefix.name as a symbol of file; returns the new name (owned by the
 * index) or NULL when out of memory. */
static const char *add_symbol(svc_reflection *r, const char *prefix, const char *name, size_t file,
                              sym_kind kind)
{
    if (r->n_syms == r->cap_syms) {
        size_t cap = r->cap_syms ? r->cap_syms * 2 : 256;
        refl_symbol *ns = realloc(r->syms, cap * sizeof *ns);
        if (ns == NULL)
            return NULL;
        r->syms = ns;
        r->cap_syms = cap;
    }
    char *full = join(prefix, name);
    if (full == NULL)
        return NULL;
    r->syms[r->n_syms++] = (refl_symbol){full, file, kind};
    return full;
}

static rd_code add_extensions(svc_reflection *r, const char *scope,
                              Google__Protobuf__FieldDescriptorProto *const *ext, size_t n,
                              size_t file)
{
    for (size_t i = 0; i < n; i++) {
        if (add_symbol(r, scope, ext[i]->name, file, SYM_OTHER) == NULL)
            return RD_INTERNAL;
        if (r->n_exts == r->cap_exts) {
            size_t cap = r->cap_exts ? r->cap_exts * 2 : 16;
            refl_ext *ne = realloc(r->exts, cap * sizeof *ne);
            if (ne == NULL)
                return RD_INTERNAL;
            r->exts = ne;
            r->cap_exts = cap;
        }
        const char *extendee = ext[i]->extendee ? ext[i]->extendee : "";
        if (extendee[0] == '.')
            extendee++;
        r->exts[r->n_exts++] = (refl_ext){extendee, ext[i]->number, file};
    }
    return RD_OK;
}

/* An enum and its values; values live in the enum's enclosing scope. */
static rd_code add_enum(svc_reflection *r, const char *scope,
                        const Google__Protobuf__EnumDescriptorProto *e, size_t file)
{
    if (add_symbol(r, scope, e->name, file, SYM_OTHER) == NULL)
        return RD_INTERNAL;
    for (size_t i = 0; i < e->n_value; i++)
        if (add_symbol(r, scope, e->value[i]->name, file, SYM_OTHER) == NULL)
            return RD_INTERNAL;
    return RD_OK;
}

/* A message, its fields, oneofs, nested messages, enums and extensions. */
static rd_code add_message(svc_reflection *r, const char *scope,
                           const Google__Protobuf__DescriptorProto *m, size_t file, int depth)
{
    if (depth > 64)
        return RD_INTERNAL;
    const char *full = add_symbol(r, scope, m->name, file, SYM_MESSAGE);
    if (full == NULL)
        return RD_INTERNAL;
    for (size_t i = 0; i < m->n_field; i++)
        if (add_symbol(r, full, m->field[i]->name, file, SYM_OTHER) == NULL)
            return RD_INTERNAL;
    for (size_t i = 0; i < m->n_oneof_decl; i++)
        if (add_symbol(r, full, m->oneof_decl[i]->name, file, SYM_OTHER) == NULL)
            return RD_INTERNAL;
    for (size_t i = 0; i < m->n_nested_type; i++)
        if (add_message(r, full, m->nested_type[i], file, depth + 1) != RD_OK)
            return RD_INTERNAL;
    for (size_t i = 0; i < m->n_enum_type; i++)
        if (add_enum(r, full, m->enum_type[i], file) != RD_OK)
            return RD_INTERNAL;
    return add_extensions(r, full, m->extension, m->n_extension, file);
}

static rd_code add_file(svc_reflection *r, size_t file)
{
    const Google__Protobuf__FileDescriptorProto *fd = r->files[file].fd;
    const char *pkg = fd->package ? fd->package : "";
    for (size_t i = 0; i < fd->n_message_type; i++)
        if (add_message(r, pkg, fd->message_type[i], file, 0) != RD_OK)
            return RD_INTERNAL;
    for (size_t i = 0; i < fd->n_enum_type; i++)
        if (add_enum(r, pkg, fd->enum_type[i], file) != RD_OK)
            return RD_INTERNAL;
    for (size_t i = 0; i < fd->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *sv = fd->service[i];
        const char *full = add_symbol(r, pkg, sv->name, file, SYM_OTHER);
        if (full == NULL)
            return RD_INTERNAL;
        for (size_t k = 0; k < sv->n_method; k++)
            if (add_symbol(r, full, sv->method[k]->name, file, SYM_OTHER) == NULL)
                return RD_INTERNAL;
    }
    return add_extensions(r, pkg, fd->extension, fd->n_extension, file);
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(((const refl_symbol *)a)->name, ((const refl_symbol *)b)->name);
}

void svc_reflection_close(svc_reflection *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_syms; i++)
        free(r->syms[i].name);
    free(r->syms);
    free(r->exts);
    free(r->files);
    if (r->set != NULL)
        google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
    free(r);
}

rd_code svc_reflection_open(svc_reflection **out, rd_err *err)
{
    *out = NULL;
    svc_reflection *r = calloc(1, sizeof *r);
    if (r == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    r->set = google__protobuf__file_descriptor_set__unpack(NULL, rd_descriptor_set_len,
                                                           rd_descriptor_set);
    if (r->set == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "embedded descriptor set is malformed");
        goto fail;
    }
    r->n_files = r->set->n_file;
    r->files = calloc(r->n_files ? r->n_files : 1, sizeof *r->files);
    if (r->files == NULL) {
        rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < r->n_files; i++)
        r->files[i].fd = r->set->file[i];
    if (slice_files(r, rd_descriptor_set, rd_descriptor_set_len, err) != RD_OK)
        goto fail;
    for (size_t i = 0; i < r->n_files; i++)
        if (add_file(r, i) != RD_OK) {
            rd_errf(err, RD_INTERNAL, NULL, "out of memory indexing the descriptor set");
            goto fail;
        }
    qsort(r->syms, r->n_syms, sizeof *r->syms, sym_cmp);
    *out = r;
    return RD_OK;
fail:
    svc_reflection_close(r);
    return err->code;
}

/* ---- lookups ------------------------------------------------------------------ */

static const refl_symbol *find_symbol(const svc_reflection *r, const char *name)
{
    refl_symbol key = {(char *)name, 0, SYM_OTHER};
    return bsearch(&key, r->syms, r->n_syms, sizeof *r->syms, sym_cmp);
}

/* Index of the file called name, or n_files. */
static size_t find_file(const svc_reflection *r, const char *name)
{
    size_t i = 0;
    while (i < r->n_files && strcmp(r->files[i].fd->name, name) != 0)
        i++;
    return i;
}

/* Appends file and (depth first) every file it imports, each once. */
static void collect(const svc_reflection *r, size_t file, bool *seen, ProtobufCBinaryData *out,
                    size_t *n)
{
    if (file >= r->n_files || seen[file])
        return;
    seen[file] = true;
    out[(*n)++] = (ProtobufCBinaryData){r->files[file].len, (uint8_t *)r->files[file].bytes};
    const Google__Protobuf__FileDescriptorProto *fd = r->files[file].fd;
    for (size_t i = 0; i < fd->n_dependency; i++)
        collect(r, find_file(r, fd->dependency[i]), seen, out, n);
}

/* ---- answers ------------------------------------------------------------------ */

static void answer_error(rd_arena *a, refl_response *resp, int code, const char *msg)
{
    Grpc__Reflection__V1__ErrorResponse *e = rd_arena_alloc(a, sizeof *e);
    if (e == NULL)
        return;
    grpc__reflection__v1__error_response__init(e);
    e->error_code = code;
    e->error_message = (char *)msg;
    resp->message_response_case = RESP_CASE(ERROR_RESPONSE);
    resp->error_response = e;
}

/* NOT_FOUND naming what was looked up (left out when it is not UTF-8). */
static void answer_not_found(rd_arena *a, refl_response *resp, const char *what, const char *name)
{
    char *msg = NULL;
    if (rd_utf8_valid(name, strlen(name)))
        msg = rd_arena_printf(a, "%s not found: %.200s", what, name);
    if (msg == NULL)
        msg = rd_arena_printf(a, "%s not found", what);
    answer_error(a, resp, GRPC_STATUS_NOT_FOUND, msg ? msg : "not found");
}

static void answer_files(const svc_reflection *r, rd_arena *a, refl_response *resp, size_t file)
{
    Grpc__Reflection__V1__FileDescriptorResponse *f = rd_arena_alloc(a, sizeof *f);
    bool *seen = rd_arena_calloc(a, r->n_files * sizeof *seen);
    ProtobufCBinaryData *out = rd_arena_alloc(a, r->n_files * sizeof *out);
    if (f == NULL || seen == NULL || out == NULL) {
        answer_error(a, resp, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    grpc__reflection__v1__file_descriptor_response__init(f);
    f->file_descriptor_proto = out;
    collect(r, file, seen, out, &f->n_file_descriptor_proto);
    resp->message_response_case = RESP_CASE(FILE_DESCRIPTOR_RESPONSE);
    resp->file_descriptor_response = f;
}

static void answer_list(rd_arena *a, refl_response *resp)
{
    Grpc__Reflection__V1__ListServiceResponse *l = rd_arena_alloc(a, sizeof *l);
    Grpc__Reflection__V1__ServiceResponse **svcs = rd_arena_alloc(a, svc_n_methods * sizeof *svcs);
    if (l == NULL || svcs == NULL) {
        answer_error(a, resp, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    grpc__reflection__v1__list_service_response__init(l);
    l->service = svcs;
    for (size_t i = 0; i < svc_n_methods; i++) {
        const char *name;
        size_t len = svc_method_service(&svc_methods[i], &name);
        bool dup = len == 0;
        for (size_t k = 0; k < l->n_service && !dup; k++)
            dup = strlen(svcs[k]->name) == len && memcmp(svcs[k]->name, name, len) == 0;
        if (dup)
            continue;
        Grpc__Reflection__V1__ServiceResponse *sr = rd_arena_alloc(a, sizeof *sr);
        char *copy = rd_arena_strndup(a, name, len);
        if (sr == NULL || copy == NULL) {
            answer_error(a, resp, GRPC_STATUS_INTERNAL, "out of memory");
            return;
        }
        grpc__reflection__v1__service_response__init(sr);
        sr->name = copy;
        svcs[l->n_service++] = sr;
    }
    resp->message_response_case = RESP_CASE(LIST_SERVICES_RESPONSE);
    resp->list_services_response = l;
}

static void answer_extension(const svc_reflection *r, rd_arena *a, refl_response *resp,
                             const Grpc__Reflection__V1__ExtensionRequest *q)
{
    if (q == NULL) {
        answer_error(a, resp, GRPC_STATUS_INVALID_ARGUMENT, "file_containing_extension is empty");
        return;
    }
    for (size_t i = 0; i < r->n_exts; i++)
        if (r->exts[i].number == q->extension_number &&
            strcmp(r->exts[i].extendee, q->containing_type) == 0) {
            answer_files(r, a, resp, r->exts[i].file);
            return;
        }
    answer_not_found(a, resp, "extension of", q->containing_type);
}

static void answer_extension_numbers(const svc_reflection *r, rd_arena *a, refl_response *resp,
                                     const char *type)
{
    const refl_symbol *sym = find_symbol(r, type);
    if (sym == NULL || sym->kind != SYM_MESSAGE) {
        answer_not_found(a, resp, "message type", type);
        return;
    }
    Grpc__Reflection__V1__ExtensionNumberResponse *e = rd_arena_alloc(a, sizeof *e);
    int32_t *nums = rd_arena_alloc(a, (r->n_exts ? r->n_exts : 1) * sizeof *nums);
    if (e == NULL || nums == NULL) {
        answer_error(a, resp, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    grpc__reflection__v1__extension_number_response__init(e);
    e->base_type_name = sym->name;
    e->extension_number = nums;
    for (size_t i = 0; i < r->n_exts; i++)
        if (strcmp(r->exts[i].extendee, type) == 0)
            nums[e->n_extension_number++] = r->exts[i].number;
    resp->message_response_case = RESP_CASE(ALL_EXTENSION_NUMBERS_RESPONSE);
    resp->all_extension_numbers_response = e;
}

void svc_reflection_info(svc_call *call, const ProtobufCMessage *msg)
{
    const refl_request *req = (const void *)msg;
    const svc_reflection *r = svc_server_reflection(svc_call_ctx(call)->server);
    rd_arena *a = svc_call_arena(call);
    refl_response resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host;
    resp.original_request = (refl_request *)req;

    switch (req->message_request_case) {
    case REQ_CASE(FILE_BY_FILENAME): {
        size_t f = find_file(r, req->file_by_filename);
        if (f < r->n_files)
            answer_files(r, a, &resp, f);
        else
            answer_not_found(a, &resp, "file", req->file_by_filename);
        break;
    }
    case REQ_CASE(FILE_CONTAINING_SYMBOL): {
        const refl_symbol *sym = find_symbol(r, req->file_containing_symbol);
        if (sym != NULL)
            answer_files(r, a, &resp, sym->file);
        else
            answer_not_found(a, &resp, "symbol", req->file_containing_symbol);
        break;
    }
    case REQ_CASE(FILE_CONTAINING_EXTENSION):
        answer_extension(r, a, &resp, req->file_containing_extension);
        break;
    case REQ_CASE(ALL_EXTENSION_NUMBERS_OF_TYPE):
        answer_extension_numbers(r, a, &resp, req->all_extension_numbers_of_type);
        break;
    case REQ_CASE(LIST_SERVICES):
        answer_list(a, &resp);
        break;
    default:
        answer_error(a, &resp, GRPC_STATUS_INVALID_ARGUMENT, "the request asks nothing");
        break;
    }
    /* A failed send means the peer is gone: the server ends the stream. */
    svc_send(call, &resp.base);
}

void svc_reflection_info_v1alpha(svc_call *call, const ProtobufCMessage *req)
{
    rd_arena *a = svc_call_arena(call);
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = rd_arena_alloc(a, len ? len : 1);
    ProtobufCMessage *v1 = NULL;
    if (buf != NULL) {
        ProtobufCAllocator alloc;
        rd_arena_pb_allocator(a, &alloc);
        protobuf_c_message_pack(req, buf);
        v1 = protobuf_c_message_unpack(&grpc__reflection__v1__server_reflection_request__descriptor,
                                       &alloc, len, buf);
    }
    if (v1 == NULL) {
        rd_err err;
        rd_errf(&err, RD_INTERNAL, NULL, "out of memory reading the request");
        svc_fail(call, &err);
        return;
    }
    svc_reflection_info(call, v1);
}
