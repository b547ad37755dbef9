/* recordd-bench: a closed-loop load generator on the gRPC C core client API.
 * --clients calls stay in flight, spread over --threads threads (one
 * completion queue each) and --connections TCP connections (a local
 * subchannel pool per channel); every completion immediately starts the next
 * call of its slot. --target may name several servers (replicas on one
 * database): client i then calls target i % n. Prints throughput, latency
 * percentiles, errors by status code, CPU per call and peak RSS of client
 * and server (docs/PERFORMANCE.md).
 *
 * A scenario is one row of `scenarios`: the method, whether it needs the
 * bench model and its records, how to encode the next request and how to
 * judge a reply. A new scenario is a new row and two functions. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "recordd/v1/records.pb-c.h"
#include "recordd/v1/schema.pb-c.h"

#include "bench/hist.h"

enum {
    MAX_CLIENTS = 4096,
    MAX_THREADS = 64,
    MAX_TARGETS = 64,
    MAX_REQ_BYTES = 512,
    MAX_TOKEN_BYTES = 4096,
    N_OUTCOMES = 18,       /* 0 OK, 1..16 gRPC status codes, 17 rejected reply */
    OUTCOME_REJECTED = 17, /* OK status but the reply says it failed */
    EXIT_USAGE = 2,
    EXIT_UNAUTHENTICATED = 3,
    EXIT_NO_SUCCESS = 4,
};

static const char *const outcome_names[N_OUTCOMES] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
    "REJECTED_REPLY",
};

#define BENCH_MODEL "bench_counters"

/* ---- options ------------------------------------------------------------------------ */

typedef struct options {
    const char *target; /* one host:port or a comma-separated list */
    const char *scenario;
    const char *token;
    const char *cacert;
    int clients;
    int threads;
    int connections;
    double duration_s;
    double warmup_s;
    int records;
    int timeout_ms;
    const char *server_pid; /* one pid or a comma-separated list */
    bool setup;
    bool json;
} options;

typedef enum opt_kind { O_STR, O_INT, O_DOUBLE, O_FLAG } opt_kind;

typedef struct opt {
    const char *flag;
    opt_kind kind;
    size_t offset;
    double min, max; /* numeric kinds */
    const char *help;
} opt;

#define OFF(f) offsetof(options, f)

static const opt opts[] = {
    {"target", O_STR, OFF(target), 0, 0,
     "server address host:port, or several comma-separated (client i calls target i % n) "
     "[127.0.0.1:50051]"},
    {"scenario", O_STR, OFF(scenario), 0, 0,
     "update | bulk | health | get | get_expand | list | list_expand [update]"},
    {"clients", O_INT, OFF(clients), 1, MAX_CLIENTS, "calls kept in flight [16]"},
    {"threads", O_INT, OFF(threads), 1, MAX_THREADS, "client threads, one CQ each [1]"},
    {"connections", O_INT, OFF(connections), 1, MAX_CLIENTS,
     "TCP connections, spread over the threads; with n targets rounded up to a multiple of n "
     "[= threads]"},
    {"duration", O_DOUBLE, OFF(duration_s), 0, 86400, "measured seconds [10]"},
    {"warmup", O_DOUBLE, OFF(warmup_s), 0, 3600, "seconds run before measuring [1]"},
    {"records", O_INT, OFF(records), 1, 100000000, "record ids b0..b<K-1> the update uses [10000]"},
    {"timeout-ms", O_INT, OFF(timeout_ms), 1, 3600000, "deadline of each call [30000]"},
    {"server-pid", O_STR, OFF(server_pid), 0, 0,
     "server process, or several comma-separated: report peak RSS and CPU per call "
     "(summed over them)"},
    {"token", O_STR, OFF(token), 0, 0,
     "credential sent as `authorization: Bearer <token>` on record and schema calls "
     "(env RECORDD_BENCH_TOKEN)"},
    {"cacert", O_STR, OFF(cacert), 0, 0,
     "PEM CA file: connect over TLS, verifying the server against it [plaintext]"},
    {"setup", O_FLAG, OFF(setup), 0, 0,
     "push the bench model and create the K records before the run"},
    {"json", O_FLAG, OFF(json), 0, 0, "print one JSON object instead of text"},
};

enum { N_OPTS = sizeof opts / sizeof opts[0] };

static void usage(FILE *f)
{
    fprintf(f, "usage: recordd-bench [options]\n");
    for (size_t i = 0; i < N_OPTS; i++)
        fprintf(f, "  --%-12s %s\n", opts[i].flag, opts[i].help);
}

/* The CA of --cacert (NUL-terminated PEM), or NULL for plaintext. */
static char *ca_pem;

/* --target as a list (client i calls targets[i % n_targets]) and
 * --server-pid as a list (none: no server figures). */
static char *targets[MAX_TARGETS];
static int n_targets;
static long server_pids[MAX_TARGETS];
static int n_server_pids;

/* Splits the comma-separated list s into out[] (copies the caller
 * frees). Returns the number of items, or -1 (nothing kept) when one is
 * empty, there are more than max or memory ran out. */
static int split_list(const char *s, char **out, int max)
{
    int n = 0;
    for (const char *p = s;; p = strchr(p, ',') + 1) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (len == 0 || n == max || (out[n] = strndup(p, len)) == NULL)
            break;
        n++;
        if (end == NULL)
            return n;
    }
    while (n > 0)
        free(out[--n]);
    return -1;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && len < (1 << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) != NULL) {
        if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
            free(buf);
            buf = NULL;
        } else {
            buf[len] = '\0';
        }
    }
    if (f != NULL)
        fclose(f);
    return buf;
}

/* Parses argv into *o (defaults first). Returns 0, or EXIT_USAGE after
 * printing the problem; 1 when --help was asked (usage printed). */
