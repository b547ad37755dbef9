/* filter.c: the one filter grammar (store.h, "filters, ordering and
 * listing") and order_by. Text is parsed once into a small AST (an array of
 * comparisons with typed values), which is then compiled to a WHERE
 * fragment with "?" placeholders; literal text never reaches SQL and
 * identifiers come from the schema, always quoted. Used by store_list
 * (list.c) and the by-filter bulk operations. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/store_int.h"

typedef enum filter_op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } filter_op;

static const char *const op_sql[] = {"=", "<>", "<", "<=", ">", ">="};

/* A model a path enters and the groups it may match records in. */
typedef struct filter_scope {
    char *model;
    bool all;
    char **groups;
    size_t n;
} filter_scope;

/* The models the paths of one filter or order enter, each asked of the
 * access once. */
typedef struct scope_set {
    char *org;
    filter_scope *v;
    size_t n;
} scope_set;

/* One reference a path traverses: the REFERENCE column of the model reached
 * so far, its target model and that model's scope. */
typedef struct filter_hop {
    char col[64];
    char model[64];
    size_t scope;
} filter_hop;

/* One comparison: [hops] column OP value (value.type STORE_V_NULL for null). */
typedef struct filter_cond {
    filter_hop hops[STORE_FILTER_MAX_DEPTH];
    size_t n_hops;
    char col[72]; /* column name, unquoted: a field name or a system column */
    filter_op op;
    store_value value;
    /* a fractional (or out of int64's range) number against an integer
     * column: compared as a double, which PostgreSQL must be told */
    bool as_real;
} filter_cond;

struct store_filter {
    filter_cond *conds;
    size_t n;
    char *sql; /* compiled fragment */
    scope_set scopes;
};

/* One sort key: col of the base model, or (n_hops 1) col of the record
 * hops[0] references. */
typedef struct order_term {
    filter_hop hops[1];
    size_t n_hops;
    char col[72];
    bool desc;
} order_term;

struct store_order {
    order_term t[STORE_ORDER_MAX_TERMS + 1];
    size_t n;
    char *table; /* the base model's table, for a key through a reference */
    scope_set scopes;
};

/* ---- columns ----------------------------------------------------------------- */

/* A name the grammar accepts: the filterable system fields and their
 * columns, then the model's fields. */
static const struct {
    const char *name, *col;
    store_type type;
} sys_cols[] = {
    {"id", "_id", STORE_T_STRING},
    {"group", "_group", STORE_T_STRING},
    {"version", "_version", STORE_T_INTEGER},
    {"syncId", "_sync_id", STORE_T_INTEGER},
    {"createdAt", "_created_at", STORE_T_TIMESTAMP},
    {"updatedAt", "_updated_at", STORE_T_TIMESTAMP},
};

/* Resolves name[0..len) to its column and type; false when m has no such
 * field and it is no system field (case-sensitive). */
static bool resolve(const store_model *m, const char *name, size_t len, const char **col,
                    store_type *type)
{
    for (size_t i = 0; i < sizeof sys_cols / sizeof sys_cols[0]; i++) {
        if (strlen(sys_cols[i].name) == len && memcmp(sys_cols[i].name, name, len) == 0) {
            *col = sys_cols[i].col;
            *type = sys_cols[i].type;
            return true;
        }
    }
    for (size_t i = 0; m != NULL && i < m->n_fields; i++) {
        const store_field *f = &m->fields[i];
        if (strlen(f->name) == len && memcmp(f->name, name, len) == 0) {
            *col = f->name;
            *type = f->type;
            return true;
        }
    }
    return false;
}

/* ---- scopes ------------------------------------------------------------------ */

static void scopes_free(scope_set *ss)
{
    for (size_t i = 0; i < ss->n; i++) {
        for (size_t g = 0; g < ss->v[i].n; g++)
            free(ss->v[i].groups[g]);
        free(ss->v[i].groups);
        free(ss->v[i].model);
    }
    free(ss->v);
    free(ss->org);
    memset(ss, 0, sizeof *ss);
}

/* *idx = the scope of model in ss, asking access (NULL: every group) the
 * first time. */