static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.target = "127.0.0.1:50051",
                   .scenario = "update",
                   .clients = 16,
                   .threads = 1,
                   .connections = 0,
                   .duration_s = 10,
                   .warmup_s = 1,
                   .records = 10000,
                   .timeout_ms = 30000};
    o->token = getenv("RECORDD_BENCH_TOKEN");
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "recordd-bench: unexpected argument '%s'\n", arg);
            return EXIT_USAGE;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const opt *p = NULL;
        for (size_t k = 0; k < N_OPTS; k++)
            if (strlen(opts[k].flag) == len && memcmp(opts[k].flag, name, len) == 0)
                p = &opts[k];
        if (p == NULL) {
            fprintf(stderr, "recordd-bench: unknown option '%s'\n", arg);
            return EXIT_USAGE;
        }
        char *field = (char *)o + p->offset;
        if (p->kind == O_FLAG) {
            *(bool *)(void *)field = true;
            continue;
        }
        const char *value = eq != NULL ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (value == NULL) {
            fprintf(stderr, "recordd-bench: --%s needs a value\n", p->flag);
            return EXIT_USAGE;
        }
        if (p->kind == O_STR) {
            *(const char **)(void *)field = value;
            continue;
        }
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        bool integral = p->kind != O_DOUBLE;
        if (errno != 0 || end == value || *end != '\0' || v < p->min || v > p->max ||
            (integral && v != floor(v))) {
            fprintf(stderr, "recordd-bench: --%s: expected %s from %g to %g, got '%s'\n", p->flag,
                    integral ? "an integer" : "a number", p->min, p->max, value);
            return EXIT_USAGE;
        }
        if (p->kind == O_INT)
            *(int *)(void *)field = (int)v;
        else
            *(double *)(void *)field = v;
    }
    if (o->connections == 0)
        o->connections = o->threads;
    if (o->threads > o->clients)
        o->threads = o->clients;
    if (o->connections < o->threads)
        o->connections = o->threads;
    if ((n_targets = split_list(o->target, targets, MAX_TARGETS)) < 1) {
        fprintf(stderr,
                "recordd-bench: --target: expected 1 to %d comma-separated host:port, got "
                "'%s'\n",
                MAX_TARGETS, o->target);
        return EXIT_USAGE;
    }
    /* every target gets as many connections */
    o->connections = (o->connections + n_targets - 1) / n_targets * n_targets;
    if (o->server_pid != NULL) {
        char *items[MAX_TARGETS];
        int n = split_list(o->server_pid, items, MAX_TARGETS);
        n_server_pids = n;
        for (int i = 0; i < n; i++) {
            char *end;
            errno = 0;
            server_pids[i] = strtol(items[i], &end, 10);
            if (errno != 0 || *end != '\0' || server_pids[i] < 1 || server_pids[i] > 4194304)
                n_server_pids = -1;
            free(items[i]);
        }
        if (n_server_pids < 1) {
            fprintf(stderr,
                    "recordd-bench: --server-pid: expected 1 to %d comma-separated process "
                    "ids, got '%s'\n",
                    MAX_TARGETS, o->server_pid);
            return EXIT_USAGE;
        }
    }
    if (o->cacert != NULL && (ca_pem = read_file(o->cacert)) == NULL) {
        fprintf(stderr, "recordd-bench: --cacert: cannot read %s\n", o->cacert);
        return EXIT_USAGE;
    }
    if (o->token != NULL && o->token[0] == '\0')
        o->token = NULL;
    if (o->token != NULL && strlen(o->token) > MAX_TOKEN_BYTES) {
        fprintf(stderr, "recordd-bench: the token is longer than %d bytes\n", MAX_TOKEN_BYTES);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- clocks and process figures ----------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until_ns(int64_t t)
{
    for (int64_t d = t - now_ns(); d > 0; d = t - now_ns()) {
        struct timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
        nanosleep(&ts, NULL);
    }
}

/* A "VmHWM:"-style line of /proc/<pid>/status in kB (pid 0 = self), or -1. */
static long proc_status_kb(long pid, const char *key)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (f == NULL)
        return -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* User + system CPU of process pid (utime and stime of /proc/<pid>/stat) in
 * µs, or -1 when unreadable. */
static int64_t proc_cpu_us(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut, st;
    /* after ")": state(3) … utime(14) stime(15) */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t)((ut + st) * 1000000ULL / (unsigned long long)(hz > 0 ? hz : 100));
}

/* The machine's CPU time from the first line of /proc/stat, in clock
 * ticks: *idle gets idle + iowait, the result everything (-1 unreadable). */
static int64_t machine_ticks(int64_t *idle)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1;
    *idle = (int64_t)(v[3] + v[4]);
    int64_t all = 0;
    for (int i = 0; i < 8; i++)
        all += (int64_t)v[i];
    return all;
}

/* The --server-pid processes' CPU (summed), or -1 when there are none or
 * one is unreadable. */
static int64_t servers_cpu_us(void)
{
    int64_t sum = n_server_pids > 0 ? 0 : -1;
    for (int i = 0; i < n_server_pids && sum >= 0; i++) {
        int64_t v = proc_cpu_us(server_pids[i]);
        sum = v >= 0 ? sum + v : -1;
    }
    return sum;
}

/* A /proc/<pid>/status figure of the --server-pid processes (summed), or
 * -1 when there are none or one is unreadable. */
static long servers_status_kb(const char *key)
{
    long sum = n_server_pids > 0 ? 0 : -1;
    for (int i = 0; i < n_server_pids && sum >= 0; i++) {
        long v = proc_status_kb(server_pids[i], key);
        sum = v >= 0 ? sum + v : -1;
    }
    return sum;
}

static int64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
           (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

/* ---- byte buffers ------------------------------------------------------------------- */

/* Packs msg into a new byte buffer the caller owns; NULL when it does not
 * fit MAX_REQ_BYTES. */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg)
{
    uint8_t buf[MAX_REQ_BYTES];
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > sizeof buf)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Unpacks a reply; NULL when bb is NULL or does not decode. The caller frees
 * the result with protobuf_c_message_free_unpacked. */
static ProtobufCMessage *unpack_reply(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb))
        return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m =
        protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

/* ---- scenarios ---------------------------------------------------------------------- */

typedef struct worker worker;

/* Encodes the next request of worker w; NULL when the scenario has no more
 * work (bounded scenarios) or on failure. */
typedef grpc_byte_buffer *(*build_fn)(worker *w);
/* Classifies a completed call: 0 for success, the gRPC status code for a
 * failed call, OUTCOME_REJECTED for an OK status whose reply says failure. */
typedef int (*judge_fn)(grpc_status_code st, grpc_byte_buffer *reply);

typedef struct scenario {
    const char *name;
    const char *method;   /* full gRPC method path */
    bool needs_records;   /* --setup prepares the bench model and K records */
    bool sends_token;     /* the call carries the bearer credential */
    bool bounded;         /* ends when build returns NULL, not on time */
    const char *per_call; /* what one successful call is, for the report */
    build_fn build;
    judge_fn judge;
    int rows_per_call; /* records one successful call writes or reads (0 = 1) */
    bool relations;    /* --setup prepares the relation models instead */
} scenario;

typedef struct run_shared {
    const options *o;
    const scenario *sc;
    int64_t measure_from_ns; /* completions in [from, to) are counted */
    int64_t measure_to_ns;
    int64_t stop_ns;         /* no call starts after this (bounded: never) */
    atomic_long next_record; /* bounded fill: next record index */
    grpc_slice method;
    grpc_metadata auth_md;
    size_t n_md;
    char auth_value[MAX_TOKEN_BYTES + 8]; /* "Bearer " + token */
} run_shared;