static rd_code scope_get(scope_set *ss, const store_filter_access *access, const char *model,
                         size_t *idx, rd_err *err)
{
    for (size_t i = 0; i < ss->n; i++) {
        if (strcmp(ss->v[i].model, model) == 0) {
            *idx = i;
            return RD_OK;
        }
    }
    bool all = true;
    const char **groups = NULL;
    size_t n = 0;
    if (access != NULL && access->groups != NULL) {
        all = false;
        rd_code code = access->groups(access->ctx, model, &all, &groups, &n, err);
        if (code != RD_OK)
            return code;
    }
    filter_scope *v = realloc(ss->v, (ss->n + 1) * sizeof *v);
    if (v == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    ss->v = v;
    filter_scope *sc = &v[ss->n];
    memset(sc, 0, sizeof *sc);
    sc->model = strdup(model);
    sc->all = all;
    if (sc->model == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    ss->n++; /* freed with ss from here on */
    if (!all && n > 0) {
        sc->groups = calloc(n, sizeof *sc->groups);
        if (sc->groups == NULL)
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        for (; sc->n < n; sc->n++) {
            sc->groups[sc->n] = strdup(groups[sc->n] ? groups[sc->n] : "");
            if (sc->groups[sc->n] == NULL)
                return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        }
    }
    *idx = ss->n - 1;
    return RD_OK;
}

/* Appends pre "<alias>._group IN (?, ...)" post for a restricted scope,
 * nothing for one with every group. */
static void scope_sql(store_sbuf *b, const filter_scope *sc, const char *alias, const char *pre,
                      const char *post)
{
    if (sc->all)
        return;
    store_sbuf_add(b, pre);
    store_sbuf_ident(b, alias);
    store_sbuf_add(b, "._group IN (");
    for (size_t g = 0; g < sc->n; g++)
        store_sbuf_add(b, g == 0 ? "?" : ", ?");
    store_sbuf_add(b, sc->n == 0 ? "NULL)" : ")");
    store_sbuf_add(b, post);
}

static int scope_bind(const filter_scope *sc, store_dbst *st, int *idx)
{
    for (size_t g = 0; !sc->all && g < sc->n; g++) {
        int rc = store_db_bind_text(st, (*idx)++, sc->groups[g], -1, STORE_DB_STATIC);
        if (rc != STORE_DB_OK)
            return rc;
    }
    return STORE_DB_OK;
}

/* ---- lexing ------------------------------------------------------------------- */

typedef struct lexer {
    const char *s;
    size_t len, pos;
    const char *what; /* "filter" or "orderBy": err->field and message prefix */
    rd_err *err;
} lexer;

static bool is_ws(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_ident_start(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool is_ident(int c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static void skip_ws(lexer *lx)
{
    while (lx->pos < lx->len && is_ws((unsigned char)lx->s[lx->pos]))
        lx->pos++;
}

static int peek(const lexer *lx)
{
    return lx->pos < lx->len ? (unsigned char)lx->s[lx->pos] : -1;
}

/* A syntax error at 1-based byte position pos + 1. */
static rd_code syntax(lexer *lx, size_t pos, const char *expected)
{
    if (pos >= lx->len)
        return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                       "%s: expected %s at position %zu (end of input)", lx->what, expected,
                       pos + 1);
    return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                   "%s: expected %s at position %zu, found '%c'", lx->what, expected, pos + 1,
                   lx->s[pos] >= 0x20 && lx->s[pos] < 0x7f ? lx->s[pos] : '?');
}

/* Reads an identifier into [*start, *start + *n); false when none is here. */
static bool read_ident(lexer *lx, size_t *start, size_t *n)
{
    *start = lx->pos;
    if (!is_ident_start(peek(lx)))
        return false;
    while (is_ident(peek(lx)))
        lx->pos++;
    *n = lx->pos - *start;
    return true;
}

/* Rejects blank-only or oversized text before parsing; *blank is set for
 * NULL or whitespace-only text. */
static rd_code check_text(lexer *lx, const char *text, bool *blank)
{
    *blank = true;
    lx->s = text ? text : "";
    lx->len = strlen(lx->s);
    lx->pos = 0;
    if (lx->len > STORE_FILTER_MAX_LEN)
        return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what, "%s: longer than %d bytes",
                       lx->what, STORE_FILTER_MAX_LEN);
    skip_ws(lx);
    *blank = lx->pos == lx->len;
    lx->pos = 0;
    return RD_OK;
}

/* ---- paths -------------------------------------------------------------------- */

/* One name of a dotted path: [start, start + n) of the text. */
typedef struct path_seg {
    size_t start, n;
} path_seg;

#define PATH_MAX_SEGS (STORE_FILTER_MAX_DEPTH + 2)

static const char *type_word(store_type t);

/* Reads name ("." name)* at the lexer's position: the first PATH_MAX_SEGS
 * names into segs, *nseg the number read (at most PATH_MAX_SEGS: a longer
 * path stops there, which the depth check refuses). */
static rd_code read_path(lexer *lx, path_seg *segs, size_t *nseg)
{
    *nseg = 0;
    if (!read_ident(lx, &segs[0].start, &segs[0].n))
        return syntax(lx, lx->pos, "a field name");
    *nseg = 1;
    while (peek(lx) == '.' && *nseg < PATH_MAX_SEGS) {
        lx->pos++;
        if (!read_ident(lx, &segs[*nseg].start, &segs[*nseg].n))
            return syntax(lx, lx->pos, "a field name after '.'");
        (*nseg)++;
    }
    return RD_OK;
}

/* The path's text, for messages (at most 255 bytes). */
static void path_text(const lexer *lx, const path_seg *segs, size_t nseg, char *out, size_t cap)
{
    size_t end = segs[nseg - 1].start + segs[nseg - 1].n, n = end - segs[0].start;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, lx->s + segs[0].start, n);
    out[n] = '\0';
}

/* Resolves segs[0..nseg) from the base model m of s: every segment but the
 * last must be a REFERENCE field (each traversal a hop, at most max_hops,
 * its target's scope from ss/access); the last one's column and type go to
 * *col / *type. Errors name the segment's position. */
static rd_code resolve_path(lexer *lx, const store_schema *s, const store_model *m,
                            const path_seg *segs, size_t nseg, size_t max_hops, scope_set *ss,
                            const store_filter_access *access, filter_hop *hops, size_t *n_hops,
                            const char **col, store_type *type)
{
    char path[256];
    path_text(lx, segs, nseg, path, sizeof path);
    *n_hops = 0;
    for (size_t i = 0; i < nseg; i++) {
        const char *name = lx->s + segs[i].start;
        size_t n = segs[i].n;
        if (n >= 64 || !resolve(m, name, n, col, type)) {
            if (i == 0)
                return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                               "%s: unknown field '%.*s' at position %zu", lx->what,
                               (int)(n < 64 ? n : 64), name, segs[i].start + 1);
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: unknown field '%.*s' of model '%s' in '%s' at position %zu",
                           lx->what, (int)(n < 64 ? n : 64), name, m->name, path,
                           segs[i].start + 1);
        }
        if (i + 1 == nseg)
            break;
        if (*type != STORE_T_REFERENCE)
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: field '%.*s' of model '%s' is %s, not a REFERENCE, so '%s' "
                           "cannot go through it (position %zu)",
                           lx->what, (int)n, name, m != NULL ? m->name : "", type_word(*type), path,
                           segs[i].start + 1);
        if (i >= max_hops)
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: '%s' traverses more than %zu reference%s (position %zu)", lx->what,
                           path, max_hops, max_hops == 1 ? "" : "s", segs[i].start + 1);
        const store_field *f = store_model_field(m, *col);
        const store_model *next =
            f != NULL && f->references != NULL ? store_schema_model(s, f->references) : NULL;
        if (next == NULL)
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: field '%.*s' references a model that is not in the schema "
                           "(position %zu)",
                           lx->what, (int)n, name, segs[i].start + 1);
        filter_hop *h = &hops[(*n_hops)++];
        snprintf(h->col, sizeof h->col, "%s", *col);
        snprintf(h->model, sizeof h->model, "%s", next->name);
        rd_code code = scope_get(ss, access, next->name, &h->scope, lx->err);
        if (code != RD_OK)
            return code;
        m = next;
    }
    return RD_OK;
}

/* ---- filter ------------------------------------------------------------------- */

static void filter_values_free(store_filter *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->conds[i].value.s);
}

void store_filter_free(store_filter *f)
{
    if (f == NULL)
        return;
    filter_values_free(f);
    free(f->conds);
    free(f->sql);
    scopes_free(&f->scopes);
    free(f);
}

size_t store_filter_conditions(const store_filter *f)
{
    return f != NULL ? f->n : 0;
}

const char *store_filter_sql(const store_filter *f)
{
    return f != NULL && f->sql != NULL ? f->sql : "TRUE";
}

static rd_code parse_op(lexer *lx, filter_op *op)
{
    int c = peek(lx);
    size_t at = lx->pos;
    int next = at + 1 < lx->len ? (unsigned char)lx->s[at + 1] : -1;
    if (c == '=') {
        *op = OP_EQ;
        lx->pos += 1;
    } else if (c == '!' && next == '=') {
        *op = OP_NE;
        lx->pos += 2;
    } else if (c == '<') {
        *op = next == '=' ? OP_LE : OP_LT;
        lx->pos += next == '=' ? 2 : 1;
    } else if (c == '>') {
        *op = next == '=' ? OP_GE : OP_GT;
        lx->pos += next == '=' ? 2 : 1;
    } else {
        return syntax(lx, at, "an operator (= != < <= > >=)");
    }
    return RD_OK;
}