typedef struct slot {
    worker *w;
    grpc_call *call;
    grpc_metadata_array init_md;
    grpc_metadata_array trail_md;
    grpc_byte_buffer *send;
    grpc_byte_buffer *recv;
    grpc_status_code status;
    grpc_slice details;
    int64_t t0_ns;
    int channel;
} slot;

struct worker {
    pthread_t thread;
    run_shared *sh;
    grpc_completion_queue *cq;
    grpc_channel **channels;
    int n_channels;
    slot *slots;
    int n_slots;
    uint64_t rng;
    uint64_t seq;
    hist lat;
    uint64_t outcomes[N_OUTCOMES];
    uint64_t started;
    char first_error[160]; /* first failure's status and message */
};

static uint64_t next_rand(worker *w)
{
    /* xorshift64* */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

static Google__Protobuf__Value *number_value(Google__Protobuf__Value *v, double n)
{
    google__protobuf__value__init(v);
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    v->number_value = n;
    return v;
}

/* update: a one-field patch {"n": <fresh value>} on a random pre-filled id,
 * so every call really changes the row. */
static grpc_byte_buffer *build_update(worker *w)
{
    char id[24];
    snprintf(id, sizeof id, "b%" PRIu64, next_rand(w) % (uint64_t)w->sh->o->records);
    Google__Protobuf__Value v;
    Google__Protobuf__Struct__FieldsEntry e = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    Google__Protobuf__Struct__FieldsEntry *ep = &e;
    Google__Protobuf__Struct data = GOOGLE__PROTOBUF__STRUCT__INIT;
    Recordd__V1__UpdateRecordRequest req = RECORDD__V1__UPDATE_RECORD_REQUEST__INIT;
    e.key = "n";
    e.value = number_value(&v, (double)(++w->seq % 1000000007u));
    data.n_fields = 1;
    data.fields = &ep;
    req.model = BENCH_MODEL;
    req.id = id;
    req.data = &data;
    return pack_message(&req.base);
}

/* The commit receipt decides: an OK status with success=false is a
 * rejected write. */
static int judge_receipt(grpc_status_code st, grpc_byte_buffer *reply)
{
    if (st != GRPC_STATUS_OK)
        return (int)st;
    ProtobufCMessage *m = unpack_reply(&recordd__v1__commit_receipt__descriptor, reply);
    int out = OUTCOME_REJECTED;
    if (m != NULL && ((Recordd__V1__CommitReceipt *)m)->success)
        out = 0;
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return out;
}

/* fill (setup): CreateRecord b0..b<K-1> with {"n": 0, "note": "bench"}. */
static grpc_byte_buffer *build_fill(worker *w)
{
    long i = atomic_fetch_add(&w->sh->next_record, 1);
    if (i >= w->sh->o->records)
        return NULL;
    char id[24];
    snprintf(id, sizeof id, "b%ld", i);
    Google__Protobuf__Value vn, vs;
    Google__Protobuf__Struct__FieldsEntry en = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    Google__Protobuf__Struct__FieldsEntry es = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    Google__Protobuf__Struct__FieldsEntry *entries[2] = {&en, &es};
    Google__Protobuf__Struct data = GOOGLE__PROTOBUF__STRUCT__INIT;
    Recordd__V1__CreateRecordRequest req = RECORDD__V1__CREATE_RECORD_REQUEST__INIT;
    en.key = "n";
    en.value = number_value(&vn, 0);
    es.key = "note";
    google__protobuf__value__init(&vs);
    vs.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    vs.string_value = "bench";
    es.value = &vs;
    data.n_fields = 2;
    data.fields = entries;
    req.model = BENCH_MODEL;
    req.id = id;
    req.data = &data;
    return pack_message(&req.base);
}

/* A record left by an earlier run is as good as a new one. */
static int judge_fill(grpc_status_code st, grpc_byte_buffer *reply)
{
    if (st == GRPC_STATUS_ALREADY_EXISTS)
        return 0;
    return judge_receipt(st, reply);
}

static grpc_byte_buffer *pack_large(const ProtobufCMessage *msg);

/* bulk: one BulkMutate (ALL_OR_NOTHING) of BULK_OPS one-field patches
 * {"n": <fresh value>} on random pre-filled ids. */
enum { BULK_OPS = 100 };

static grpc_byte_buffer *build_bulk(worker *w)
{
    char ids[BULK_OPS][24];
    Google__Protobuf__Value v[BULK_OPS];
    Google__Protobuf__Struct__FieldsEntry e[BULK_OPS], *ep[BULK_OPS];
    Google__Protobuf__Struct data[BULK_OPS];
    Recordd__V1__UpdateRecordRequest upd[BULK_OPS];
    Recordd__V1__BulkOperation op[BULK_OPS], *ops[BULK_OPS];
    Recordd__V1__BulkMutateRequest req = RECORDD__V1__BULK_MUTATE_REQUEST__INIT;
    for (int i = 0; i < BULK_OPS; i++) {
        snprintf(ids[i], sizeof ids[i], "b%" PRIu64, next_rand(w) % (uint64_t)w->sh->o->records);
        google__protobuf__struct__fields_entry__init(&e[i]);
        e[i].key = "n";
        e[i].value = number_value(&v[i], (double)(++w->seq % 1000000007u));
        ep[i] = &e[i];
        google__protobuf__struct__init(&data[i]);
        data[i].n_fields = 1;
        data[i].fields = &ep[i];
        recordd__v1__update_record_request__init(&upd[i]);
        upd[i].model = BENCH_MODEL;
        upd[i].id = ids[i];
        upd[i].data = &data[i];
        recordd__v1__bulk_operation__init(&op[i]);
        op[i].operation_case = RECORDD__V1__BULK_OPERATION__OPERATION_UPDATE;
        op[i].update = &upd[i];
        ops[i] = &op[i];
    }
    req.n_operations = BULK_OPS;
    req.operations = ops;
    return pack_large(&req.base);
}

/* Every operation applied: the receipt says success and no result failed. */
static int judge_bulk(grpc_status_code st, grpc_byte_buffer *reply)
{
    if (st != GRPC_STATUS_OK)
        return (int)st;
    ProtobufCMessage *m = unpack_reply(&recordd__v1__bulk_mutate_response__descriptor, reply);
    const Recordd__V1__BulkMutateResponse *r = (const void *)m;
    int out = OUTCOME_REJECTED;
    if (r != NULL && r->receipt != NULL && r->receipt->success && r->total_failed == 0 &&
        r->receipt->ops == BULK_OPS)
        out = 0;
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return out;
}

/* health: Check for the whole server (service ""). */
static grpc_byte_buffer *build_health(worker *w)
{
    (void)w;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    return pack_message(&req.base);
}

static int judge_health(grpc_status_code st, grpc_byte_buffer *reply)
{
    if (st != GRPC_STATUS_OK)
        return (int)st;
    ProtobufCMessage *m = unpack_reply(&grpc__health__v1__health_check_response__descriptor, reply);
    int out = OUTCOME_REJECTED;
    if (m != NULL && ((Grpc__Health__V1__HealthCheckResponse *)m)->status ==
                         GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
        out = 0;
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return out;
}

/* ---- relations: get / get_expand / list / list_expand -----------------------------
 * Four models referring to each other: students (K of them, ids s000000..)
 * each pointing at a city and a school, cities at a country. get_expand
 * reads a random student with three relations expanded (city, city.country,
 * school); list_expand reads a page of 100 students with their cities. get
 * and list are the same reads without expand, the base of the ratios. */
enum { REL_COUNTRIES = 50, REL_CITIES = 500, REL_SCHOOLS = 100, REL_PAGE = 100 };

#define REL_STUDENTS "bench_students"

/* The model the relation fill is creating: 0 countries, 1 cities, 2
 * schools, 3 students (setup runs them one after the other). */
static int rel_stage;

static Google__Protobuf__Value *string_value(Google__Protobuf__Value *v, const char *str)
{
    google__protobuf__value__init(v);
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v->string_value = (char *)str;
    return v;
}

static grpc_byte_buffer *build_fill_rel(worker *w)
{
    static const char *const models[] = {"bench_countries", "bench_cities", "bench_schools",
                                         REL_STUDENTS};
    long n[] = {REL_COUNTRIES, REL_CITIES, REL_SCHOOLS, w->sh->o->records};
    long i = atomic_fetch_add(&w->sh->next_record, 1);
    if (i >= n[rel_stage])
        return NULL;
    char id[24], a[24], b[24];
    Google__Protobuf__Value v[3];
    Google__Protobuf__Struct__FieldsEntry e[3], *ep[3];
    const char *keys[3] = {"name", NULL, NULL};
    size_t nf = 1;
    snprintf(id, sizeof id, "%c%06ld", "ctks"[rel_stage], i);
    if (rel_stage == 1) {
        keys[1] = "country";
        snprintf(a, sizeof a, "c%06ld", i % REL_COUNTRIES);
        nf = 2;
    } else if (rel_stage == 3) {
        keys[1] = "city";
        keys[2] = "school";
        snprintf(a, sizeof a, "t%06ld", i % REL_CITIES);
        snprintf(b, sizeof b, "k%06ld", i % REL_SCHOOLS);
        nf = 3;
    }
    const char *vals[3] = {id, a, b};
    for (size_t k = 0; k < nf; k++) {
        google__protobuf__struct__fields_entry__init(&e[k]);
        e[k].key = (char *)keys[k];
        e[k].value = string_value(&v[k], vals[k]);
        ep[k] = &e[k];
    }
    Google__Protobuf__Struct data = GOOGLE__PROTOBUF__STRUCT__INIT;
    Recordd__V1__CreateRecordRequest req = RECORDD__V1__CREATE_RECORD_REQUEST__INIT;
    data.n_fields = nf;
    data.fields = ep;
    req.model = (char *)models[rel_stage];
    req.id = id;
    req.data = &data;
    return pack_message(&req.base);
}

static char *rel_expand_get[] = {"city", "city.country", "school"};
static char *rel_expand_list[] = {"city"};

static grpc_byte_buffer *build_get_rel(worker *w, bool expand)
{
    char id[24];
    snprintf(id, sizeof id, "s%06" PRIu64, next_rand(w) % (uint64_t)w->sh->o->records);
    Recordd__V1__GetRecordRequest req = RECORDD__V1__GET_RECORD_REQUEST__INIT;
    req.model = REL_STUDENTS;
    req.id = id;
    if (expand) {
        req.n_expand = 3;
        req.expand = rel_expand_get;
    }
    return pack_message(&req.base);
}

static grpc_byte_buffer *build_get(worker *w)
{
    return build_get_rel(w, false);
}

static grpc_byte_buffer *build_get_expand(worker *w)
{
    return build_get_rel(w, true);
}

/* A page of REL_PAGE students from a random one on (ids sort as numbers). */
static grpc_byte_buffer *build_list_rel(worker *w, bool expand)
{
    char filter[48];
    uint64_t span = w->sh->o->records > REL_PAGE ? (uint64_t)(w->sh->o->records - REL_PAGE) : 1;
    snprintf(filter, sizeof filter, "id >= \"s%06" PRIu64 "\"", next_rand(w) % span);
    Recordd__V1__ListRecordsRequest req = RECORDD__V1__LIST_RECORDS_REQUEST__INIT;
    req.model = REL_STUDENTS;
    req.filter = filter;
    req.page_size = REL_PAGE;
    if (expand) {
        req.n_expand = 1;
        req.expand = rel_expand_list;
    }
    return pack_message(&req.base);
}

static grpc_byte_buffer *build_list(worker *w)
{
    return build_list_rel(w, false);
}

static grpc_byte_buffer *build_list_expand(worker *w)
{
    return build_list_rel(w, true);
}

/* Whether r came back with the expansions build_get_expand asked for. */
static bool rel_expanded(const Recordd__V1__Record *r, bool deep)
{
    const Recordd__V1__Record *city = NULL;
    bool school = false;
    for (size_t i = 0; i < r->n_expanded; i++) {
        const Recordd__V1__ExpandedRecord *x = r->expanded[i]->value;
        if (x == NULL || x->record == NULL)
            return false;
        if (strcmp(r->expanded[i]->key, "city") == 0)
            city = x->record;
        else if (strcmp(r->expanded[i]->key, "school") == 0)
            school = true;
    }
    if (!deep)
        return city != NULL;
    return city != NULL && school && city->n_expanded == 1 &&
           city->expanded[0]->value->record != NULL;
}

static int judge_get_rel(grpc_status_code st, grpc_byte_buffer *reply, bool expand)
{
    if (st != GRPC_STATUS_OK)
        return (int)st;
    ProtobufCMessage *m = unpack_reply(&recordd__v1__record__descriptor, reply);
    const Recordd__V1__Record *r = (const void *)m;
    int out =
        r != NULL && r->data != NULL && (!expand || rel_expanded(r, true)) ? 0 : OUTCOME_REJECTED;
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return out;
}

static int judge_get(grpc_status_code st, grpc_byte_buffer *reply)
{
    return judge_get_rel(st, reply, false);
}

static int judge_get_expand(grpc_status_code st, grpc_byte_buffer *reply)
{
    return judge_get_rel(st, reply, true);
}

static int judge_list_rel(grpc_status_code st, grpc_byte_buffer *reply, bool expand)
{
    if (st != GRPC_STATUS_OK)
        return (int)st;
    ProtobufCMessage *m = unpack_reply(&recordd__v1__list_records_response__descriptor, reply);
    const Recordd__V1__ListRecordsResponse *r = (const void *)m;
    int out = r != NULL && r->n_records == REL_PAGE ? 0 : OUTCOME_REJECTED;
    for (size_t i = 0; out == 0 && expand && i < r->n_records; i++)
        if (!rel_expanded(r->records[i], false))
            out = OUTCOME_REJECTED;
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    return out;
}

static int judge_list(grpc_status_code st, grpc_byte_buffer *reply)
{
    return judge_list_rel(st, reply, false);
}

static int judge_list_expand(grpc_status_code st, grpc_byte_buffer *reply)
{
    return judge_list_rel(st, reply, true);
}

static const scenario scenarios[] = {
    {"update", "/recordd.v1.Records/UpdateRecord", true, true, false, "commit", build_update,
     judge_receipt, 1, false},
    {"health", "/grpc.health.v1.Health/Check", false, false, false, "call", build_health,
     judge_health, 1, false},
    {"bulk", "/recordd.v1.Records/BulkMutate", true, true, false, "call", build_bulk, judge_bulk,
     BULK_OPS, false},
    {"get", "/recordd.v1.Records/GetRecord", true, true, false, "read", build_get, judge_get, 1,
     true},
    {"get_expand", "/recordd.v1.Records/GetRecord", true, true, false, "read", build_get_expand,
     judge_get_expand, 1, true},
    {"list", "/recordd.v1.Records/ListRecords", true, true, false, "page", build_list, judge_list,
     REL_PAGE, true},
    {"list_expand", "/recordd.v1.Records/ListRecords", true, true, false, "page", build_list_expand,
     judge_list_expand, REL_PAGE, true},
};

static const scenario fill_scenario = {"fill",     "/recordd.v1.Records/CreateRecord",
                                       false,      true,
                                       true,       "create",
                                       build_fill, judge_fill,
                                       1,          false};
static const scenario fill_rel_scenario = {"fill",
                                           "/recordd.v1.Records/CreateRecord",
                                           false,
                                           true,
                                           true,
                                           "create",
                                           build_fill_rel,
                                           judge_fill,
                                           1,
                                           false};

static const scenario *find_scenario(const char *name)
{
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (strcmp(scenarios[i].name, name) == 0)
            return &scenarios[i];
    return NULL;
}

/* ---- channels ----------------------------------------------------------------------- */

/* A channel with its own subchannel pool, hence its own TCP connection;
 * TLS when --cacert was given. */
static grpc_channel *open_channel(const char *target)
{
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[0].value.integer = 1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_ENABLE_RETRIES;
    args[1].value.integer = 0;
    grpc_channel_args ca = {.num_args = 2, .args = args};
    grpc_channel_credentials *creds = ca_pem != NULL
                                          ? grpc_ssl_credentials_create(ca_pem, NULL, NULL, NULL)
                                          : grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

static gpr_timespec deadline_in_ms(int ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ---- the closed loop ---------------------------------------------------------------- */

/* Starts the next call of slot s. Returns false when the scenario has no
 * more work or the call could not be started (counted as an error). */
static bool start_call(slot *s)
{
    worker *w = s->w;
    run_shared *sh = w->sh;
    s->send = sh->sc->build(w);
    if (s->send == NULL)
        return false;
    s->call =
        grpc_channel_create_call(w->channels[s->channel], NULL, GRPC_PROPAGATE_DEFAULTS, w->cq,
                                 sh->method, NULL, deadline_in_ms(sh->o->timeout_ms), NULL);
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trail_md);
    s->recv = NULL;
    s->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = sh->n_md;
    ops[0].data.send_initial_metadata.metadata = sh->n_md > 0 ? &sh->auth_md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trail_md;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->t0_ns = now_ns();
    w->started++;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, 6, s, NULL);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "recordd-bench: grpc_call_start_batch: error %d\n", (int)e);
        w->outcomes[GRPC_STATUS_INTERNAL]++;
        grpc_metadata_array_destroy(&s->init_md);
        grpc_metadata_array_destroy(&s->trail_md);
        grpc_byte_buffer_destroy(s->send);
        grpc_call_unref(s->call);
        s->call = NULL;
        return false;
    }
    return true;
}