/* The kinds of literal, for type checks and messages. */
typedef enum lit_kind { LIT_STRING, LIT_NUMBER, LIT_BOOL, LIT_NULL } lit_kind;

static const char *const lit_name[] = {"a string", "a number", "a boolean", "null"};

/* Reads a double-quoted string into *out (malloc'd, unescaped). */
static rd_code read_string(lexer *lx, char **out, size_t *n)
{
    size_t start = lx->pos;
    lx->pos++; /* the opening quote */
    char *buf = malloc(lx->len - start + 1);
    size_t k = 0;
    if (buf == NULL)
        return rd_errf(lx->err, RD_INTERNAL, NULL, "out of memory");
    for (;;) {
        int c = peek(lx);
        if (c < 0) {
            free(buf);
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: unterminated string starting at position %zu", lx->what, start + 1);
        }
        lx->pos++;
        if (c == '"')
            break;
        if (c == '\\') {
            int e = peek(lx);
            if (e != '"' && e != '\\') {
                free(buf);
                return syntax(lx, lx->pos, "\\\" or \\\\ after a backslash");
            }
            lx->pos++;
            c = e;
        }
        buf[k++] = (char)c;
    }
    buf[k] = '\0';
    *out = buf;
    *n = k;
    return RD_OK;
}

/* Reads a number literal: [+-]? digit+ ("." digit+)?. An integer that fits
 * in 64 bits becomes STORE_V_INT, anything else STORE_V_REAL. */
static rd_code read_number(lexer *lx, store_value *v)
{
    size_t start = lx->pos;
    bool frac = false;
    char buf[64];
    if (peek(lx) == '+' || peek(lx) == '-')
        lx->pos++;
    if (!(peek(lx) >= '0' && peek(lx) <= '9'))
        return syntax(lx, lx->pos, "a digit");
    while (peek(lx) >= '0' && peek(lx) <= '9')
        lx->pos++;
    if (peek(lx) == '.') {
        frac = true;
        lx->pos++;
        if (!(peek(lx) >= '0' && peek(lx) <= '9'))
            return syntax(lx, lx->pos, "a digit after '.'");
        while (peek(lx) >= '0' && peek(lx) <= '9')
            lx->pos++;
    }
    size_t n = lx->pos - start;
    if (n >= sizeof buf)
        return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                       "%s: number at position %zu is too long", lx->what, start + 1);
    memcpy(buf, lx->s + start, n);
    buf[n] = '\0';
    if (!frac) {
        errno = 0;
        long long i = strtoll(buf, NULL, 10);
        if (errno == 0) {
            v->type = STORE_V_INT;
            v->i = i;
            return RD_OK;
        }
    }
    v->type = STORE_V_REAL;
    v->d = strtod(buf, NULL);
    return RD_OK;
}

/* Reads one literal at the lexer's position into *v and its kind. */
static rd_code read_literal(lexer *lx, store_value *v, lit_kind *kind)
{
    int c = peek(lx);
    memset(v, 0, sizeof *v);
    if (c == '"') {
        *kind = LIT_STRING;
        v->type = STORE_V_TEXT;
        return read_string(lx, &v->s, &v->n);
    }
    if (c == '+' || c == '-' || (c >= '0' && c <= '9')) {
        *kind = LIT_NUMBER;
        return read_number(lx, v);
    }
    size_t start, n;
    if (read_ident(lx, &start, &n)) {
        const char *w = lx->s + start;
        if (n == 4 && memcmp(w, "true", 4) == 0) {
            *kind = LIT_BOOL;
            v->type = STORE_V_INT;
            v->i = 1;
            return RD_OK;
        }
        if (n == 5 && memcmp(w, "false", 5) == 0) {
            *kind = LIT_BOOL;
            v->type = STORE_V_INT;
            return RD_OK;
        }
        if (n == 4 && memcmp(w, "null", 4) == 0) {
            *kind = LIT_NULL;
            v->type = STORE_V_NULL;
            return RD_OK;
        }
        lx->pos = start;
    }
    return syntax(lx, lx->pos, "a literal (\"string\", number, true, false or null)");
}

static const char *type_word(store_type t)
{
    switch (t) {
    case STORE_T_STRING:
        return "STRING";
    case STORE_T_INTEGER:
        return "INTEGER";
    case STORE_T_NUMBER:
        return "NUMBER";
    case STORE_T_BOOLEAN:
        return "BOOLEAN";
    case STORE_T_TIMESTAMP:
        return "TIMESTAMP";
    case STORE_T_JSON:
        return "JSON";
    case STORE_T_ENUM:
        return "ENUM";
    case STORE_T_REFERENCE:
        return "REFERENCE";
    }
    return "?";
}

/* Checks literal kind against the field's type and op and converts the
 * value to its stored form (TIMESTAMP: µs). pos is the literal's 1-based
 * position. */
static rd_code fit_literal(lexer *lx, const char *field, store_type type, filter_op op,
                           lit_kind kind, store_value *v, size_t pos)
{
    bool ordering = op != OP_EQ && op != OP_NE;
    if (kind == LIT_NULL) {
        if (ordering)
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: null compares only with = or != (position %zu)", lx->what, pos);
        return RD_OK;
    }
    bool ok = false;
    switch (type) {
    case STORE_T_STRING:
    case STORE_T_ENUM:
    case STORE_T_REFERENCE:
        ok = kind == LIT_STRING;
        break;
    case STORE_T_INTEGER:
    case STORE_T_NUMBER:
        ok = kind == LIT_NUMBER;
        break;
    case STORE_T_BOOLEAN:
        if (kind == LIT_BOOL && ordering)
            return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                           "%s: field '%s' is BOOLEAN and compares only with = or != "
                           "(position %zu)",
                           lx->what, field, pos);
        ok = kind == LIT_BOOL;
        break;
    case STORE_T_TIMESTAMP:
        ok = kind == LIT_STRING;
        if (ok) {
            int64_t t;
            if (rd_parse_rfc3339(v->s, &t) != 0)
                return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                               "%s: field '%s' is a TIMESTAMP and needs an RFC 3339 string "
                               "(position %zu)",
                               lx->what, field, pos);
            free(v->s);
            v->s = NULL;
            v->n = 0;
            v->type = STORE_V_INT;
            v->i = t;
        }
        break;
    case STORE_T_JSON:
        break;
    }
    if (!ok)
        return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                       "%s: field '%s' is %s; %s literal does not compare with it "
                       "(position %zu)",
                       lx->what, field, type_word(type), lit_name[kind], pos);
    return RD_OK;
}

/* Parses one `field OP literal` into *c (field possibly a path). */
static rd_code parse_cmp(lexer *lx, const store_schema *s, const store_model *m, scope_set *ss,
                         const store_filter_access *access, filter_cond *c)
{
    path_seg segs[PATH_MAX_SEGS];
    size_t nseg;
    const char *col;
    store_type type;
    rd_code code;
    lit_kind kind = LIT_NULL;
    code = read_path(lx, segs, &nseg);
    if (code != RD_OK)
        return code;
    code = resolve_path(lx, s, m, segs, nseg, STORE_FILTER_MAX_DEPTH, ss, access, c->hops,
                        &c->n_hops, &col, &type);
    if (code != RD_OK)
        return code;
    char field[256];
    path_text(lx, segs, nseg, field, sizeof field);
    if (type == STORE_T_JSON)
        return rd_errf(lx->err, RD_VALIDATION_FAILED, lx->what,
                       "%s: field '%s' is JSON and cannot be filtered (position %zu)", lx->what,
                       field, segs[nseg - 1].start + 1);
    snprintf(c->col, sizeof c->col, "%s", col);
    skip_ws(lx);
    code = parse_op(lx, &c->op);
    if (code != RD_OK)
        return code;
    skip_ws(lx);
    size_t lit_pos = lx->pos + 1;
    code = read_literal(lx, &c->value, &kind);
    if (code != RD_OK)
        return code;
    code = fit_literal(lx, field, type, c->op, kind, &c->value, lit_pos);
    c->as_real = code == RD_OK && type == STORE_T_INTEGER && c->value.type == STORE_V_REAL;
    return code;
}