/* Accounts for the finished call of slot s and releases it. */
static void finish_call(slot *s, int64_t t1)
{
    worker *w = s->w;
    int out = w->sh->sc->judge(s->status, s->recv);
    if (out != 0 && w->first_error[0] == '\0')
        snprintf(w->first_error, sizeof w->first_error, "%s: %.*s", outcome_names[out],
                 (int)(GRPC_SLICE_LENGTH(s->details) > 120 ? 120 : GRPC_SLICE_LENGTH(s->details)),
                 (const char *)GRPC_SLICE_START_PTR(s->details));
    if (t1 >= w->sh->measure_from_ns && t1 < w->sh->measure_to_ns) {
        w->outcomes[out]++;
        if (out == 0)
            hist_add(&w->lat, (uint64_t)(t1 - s->t0_ns));
    }
    grpc_byte_buffer_destroy(s->send);
    if (s->recv != NULL)
        grpc_byte_buffer_destroy(s->recv);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trail_md);
    grpc_call_unref(s->call);
    s->call = NULL;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    run_shared *sh = w->sh;
    int active = 0;
    for (int i = 0; i < w->n_slots; i++)
        if (start_call(&w->slots[i]))
            active++;
    while (active > 0) {
        grpc_event ev = grpc_completion_queue_next(w->cq, deadline_in_ms(1000), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            continue;
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        slot *s = ev.tag;
        int64_t t1 = now_ns();
        if (!ev.success)
            s->status = GRPC_STATUS_UNAVAILABLE;
        finish_call(s, t1);
        if ((sh->sc->bounded || t1 < sh->stop_ns) && start_call(s))
            continue;
        active--;
    }
    return NULL;
}

typedef struct run_result {
    hist lat;
    uint64_t outcomes[N_OUTCOMES];
    uint64_t ok;
    uint64_t failed;
    double seconds;
    int64_t server_cpu_us; /* -1 unknown */
    int64_t client_cpu_us;
    double idle_pct; /* the machine's idle share of the window, -1 unknown */
    char first_error[160];
} run_result;

/* Runs scenario sc with o->clients calls in flight. Timed scenarios run
 * warmup + duration seconds and count completions in the measured window;
 * bounded ones run until build returns NULL and count everything. */
static int run_load(const options *o, const scenario *sc, run_result *res)
{
    run_shared sh = {.o = o, .sc = sc};
    worker *ws = calloc((size_t)o->threads, sizeof *ws);
    slot *slots = calloc((size_t)o->clients, sizeof *slots);
    grpc_channel **chans = calloc((size_t)o->connections, sizeof *chans);
    int rc = 1;
    memset(res, 0, sizeof *res);
    res->server_cpu_us = -1;
    res->idle_pct = -1;
    if (ws == NULL || slots == NULL || chans == NULL)
        goto done;
    atomic_init(&sh.next_record, 0);
    sh.method = grpc_slice_from_static_string(sc->method);
    if (sc->sends_token && o->token != NULL) {
        snprintf(sh.auth_value, sizeof sh.auth_value, "Bearer %s", o->token);
        sh.auth_md.key = grpc_slice_from_static_string("authorization");
        sh.auth_md.value = grpc_slice_from_static_string(sh.auth_value);
        sh.n_md = 1;
    }
    for (int i = 0; i < o->connections; i++)
        chans[i] = open_channel(targets[i % n_targets]);
    /* one target: thread t owns connections t, t+T, t+2T, …; its slots
     * cycle over them. n targets: client g (slots numbered across the
     * threads) calls target g % n over one of that target's C/n connections
     * (k, k+n, k+2n, …), whichever thread completes it */
    for (int t = 0, next_slot = 0; t < o->threads; t++) {
        worker *w = &ws[t];
        w->sh = &sh;
        w->cq = grpc_completion_queue_create_for_next(NULL);
        w->channels = chans;
        w->n_channels = (o->connections - t + o->threads - 1) / o->threads;
        w->n_slots = o->clients / o->threads + (t < o->clients % o->threads);
        w->slots = slots + next_slot;
        next_slot += w->n_slots;
        w->rng = (0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1)) ^ (uint64_t)now_ns();
        for (int i = 0; i < w->n_slots; i++) {
            int g = next_slot - w->n_slots + i, per_target = o->connections / n_targets;
            w->slots[i].w = w;
            w->slots[i].channel = n_targets == 1
                                      ? t + (i % w->n_channels) * o->threads
                                      : g % n_targets + (g / n_targets % per_target) * n_targets;
        }
    }
    int64_t t0 = now_ns();
    if (sc->bounded) {
        sh.measure_from_ns = t0;
        sh.measure_to_ns = INT64_MAX;
        sh.stop_ns = INT64_MAX;
    } else {
        sh.measure_from_ns = t0 + (int64_t)(o->warmup_s * 1e9);
        sh.measure_to_ns = sh.measure_from_ns + (int64_t)(o->duration_s * 1e9);
        sh.stop_ns = sh.measure_to_ns;
    }
    int started = 0;
    for (; started < o->threads; started++)
        if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0)
            break;
    int64_t srv0 = -1, cli0 = 0, m0 = t0;
    if (!sc->bounded) {
        sleep_until_ns(sh.measure_from_ns);
        m0 = now_ns();
        srv0 = servers_cpu_us();
        cli0 = self_cpu_us();
        int64_t idle0 = 0, all0 = machine_ticks(&idle0);
        sleep_until_ns(sh.measure_to_ns);
        int64_t srv1 = servers_cpu_us();
        int64_t idle1 = 0, all1 = machine_ticks(&idle1);
        if (all0 >= 0 && all1 > all0)
            res->idle_pct = 100.0 * (double)(idle1 - idle0) / (double)(all1 - all0);
        res->client_cpu_us = self_cpu_us() - cli0;
        res->server_cpu_us = srv0 >= 0 && srv1 >= 0 ? srv1 - srv0 : -1;
        res->seconds = (double)(now_ns() - m0) / 1e9;
    }
    for (int t = 0; t < started; t++)
        pthread_join(ws[t].thread, NULL);
    if (sc->bounded) {
        res->seconds = (double)(now_ns() - t0) / 1e9;
        res->client_cpu_us = self_cpu_us() - cli0;
    }
    hist_init(&res->lat);
    for (int t = 0; t < o->threads; t++) {
        hist_merge(&res->lat, &ws[t].lat);
        for (int k = 0; k < N_OUTCOMES; k++)
            res->outcomes[k] += ws[t].outcomes[k];
        if (res->first_error[0] == '\0')
            memcpy(res->first_error, ws[t].first_error, sizeof res->first_error);
    }
    res->ok = res->outcomes[0];
    for (int k = 1; k < N_OUTCOMES; k++)
        res->failed += res->outcomes[k];
    rc = started == o->threads ? 0 : 1;