/* The alias of the table hop h (1-based) of a path reads. */
static void hop_alias(char *out, size_t cap, size_t h)
{
    snprintf(out, cap, "_r%zu", h);
}

/* Appends one comparison: through its hops as nested semi-joins
 *   "city" IN (SELECT "_r1"._id FROM <cities> AS "_r1" WHERE
 *              ["_r1"._group IN (?, ...) AND] "_r1"."name" = ?)
 * (each table aliased, so every column names its table). */
static void cond_sql(store_sbuf *b, const store_filter *f, const filter_cond *c)
{
    char alias[24]; /* "_r" and any size_t */
    for (size_t h = 0; h < c->n_hops; h++) {
        if (h > 0) {
            hop_alias(alias, sizeof alias, h);
            store_sbuf_ident(b, alias);
            store_sbuf_add(b, ".");
        }
        store_sbuf_ident(b, c->hops[h].col);
        hop_alias(alias, sizeof alias, h + 1);
        store_sbuf_add(b, " IN (SELECT ");
        store_sbuf_ident(b, alias);
        store_sbuf_add(b, "._id FROM ");
        store_sbuf_table(b, f->scopes.org, c->hops[h].model);
        store_sbuf_add(b, " AS ");
        store_sbuf_ident(b, alias);
        store_sbuf_add(b, " WHERE ");
        scope_sql(b, &f->scopes.v[c->hops[h].scope], alias, "", " AND ");
    }
    if (c->n_hops > 0) {
        hop_alias(alias, sizeof alias, c->n_hops);
        store_sbuf_ident(b, alias);
        store_sbuf_add(b, ".");
    }
    store_sbuf_ident(b, c->col);
    if (c->value.type == STORE_V_NULL)
        store_sbuf_add(b, c->op == OP_EQ ? " IS NULL" : " IS NOT NULL");
    else
        store_sbuf_addf(b, c->as_real ? " %s CAST(? AS DOUBLE PRECISION)" : " %s ?", op_sql[c->op]);
    for (size_t h = 0; h < c->n_hops; h++)
        store_sbuf_add(b, ")");
}