done:
    for (int t = 0; ws != NULL && t < o->threads; t++) {
        if (ws[t].cq == NULL)
            continue;
        grpc_completion_queue_shutdown(ws[t].cq);
        while (
            grpc_completion_queue_next(ws[t].cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
            GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(ws[t].cq);
    }
    for (int i = 0; chans != NULL && i < o->connections; i++)
        if (chans[i] != NULL)
            grpc_channel_destroy(chans[i]);
    free(chans);
    free(slots);
    free(ws);
    return rc;
}

/* ---- setup -------------------------------------------------------------------------- */

/* One blocking unary call on ch. *reply gets the response (caller destroys
 * it); *details the status message (caller unrefs). Returns the status. */
static grpc_status_code unary(grpc_channel *ch, const options *o, const char *method,
                              grpc_byte_buffer *req, grpc_byte_buffer **reply, grpc_slice *details)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method), NULL,
                                               deadline_in_ms(o->timeout_ms), NULL);
    grpc_metadata_array im, tm;
    grpc_metadata md;
    char value[MAX_TOKEN_BYTES + 8];
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    size_t n_md = 0;
    if (o->token != NULL) {
        snprintf(value, sizeof value, "Bearer %s", o->token);
        md.key = grpc_slice_from_static_string("authorization");
        md.value = grpc_slice_from_static_string(value);
        n_md = 1;
    }
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    *reply = NULL;
    *details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = n_md;
    ops[0].data.send_initial_metadata.metadata = n_md > 0 ? &md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = details;
    if (grpc_call_start_batch(call, ops, 6, &st, NULL) == GRPC_CALL_OK) {
        grpc_event ev;
        do
            ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        while (ev.type != GRPC_OP_COMPLETE);
    } else {
        st = GRPC_STATUS_INTERNAL;
    }
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return st;
}