/* Compiles the AST into f->sql. */
static rd_code compile(store_filter *f, rd_err *err)
{
    store_sbuf b = {0};
    for (size_t i = 0; i < f->n; i++) {
        if (i > 0)
            store_sbuf_add(&b, " AND ");
        cond_sql(&b, f, &f->conds[i]);
    }
    if (f->n == 0)
        store_sbuf_add(&b, "TRUE");
    if (b.oom) {
        store_sbuf_free(&b);
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    f->sql = b.p;
    return RD_OK;
}

rd_code store_filter_parse(const store_schema *s, const char *org, const store_model *m,
                           const char *text, const store_filter_access *access, store_filter **out,
                           rd_err *err)
{
    lexer lx = {.what = "filter", .err = err};
    bool blank;
    rd_code code;
    *out = NULL;
    store_filter *f = calloc(1, sizeof *f);
    if (f == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    f->scopes.org = strdup(org != NULL ? org : "");
    if (f->scopes.org == NULL) {
        free(f);
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    code = check_text(&lx, text, &blank);
    if (code != RD_OK || blank)
        goto done;
    f->conds = calloc(STORE_FILTER_MAX_CONDS, sizeof *f->conds);
    if (f->conds == NULL) {
        code = rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        goto done;
    }
    skip_ws(&lx);
    for (;;) {
        if (f->n == STORE_FILTER_MAX_CONDS) {
            code = rd_errf(err, RD_VALIDATION_FAILED, "filter",
                           "filter: more than %d comparisons (position %zu)",
                           STORE_FILTER_MAX_CONDS, lx.pos + 1);
            goto done;
        }
        code = parse_cmp(&lx, s, m, &f->scopes, access, &f->conds[f->n]);
        f->n++; /* its value (if any) is freed with f */
        if (code != RD_OK)
            goto done;
        size_t before = lx.pos;
        skip_ws(&lx);
        if (lx.pos == lx.len)
            break;
        size_t at = lx.pos;
        if (lx.pos == before || lx.len - at < 4 || memcmp(lx.s + at, "AND", 3) != 0 ||
            !is_ws((unsigned char)lx.s[at + 3])) {
            code = syntax(&lx, at, "AND (uppercase, between spaces) or the end of the filter");
            goto done;
        }
        lx.pos += 3;
        skip_ws(&lx);
    }
done:
    if (code == RD_OK)
        code = compile(f, err);
    if (code != RD_OK) {
        store_filter_free(f);
        return code;
    }
    *out = f;
    return RD_OK;
}

/* ---- order_by ------------------------------------------------------------------ */

void store_order_free(store_order *o)
{
    if (o == NULL)
        return;
    scopes_free(&o->scopes);
    free(o->table);
    free(o);
}

size_t store_order_terms(const store_order *o)
{
    return o != NULL ? o->n : 1;
}

rd_code store_order_parse(const store_schema *s, const char *org, const store_model *m,
                          const char *text, const store_filter_access *access, store_order **out,
                          rd_err *err)
{
    lexer lx = {.what = "orderBy", .err = err};
    bool blank, has_id = false;
    rd_code code;
    *out = NULL;
    store_order *o = calloc(1, sizeof *o);
    if (o == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    o->scopes.org = strdup(org != NULL ? org : "");
    if (o->scopes.org == NULL) {
        free(o);
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    if (m != NULL) {
        store_sbuf tb = {0};
        store_sbuf_table(&tb, o->scopes.org, m->name);
        o->table = tb.p;
        if (tb.oom || o->table == NULL) {
            store_sbuf_free(&tb);
            store_order_free(o);
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        }
    }
    code = check_text(&lx, text, &blank);
    if (code != RD_OK || blank)
        goto done;
    for (;;) {
        path_seg segs[PATH_MAX_SEGS];
        size_t nseg, n_hops;
        filter_hop hops[STORE_FILTER_MAX_DEPTH];
        const char *col;
        store_type type;
        skip_ws(&lx);
        if (has_id) {
            code = rd_errf(err, RD_VALIDATION_FAILED, "orderBy",
                           "orderBy: id is unique, so no term may follow it (position %zu)",
                           lx.pos + 1);
            goto done;
        }
        if (o->n == STORE_ORDER_MAX_TERMS) {
            code = rd_errf(err, RD_VALIDATION_FAILED, "orderBy", "orderBy: more than %d terms",
                           STORE_ORDER_MAX_TERMS);
            goto done;
        }
        code = read_path(&lx, segs, &nseg);
        if (code == RD_OK)
            code = resolve_path(&lx, s, m, segs, nseg, 1, &o->scopes, access, hops, &n_hops, &col,
                                &type);
        if (code != RD_OK)
            goto done;
        char field[256];
        path_text(&lx, segs, nseg, field, sizeof field);
        size_t start = segs[0].start;
        if (type == STORE_T_JSON) {
            code = rd_errf(err, RD_VALIDATION_FAILED, "orderBy",
                           "orderBy: field '%s' is JSON and cannot be ordered by (position %zu)",
                           field, segs[nseg - 1].start + 1);
            goto done;
        }
        for (size_t i = 0; i < o->n; i++) {
            if (strcmp(o->t[i].col, col) == 0 && o->t[i].n_hops == n_hops &&
                (n_hops == 0 || strcmp(o->t[i].hops[0].col, hops[0].col) == 0)) {
                code = rd_errf(err, RD_VALIDATION_FAILED, "orderBy",
                               "orderBy: field '%s' given twice (position %zu)", field, start + 1);
                goto done;
            }
        }
        order_term *t = &o->t[o->n++];
        snprintf(t->col, sizeof t->col, "%s", col);
        t->n_hops = n_hops;
        if (n_hops > 0)
            t->hops[0] = hops[0];
        has_id = n_hops == 0 && strcmp(col, "_id") == 0;
        size_t before = lx.pos;
        skip_ws(&lx);
        size_t dstart, dn;
        if (lx.pos > before && read_ident(&lx, &dstart, &dn)) {
            if (dn == 4 && strncasecmp(lx.s + dstart, "desc", 4) == 0) {
                t->desc = true;
            } else if (!(dn == 3 && strncasecmp(lx.s + dstart, "asc", 3) == 0)) {
                code = syntax(&lx, dstart, "asc, desc, ',' or the end");
                goto done;
            }
            skip_ws(&lx);
        }
        if (lx.pos == lx.len)
            break;
        if (peek(&lx) != ',') {
            code = syntax(&lx, lx.pos, "asc, desc, ',' or the end");
            goto done;
        }
        lx.pos++;
    }
done:
    if (code != RD_OK) {
        store_order_free(o);
        return code;
    }
    if (!has_id)
        snprintf(o->t[o->n++].col, sizeof o->t[0].col, "%s", "_id");
    *out = o;
    return RD_OK;
}

/* ---- internals for list.c -------------------------------------------------------- */

int store_value_bind(store_dbst *st, int idx, const store_value *v)
{
    switch (v->type) {
    case STORE_V_NULL:
        return store_db_bind_null(st, idx);
    case STORE_V_INT:
        return store_db_bind_int64(st, idx, v->i);
    case STORE_V_REAL:
        return store_db_bind_double(st, idx, v->d);
    case STORE_V_TEXT:
        return store_db_bind_text(st, idx, v->s, (int)v->n, STORE_DB_STATIC);
    }
    return STORE_DB_MISMATCH;
}

int store_filter_bind(const store_filter *f, store_dbst *st, int *idx)
{
    for (size_t i = 0; f != NULL && i < f->n; i++) {
        const filter_cond *c = &f->conds[i];
        int rc;
        /* in cond_sql's order: each hop's groups, then the value */
        for (size_t h = 0; h < c->n_hops; h++) {
            rc = scope_bind(&f->scopes.v[c->hops[h].scope], st, idx);
            if (rc != STORE_DB_OK)
                return rc;
        }
        if (c->value.type == STORE_V_NULL)
            continue;
        rc = store_value_bind(st, (*idx)++, &c->value);
        if (rc != STORE_DB_OK)
            return rc;
    }
    return STORE_DB_OK;
}

bool store_order_has_path(const store_order *o)
{
    for (size_t i = 0; o != NULL && i < o->n; i++)
        if (o->t[i].n_hops > 0)
            return true;
    return false;
}

void store_order_key_sql(store_sbuf *b, const store_order *o, size_t i)
{
    const order_term *t = o != NULL ? &o->t[i] : NULL;
    if (t == NULL || t->n_hops == 0) {
        bool desc;
        store_sbuf_ident(b, store_order_col(o, i, &desc));
        return;
    }
    /* the referenced record's field, null when the reference is unset or
     * the record is not in a readable group */
    store_sbuf_add(b, "(SELECT \"_o\".");
    store_sbuf_ident(b, t->col);
    store_sbuf_add(b, " FROM ");
    store_sbuf_table(b, o->scopes.org, t->hops[0].model);
    store_sbuf_add(b, " AS \"_o\" WHERE \"_o\"._id = ");
    store_sbuf_add(b, o->table);
    store_sbuf_add(b, ".");
    store_sbuf_ident(b, t->hops[0].col);
    scope_sql(b, &o->scopes.v[t->hops[0].scope], "_o", " AND ", "");
    store_sbuf_add(b, ")");
}

int store_order_key_bind(const store_order *o, size_t i, store_dbst *st, int *idx)
{
    if (o == NULL || o->t[i].n_hops == 0)
        return STORE_DB_OK;
    return scope_bind(&o->scopes.v[o->t[i].hops[0].scope], st, idx);
}

const char *store_order_col(const store_order *o, size_t i, bool *desc)
{
    static const char id_col[] = "_id";
    if (o == NULL) {
        *desc = false;
        return id_col;
    }
    *desc = o->t[i].desc;
    return o->t[i].col;
}