static void print_status(const char *what, grpc_status_code st, grpc_slice details)
{
    fprintf(
        stderr, "recordd-bench: %s: %s: %.*s\n", what,
        outcome_names[(int)st >= 0 && (int)st < N_OUTCOMES ? (int)st : (int)GRPC_STATUS_UNKNOWN],
        (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
    if (st == GRPC_STATUS_UNAUTHENTICATED)
        fprintf(stderr, "recordd-bench: the server wants a credential: pass --token or set "
                        "RECORDD_BENCH_TOKEN\n");
}

/* Packs msg into a byte buffer of any size (the caller owns it); NULL when
 * out of memory. */
static grpc_byte_buffer *pack_large(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_new(buf, n, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Calls method with req (consumed) and unpacks the reply as d into *out
 * (caller frees; may be NULL to discard). Returns 0 or the failing gRPC
 * status, after printing it. */
static int call_unary(grpc_channel *ch, const options *o, const char *method, grpc_byte_buffer *req,
                      const ProtobufCMessageDescriptor *d, ProtobufCMessage **out)
{
    grpc_byte_buffer *reply = NULL;
    grpc_slice details;
    int rc = GRPC_STATUS_RESOURCE_EXHAUSTED;
    if (out != NULL)
        *out = NULL;
    if (req == NULL) {
        fprintf(stderr, "recordd-bench: %s: out of memory\n", method);
        return rc;
    }
    grpc_status_code st = unary(ch, o, method, req, &reply, &details);
    grpc_byte_buffer_destroy(req);
    rc = (int)st;
    if (st != GRPC_STATUS_OK) {
        print_status(method, st, details);
        goto done;
    }
    if (out != NULL) {
        *out = unpack_reply(d, reply);
        if (*out == NULL) {
            fprintf(stderr, "recordd-bench: %s: undecodable reply\n", method);
            rc = GRPC_STATUS_INTERNAL;
        }
    }
done:
    if (reply != NULL)
        grpc_byte_buffer_destroy(reply);
    grpc_slice_unref(details);
    return rc;
}

/* Adds the bench model {n INTEGER, note STRING} to the organisation's
 * schema unless a model of that name is there: GetSchema, append,
 * PushSchema (other models are kept, nothing is forced). Returns 0 or the
 * failing gRPC status. */
static int push_bench_model(grpc_channel *ch, const options *o)
{
    Recordd__V1__GetSchemaRequest gq = RECORDD__V1__GET_SCHEMA_REQUEST__INIT;
    Recordd__V1__Field fn = RECORDD__V1__FIELD__INIT, fs = RECORDD__V1__FIELD__INIT;
    Recordd__V1__Field *fields[2] = {&fn, &fs};
    Recordd__V1__Model model = RECORDD__V1__MODEL__INIT;
    Recordd__V1__Model **models = NULL;
    Recordd__V1__PushSchemaRequest pq = RECORDD__V1__PUSH_SCHEMA_REQUEST__INIT;
    Recordd__V1__Schema schema;
    ProtobufCMessage *got = NULL;
    int rc = call_unary(ch, o, "/recordd.v1.Schemas/GetSchema", pack_message(&gq.base),
                        &recordd__v1__schema__descriptor, &got);
    if (rc != 0)
        goto done;
    const Recordd__V1__Schema *cur = (const Recordd__V1__Schema *)got;
    for (size_t i = 0; i < cur->n_models; i++)
        if (strcmp(cur->models[i]->name, BENCH_MODEL) == 0)
            goto done;
    models = calloc(cur->n_models + 1, sizeof *models);
    if (models == NULL) {
        rc = GRPC_STATUS_RESOURCE_EXHAUSTED;
        goto done;
    }
    fn.name = "n";
    fn.type = RECORDD__V1__FIELD_TYPE__INTEGER;
    fs.name = "note";
    fs.type = RECORDD__V1__FIELD_TYPE__STRING;
    model.name = BENCH_MODEL;
    model.n_fields = 2;
    model.fields = fields;
    if (cur->n_models > 0)
        memcpy(models, cur->models, cur->n_models * sizeof *models);
    models[cur->n_models] = &model;
    schema = *cur;
    schema.n_models = cur->n_models + 1;
    schema.models = models;
    pq.schema = &schema;
    rc = call_unary(ch, o, "/recordd.v1.Schemas/PushSchema", pack_large(&pq.base), NULL, NULL);
done:
    free(models);
    if (got != NULL)
        protobuf_c_message_free_unpacked(got, NULL);
    return rc;
}

/* Adds the relation models (countries, cities, schools, students) with a
 * merge push: whatever else the schema holds is kept. Returns 0 or the
 * failing gRPC status. */
static int push_relation_models(grpc_channel *ch, const options *o)
{
    Recordd__V1__Field f[7];
    Recordd__V1__Field *country[1], *city[2], *school[1], *student[3];
    Recordd__V1__Model m[4], *models[4];
    const char *names[] = {"bench_countries", "bench_cities", "bench_schools", REL_STUDENTS};
    for (int i = 0; i < 7; i++) {
        recordd__v1__field__init(&f[i]);
        f[i].type = RECORDD__V1__FIELD_TYPE__STRING;
        f[i].name = "name";
    }
    f[2].name = "country";
    f[2].references = "bench_countries";
    f[5].name = "city";
    f[5].references = "bench_cities";
    f[6].name = "school";
    f[6].references = "bench_schools";
    for (int i = 2; i < 7; i += i == 2 ? 3 : 1)
        f[i].type = RECORDD__V1__FIELD_TYPE__REFERENCE;
    country[0] = &f[0];
    city[0] = &f[1];
    city[1] = &f[2];
    school[0] = &f[3];
    student[0] = &f[4];
    student[1] = &f[5];
    student[2] = &f[6];
    Recordd__V1__Field **lists[] = {country, city, school, student};
    size_t counts[] = {1, 2, 1, 3};
    for (int i = 0; i < 4; i++) {
        recordd__v1__model__init(&m[i]);
        m[i].name = (char *)names[i];
        m[i].fields = lists[i];
        m[i].n_fields = counts[i];
        models[i] = &m[i];
    }
    Recordd__V1__Schema schema = RECORDD__V1__SCHEMA__INIT;
    Recordd__V1__PushSchemaRequest pq = RECORDD__V1__PUSH_SCHEMA_REQUEST__INIT;
    schema.models = models;
    schema.n_models = 4;
    pq.schema = &schema;
    pq.merge = true;
    return call_unary(ch, o, "/recordd.v1.Schemas/PushSchema", pack_large(&pq.base), NULL, NULL);
}

/* --setup for the relation scenarios: the models, then each model's records
 * in turn (countries, cities, schools, students), existing ones counting
 * as done. Returns 0 or an exit code. */
static int setup_relations(const options *o)
{
    grpc_channel *ch = open_channel(targets[0]);
    int st = push_relation_models(ch, o);
    grpc_channel_destroy(ch);
    if (st != 0) {
        fprintf(stderr, "recordd-bench: setup: pushing the relation models failed (%s)\n",
                outcome_names[st < N_OUTCOMES ? st : OUTCOME_REJECTED]);
        return st == GRPC_STATUS_UNAUTHENTICATED ? EXIT_UNAUTHENTICATED : 1;
    }
    for (rel_stage = 0; rel_stage < 4; rel_stage++) {
        run_result r;
        if (run_load(o, &fill_rel_scenario, &r) != 0)
            return 1;
        if (r.failed > 0) {
            fprintf(stderr, "recordd-bench: setup: %" PRIu64 " creates failed (first: %s)\n",
                    r.failed, r.first_error);
            return 1;
        }
    }
    return 0;
}

/* --setup: the bench model, then records b0..b<K-1> created with the same
 * closed loop (existing ones count as done). Returns 0 or an exit code. */
static int setup_records(const options *o)
{
    grpc_channel *ch = open_channel(targets[0]);
    int st = push_bench_model(ch, o);
    grpc_channel_destroy(ch);
    if (st != 0)
        return st == GRPC_STATUS_UNAUTHENTICATED ? EXIT_UNAUTHENTICATED : 1;
    run_result r;
    int64_t t0 = now_ns();
    if (run_load(o, &fill_scenario, &r) != 0)
        return 1;
    if (r.failed > 0) {
        fprintf(stderr, "recordd-bench: setup: %" PRIu64 " of %d creates failed (first: %s)\n",
                r.failed, o->records, r.first_error);
        return r.outcomes[GRPC_STATUS_UNAUTHENTICATED] > 0 ? EXIT_UNAUTHENTICATED : 1;
    }
    if (!o->json)
        fprintf(stderr, "setup: %d records ready in %.2f s\n", o->records,
                (double)(now_ns() - t0) / 1e9);
    return 0;
}

/* ---- report ------------------------------------------------------------------------- */

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void report(const options *o, const scenario *sc, const run_result *r)
{
    double rate = r->seconds > 0 ? (double)r->ok / r->seconds : 0;
    double rows_rate = rate * (sc->rows_per_call > 0 ? sc->rows_per_call : 1);
    long srv_hwm = servers_status_kb("VmHWM");
    long srv_rss = servers_status_kb("VmRSS");
    long cli_hwm = proc_status_kb(0, "VmHWM");
    double done = (double)(r->ok + r->failed);
    double srv_cpu = r->server_cpu_us >= 0 && done > 0 ? (double)r->server_cpu_us / done : -1;
    double cli_cpu = done > 0 ? (double)r->client_cpu_us / done : -1;
    uint64_t p50 = hist_quantile(&r->lat, 0.50), p99 = hist_quantile(&r->lat, 0.99);
    uint64_t p999 = hist_quantile(&r->lat, 0.999), pmax = hist_max(&r->lat);
    if (o->json) {
        printf("{\"scenario\":\"%s\",\"clients\":%d,\"threads\":%d,\"connections\":%d,", sc->name,
               o->clients, o->threads, o->connections);
        if (n_targets > 1)
            printf("\"targets\":%d,", n_targets);
        printf("\"seconds\":%.3f,\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"rate\":%.1f,"
               "\"rows_rate\":%.1f,"
               "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
               "\"mean_us\":%.1f,\"server_cpu_us_per_call\":%.2f,"
               "\"client_cpu_us_per_call\":%.2f,\"server_vmhwm_kb\":%ld,\"server_vmrss_kb\":%ld,"
               "\"client_vmhwm_kb\":%ld,\"machine_idle_pct\":%.1f,\"errors\":{",
               r->seconds, r->ok, r->failed, rate, rows_rate, us(p50), us(p99), us(p999), us(pmax),
               hist_mean(&r->lat) / 1000.0, srv_cpu, cli_cpu, srv_hwm, srv_rss, cli_hwm,
               r->idle_pct);
        const char *sep = "";
        for (int k = 1; k < N_OUTCOMES; k++)
            if (r->outcomes[k] > 0) {
                printf("%s\"%s\":%" PRIu64, sep, outcome_names[k], r->outcomes[k]);
                sep = ",";
            }
        printf("}}\n");
        return;
    }
    printf("scenario %s: %d clients, %d thread(s), %d connection(s)", sc->name, o->clients,
           o->threads, o->connections);
    if (n_targets > 1)
        printf(" to %d servers", n_targets);
    printf(", %.2f s measured\n", r->seconds);
    printf("  %-22s %.0f %ss/s (%" PRIu64 " ok, %" PRIu64 " failed)\n", "throughput", rate,
           sc->per_call, r->ok, r->failed);
    if (sc->rows_per_call > 1)
        printf("  %-22s %.0f rows/s (%d per call)\n", "records written", rows_rate,
               sc->rows_per_call);
    printf("  %-22s p50 %.0f  p99 %.0f  p999 %.0f  max %.0f  mean %.0f\n", "latency (us)", us(p50),
           us(p99), us(p999), us(pmax), hist_mean(&r->lat) / 1000.0);
    if (srv_cpu >= 0)
        printf("  %-22s server %.1f  client %.1f\n", "CPU per call (us)", srv_cpu, cli_cpu);
    else
        printf("  %-22s client %.1f\n", "CPU per call (us)", cli_cpu);
    if (r->idle_pct >= 0)
        printf("  %-22s %.0f %%\n", "machine idle", r->idle_pct);
    if (srv_hwm >= 0)
        printf("  %-22s server %ld kB (now %ld kB)  client %ld kB\n", "peak RSS (VmHWM)", srv_hwm,
               srv_rss, cli_hwm);
    else
        printf("  %-22s client %ld kB\n", "peak RSS (VmHWM)", cli_hwm);
    for (int k = 1; k < N_OUTCOMES; k++)
        if (r->outcomes[k] > 0)
            printf("  error %-16s %" PRIu64 "\n", outcome_names[k], r->outcomes[k]);
    if (r->first_error[0] != '\0')
        printf("  first error: %s\n", r->first_error);
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    const scenario *sc = find_scenario(o.scenario);
    if (sc == NULL) {
        fprintf(stderr, "recordd-bench: unknown scenario '%s' (known:", o.scenario);
        for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
            fprintf(stderr, " %s", scenarios[i].name);
        fprintf(stderr, ")\n");
        return EXIT_USAGE;
    }
    grpc_init();
    run_result r;
    rc = 0;
    if (o.setup && sc->needs_records)
        rc = sc->relations ? setup_relations(&o) : setup_records(&o);
    if (rc == 0 && o.duration_s > 0) {
        rc = run_load(&o, sc, &r);
        if (rc == 0) {
            report(&o, sc, &r);
            if (r.ok == 0)
                rc = r.outcomes[GRPC_STATUS_UNAUTHENTICATED] > 0 ? EXIT_UNAUTHENTICATED
                                                                 : EXIT_NO_SUCCESS;
            if (r.outcomes[GRPC_STATUS_UNAUTHENTICATED] > 0 && o.token == NULL)
                fprintf(stderr, "recordd-bench: calls were UNAUTHENTICATED: pass --token or set "
                                "RECORDD_BENCH_TOKEN\n");
        }
    }
    grpc_shutdown();
    return rc;
}
