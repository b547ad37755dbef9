/* gw_route: the gateway's route table, built once at start-up from the
 * google.api.http options in the embedded FileDescriptorSet (DESIGN.md §8),
 * then read-only (any thread may match). Templates follow
 * google/api/http.proto: "/" segments [":" verb], a segment being a
 * literal, "*", "**" or {field.path[=segments]}. */
#include "service/gw_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/api/http.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

#define HTTP_RULE_FIELD 72295728u /* (google.api.http) on MethodOptions */
#define MAX_SEGS 32               /* segments of a template or a matched path */

typedef enum seg_kind { SEG_MANY = 0, SEG_ONE = 1, SEG_LIT = 2 } seg_kind;

typedef struct seg {
    seg_kind kind;
    char *lit; /* SEG_LIT */
} seg;

typedef struct var {
    char *field;
    size_t start, end; /* segments [start, end) */
} var;

typedef struct route {
    char *verb;    /* "GET", or the custom kind */
    char *pattern; /* the template as written */
    char *custom;  /* the ":verb" suffix without ':', or NULL */
    char *body, *response_body;
    char *doc; /* the method's leading comment, or NULL */
    const svc_method *method;
    seg segs[MAX_SEGS];
    size_t n_segs;
    var vars[GW_MAX_VARS];
    size_t n_vars;
} route;

struct gw_routes {
    route *r;
    size_t n, cap;
};

/* ---- templates ----------------------------------------------------------------- */

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* A literal path segment: unreserved, sub-delims, ':' '@' or %XX. */
static bool literal_char(char c)
{
    return ident_char(c) || (c != '\0' && strchr("-.~%!$&'()+,;=@", c) != NULL);
}

/* Parses segments from *p until stop ('}' or '\0'), appending to r. */
static int parse_segs(route *r, const char **p, char stop, bool in_var)
{
    for (;;) {
        if (r->n_segs == MAX_SEGS)
            return -1;
        seg *s = &r->segs[r->n_segs];
        const char *q = *p;
        if (q[0] == '*' && q[1] == '*') {
            s->kind = SEG_MANY;
            q += 2;
        } else if (q[0] == '*') {
            s->kind = SEG_ONE;
            q += 1;
        } else if (q[0] == '{') {
            if (in_var || r->n_vars == GW_MAX_VARS)
                return -1;
            const char *f = ++q;
            while (ident_char(*q) || (*q == '.' && q > f && q[-1] != '.'))
                q++;
            if (q == f || q[-1] == '.' || (*q != '}' && *q != '='))
                return -1;
            var *v = &r->vars[r->n_vars++];
            v->field = strndup(f, (size_t)(q - f));
            v->start = r->n_segs;
            if (v->field == NULL)
                return -1;
            if (*q == '=') {
                q++;
                if (parse_segs(r, &q, '}', true) != 0)
                    return -1;
            } else {
                s->kind = SEG_ONE;
                r->n_segs++;
            }
            if (*q != '}')
                return -1;
            q++;
            v->end = r->n_segs;
            *p = q;
            goto next;
        } else {
            const char *l = q;
            while (literal_char(*q))
                q++;
            if (q == l)
                return -1;
            s->kind = SEG_LIT;
            s->lit = strndup(l, (size_t)(q - l));
            if (s->lit == NULL)
                return -1;
        }
        r->n_segs++;
        *p = q;
    next:
        if (**p == '/') {
            (*p)++;
            continue;
        }
        return **p == stop ? 0 : -1;
    }
}

/* Fills r's segments, variables and custom verb from template t. */
static int parse_template(route *r, const char *t)
{
    if (t[0] != '/')
        return -1;
    /* the verb: a ':' after the last '/' outside braces */
    const char *colon = NULL;
    int depth = 0;
    for (const char *p = t; *p != '\0'; p++) {
        if (*p == '{')
            depth++;
        else if (*p == '}')
            depth--;
        else if (depth == 0 && *p == '/')
            colon = NULL;
        else if (depth == 0 && *p == ':')
            colon = p;
    }
    size_t n = colon ? (size_t)(colon - t) : strlen(t);
    char *body = strndup(t + 1, n - 1);
    if (body == NULL)
        return -1;
    const char *p = body;
    int rc = parse_segs(r, &p, '\0', false);
    free(body);
    if (rc != 0)
        return -1;
    for (size_t i = 0; i + 1 < r->n_segs; i++)
        if (r->segs[i].kind == SEG_MANY)
            return -1; /* "**" only at the end */
    for (size_t i = 0; i < r->n_vars; i++)
        if (r->vars[i].end == r->vars[i].start)
            return -1;
    if (colon != NULL) {
        const char *v = colon + 1;
        for (const char *q = v; *q != '\0'; q++)
            if (!literal_char(*q))
                return -1;
        if (*v == '\0')
            return -1;
        r->custom = strdup(v);
        if (r->custom == NULL)
            return -1;
    }
    return 0;
}

/* Whether a dotted path of proto names leads through d's fields. want_msg:
 * the last field must be a message. */
static bool field_path_ok(const ProtobufCMessageDescriptor *d, const char *path, bool want_msg)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL;
    const ProtobufCFieldDescriptor *f = NULL;
    for (char *s = strtok_r(buf, ".", &save); s != NULL; s = strtok_r(NULL, ".", &save)) {
        if (d == NULL)
            return false;
        f = protobuf_c_message_descriptor_get_field_by_name(d, s);
        if (f == NULL)
            return false;
        d = f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED
                ? f->descriptor
                : NULL;
    }
    return f != NULL && (!want_msg || f->type == PROTOBUF_C_TYPE_MESSAGE);
}

/* ---- building ---------------------------------------------------------------------- */

static void route_free(route *r)
{
    free(r->verb);
    free(r->pattern);
    free(r->custom);
    free(r->body);
    free(r->response_body);
    free(r->doc);
    for (size_t i = 0; i < r->n_segs; i++)
        if (r->segs[i].kind == SEG_LIT)
            free(r->segs[i].lit);
    for (size_t i = 0; i < r->n_vars; i++)
        free(r->vars[i].field);
}

void gw_routes_free(gw_routes *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        route_free(&r->r[i]);
    free(r->r);
    free(r);
}

static char *opt_strdup(const char *s)
{
    return strdup(s != NULL ? s : "");
}

/* Adds the route of one rule (not its additional bindings). */
static rd_code add_rule(gw_routes *rs, const svc_method *m, const Google__Api__HttpRule *rule,
                        const char *doc, rd_err *err)
{
    const char *verb, *tmpl;
    switch (rule->pattern_case) {
    case GOOGLE__API__HTTP_RULE__PATTERN_GET:
        verb = "GET", tmpl = rule->get;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_PUT:
        verb = "PUT", tmpl = rule->put;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_POST:
        verb = "POST", tmpl = rule->post;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_DELETE:
        verb = "DELETE", tmpl = rule->delete_;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_PATCH:
        verb = "PATCH", tmpl = rule->patch;
        break;
    case GOOGLE__API__HTTP_RULE__PATTERN_CUSTOM:
        verb = rule->custom ? rule->custom->kind : NULL,
        tmpl = rule->custom ? rule->custom->path : NULL;
        break;
    default:
        return rd_errf(err, RD_INTERNAL, m->path, "%s: google.api.http rule has no pattern",
                       m->path);
    }
    if (verb == NULL || verb[0] == '\0' || tmpl == NULL)
        return rd_errf(err, RD_INTERNAL, m->path, "%s: google.api.http rule has no pattern",
                       m->path);
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 32;
        route *nr = realloc(rs->r, cap * sizeof *nr);
        if (nr == NULL)
            return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
        rs->r = nr;
        rs->cap = cap;
    }
    route *r = &rs->r[rs->n];
    memset(r, 0, sizeof *r);
    r->method = m;
    r->verb = strdup(verb);
    r->pattern = strdup(tmpl);
    if (rule->body != NULL && rule->body[0] != '\0')
        r->body = opt_strdup(rule->body);
    if (rule->response_body != NULL && rule->response_body[0] != '\0')
        r->response_body = opt_strdup(rule->response_body);
    if (doc != NULL)
        r->doc = strdup(doc);
    if (r->verb == NULL || r->pattern == NULL || (rule->body && rule->body[0] && !r->body) ||
        (rule->response_body && rule->response_body[0] && !r->response_body) ||
        (doc != NULL && r->doc == NULL)) {
        route_free(r);
        return rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    }
    if (parse_template(r, tmpl) != 0) {
        route_free(r);
        return rd_errf(err, RD_INTERNAL, m->path, "%s: cannot parse HTTP template \"%.80s\"",
                       m->path, tmpl);
    }
    for (size_t i = 0; i < r->n_vars; i++)
        if (!field_path_ok(m->req, r->vars[i].field, false)) {
            rd_errf(err, RD_INTERNAL, m->path, "%s: template variable %s is not a field of %s",
                    m->path, r->vars[i].field, m->req->name);
            route_free(r);
            return RD_INTERNAL;
        }
    if (r->body != NULL && strcmp(r->body, "*") != 0 && !field_path_ok(m->req, r->body, true)) {
        rd_errf(err, RD_INTERNAL, m->path, "%s: body \"%s\" is not a message field of %s", m->path,
                r->body, m->req->name);
        route_free(r);
        return RD_INTERNAL;
    }
    rs->n++;
    return RD_OK;
}

static const svc_method *method_row(const char *path)
{
    for (size_t i = 0; i < svc_n_methods; i++)
        if (strcmp(svc_methods[i].path, path) == 0)
            return &svc_methods[i];
    return NULL;
}

/* The google.api.http rule in a method's options (an unknown field to the
 * generated MethodOptions), unpacked with malloc; NULL when none. */
static rd_code method_rule(const Google__Protobuf__MethodDescriptorProto *md,
                           Google__Api__HttpRule **out)
{
    *out = NULL;
    if (md->options == NULL)
        return RD_OK;
    const ProtobufCMessage *o = &md->options->base;
    for (unsigned i = 0; i < o->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &o->unknown_fields[i];
        if (u->tag != HTTP_RULE_FIELD)
            continue;
        if (u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            return RD_INTERNAL;
        /* data holds the length prefix, then the message */
        uint64_t n = 0;
        size_t k = 0;
        for (int shift = 0; k < u->len && shift < 64; shift += 7) {
            uint8_t b = u->data[k++];
            n |= (uint64_t)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
                break;
        }
        if (n != u->len - k)
            return RD_INTERNAL;
        if (*out != NULL)
            google__api__http_rule__free_unpacked(*out, NULL);
        *out = google__api__http_rule__unpack(NULL, (size_t)n, u->data + k);
        if (*out == NULL)
            return RD_INTERNAL;
    }
    return RD_OK;
}

/* The leading comment of the element at path (SourceCodeInfo), or NULL. */
static const char *leading_comment(const Google__Protobuf__FileDescriptorProto *fd,
                                   const int32_t *path, size_t n)
{
    const Google__Protobuf__SourceCodeInfo *info = fd->source_code_info;
    for (size_t i = 0; info != NULL && i < info->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *l = info->location[i];
        if (l->n_path == n && memcmp(l->path, path, n * sizeof *path) == 0)
            return l->leading_comments;
    }
    return NULL;
}

static rd_code add_method(gw_routes *rs, const char *path,
                          const Google__Protobuf__MethodDescriptorProto *md, const char *doc,
                          rd_err *err)
{
    Google__Api__HttpRule *rule;
    if (method_rule(md, &rule) != RD_OK)
        return rd_errf(err, RD_INTERNAL, path, "%s: malformed google.api.http option", path);
    if (rule == NULL)
        return RD_OK;
    rd_code rc = RD_OK;
    const svc_method *m = method_row(path);
    if (m == NULL) {
        rc = rd_errf(err, RD_INTERNAL, path, "%s has an HTTP rule but no row in svc_methods", path);
        goto done;
    }
    rc = add_rule(rs, m, rule, doc, err);
    for (size_t i = 0; rc == RD_OK && i < rule->n_additional_bindings; i++) {
        if (rule->additional_bindings[i]->n_additional_bindings > 0) {
            rc = rd_errf(err, RD_INTERNAL, path, "%s: nested additional_bindings", path);
            break;
        }
        rc = add_rule(rs, m, rule->additional_bindings[i], doc, err);
    }
done:
    google__api__http_rule__free_unpacked(rule, NULL);
    return rc;
}

rd_code gw_routes_build(const void *desc_set, size_t len, gw_routes **out, rd_err *err)
{
    *out = NULL;
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(NULL, len, desc_set);
    if (set == NULL)
        return rd_errf(err, RD_INTERNAL, NULL, "embedded descriptor set is malformed");
    gw_routes *rs = calloc(1, sizeof *rs);
    rd_code rc = rs ? RD_OK : rd_errf(err, RD_INTERNAL, NULL, "out of memory");
    for (size_t f = 0; rc == RD_OK && f < set->n_file; f++) {
        const Google__Protobuf__FileDescriptorProto *fd = set->file[f];
        const char *pkg = fd->package ? fd->package : "";
        for (size_t s = 0; rc == RD_OK && s < fd->n_service; s++) {
            const Google__Protobuf__ServiceDescriptorProto *sd = fd->service[s];
            for (size_t k = 0; rc == RD_OK && k < sd->n_method; k++) {
                char path[256];
                snprintf(path, sizeof path, "/%s%s%s/%s", pkg, pkg[0] ? "." : "",
                         sd->name ? sd->name : "", sd->method[k]->name ? sd->method[k]->name : "");
                /* FileDescriptorProto.service = 6, .method = 2 */
                const int32_t at[] = {6, (int32_t)s, 2, (int32_t)k};
                rc = add_method(rs, path, sd->method[k], leading_comment(fd, at, 4), err);
            }
        }
    }
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    if (rc != RD_OK) {
        gw_routes_free(rs);
        return rc;
    }
    *out = rs;
    return RD_OK;
}

size_t gw_routes_count(const gw_routes *r)
{
    return r->n;
}

void gw_routes_get(const gw_routes *r, size_t i, const char **verb, const char **pattern,
                   const svc_method **method)
{
    *verb = r->r[i].verb;
    *pattern = r->r[i].pattern;
    *method = r->r[i].method;
}

void gw_routes_info(const gw_routes *r, size_t i, gw_route_info *out)
{
    const route *x = &r->r[i];
    *out = (gw_route_info){x->verb, x->pattern, x->method, x->body, x->response_body, x->doc};
}

/* ---- matching ------------------------------------------------------------------------ */

typedef struct span {
    const char *p;
    size_t n;
} span;

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into the arena; keep_slash leaves %2F encoded
 * (a multi-segment variable, as http.proto says). NULL on a bad escape,
 * invalid UTF-8 or a NUL. */
static char *pct_decode(rd_arena *a, const char *s, size_t n, bool keep_slash)
{
    char *out = rd_arena_alloc(a, n + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        if (i + 2 >= n)
            return NULL;
        int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
        if (h < 0 || l < 0)
            return NULL;
        int c = h * 16 + l;
        if (keep_slash && c == '/') {
            memcpy(out + o, s + i, 3);
            o += 3;
        } else {
            out[o++] = (char)c;
        }
        i += 2;
    }
    out[o] = '\0';
    return rd_utf8_valid(out, o) ? out : NULL;
}

/* Matches r against the path segments; on success fills m's variables. */
static bool route_match(const route *r, const span *segs, size_t n, const char *custom, rd_arena *a,
                        gw_match *m)
{
    if ((r->custom == NULL) != (custom == NULL) ||
        (custom != NULL && strcmp(r->custom, custom) != 0))
        return false;
    size_t at[MAX_SEGS + 1]; /* path segment where template segment i starts */
    size_t j = 0;
    for (size_t i = 0; i < r->n_segs; i++) {
        at[i] = j;
        switch (r->segs[i].kind) {
        case SEG_LIT:
            if (j >= n || segs[j].n != strlen(r->segs[i].lit) ||
                memcmp(segs[j].p, r->segs[i].lit, segs[j].n) != 0)
                return false;
            j++;
            break;
        case SEG_ONE:
            if (j >= n || segs[j].n == 0)
                return false;
            j++;
            break;
        case SEG_MANY:
            for (; j < n; j++)
                if (segs[j].n == 0)
                    return false;
            break;
        }
    }
    at[r->n_segs] = j;
    if (j != n)
        return false;
    m->n_vars = 0;
    for (size_t v = 0; v < r->n_vars; v++) {
        const var *x = &r->vars[v];
        size_t s0 = at[x->start], s1 = at[x->end];
        const char *p = s0 < n ? segs[s0].p : segs[n - 1].p + segs[n - 1].n;
        const char *e = s1 > s0 ? segs[s1 - 1].p + segs[s1 - 1].n : p;
        bool single = x->end - x->start == 1 && r->segs[x->start].kind != SEG_MANY;
        char *val = pct_decode(a, p, (size_t)(e - p), !single);
        if (val == NULL)
            return false;
        m->vars[m->n_vars].field = x->field;
        m->vars[m->n_vars].value = val;
        m->n_vars++;
    }
    return true;
}

/* >0 when a is more specific than b: literal beats "*" beats "**",
 * segment by segment from the left. */
static int specificity(const route *a, const route *b)
{
    for (size_t i = 0; i < a->n_segs && i < b->n_segs; i++)
        if (a->segs[i].kind != b->segs[i].kind)
            return (int)a->segs[i].kind - (int)b->segs[i].kind;
    return (int)a->n_segs - (int)b->n_segs;
}

static void allow_add(char *allow, size_t allow_len, const char *verb)
{
    if (allow == NULL || allow_len == 0)
        return;
    size_t vl = strlen(verb), have = strlen(allow);
    /* already listed? */
    for (const char *p = allow; (p = strstr(p, verb)) != NULL; p += vl)
        if ((p == allow || p[-1] == ' ') && (p[vl] == ',' || p[vl] == '\0'))
            return;
    snprintf(allow + have, allow_len - have, "%s%s", have ? ", " : "", verb);
}

gw_route_result gw_routes_match(const gw_routes *r, const char *verb, const char *path, rd_arena *a,
                                gw_match *m, char *allow, size_t allow_len)
{
    if (allow != NULL && allow_len > 0)
        allow[0] = '\0';
    memset(m, 0, sizeof *m);
    if (path[0] != '/')
        return GW_ROUTE_NOT_FOUND;
    /* split off the custom verb: a ':' in the last segment */
    size_t plen = strlen(path);
    const char *last = strrchr(path, '/');
    const char *colon = strchr(last, ':');
    char custom[64];
    const char *cv = NULL;
    if (colon != NULL) {
        size_t cl = plen - (size_t)(colon + 1 - path);
        if (cl == 0 || cl >= sizeof custom)
            return GW_ROUTE_NOT_FOUND;
        memcpy(custom, colon + 1, cl + 1);
        cv = custom;
        plen = (size_t)(colon - path);
    }
    span segs[MAX_SEGS];
    size_t n = 0;
    for (const char *p = path + 1;;) {
        const char *end = memchr(p, '/', plen - (size_t)(p - path));
        if (n == MAX_SEGS)
            return GW_ROUTE_NOT_FOUND;
        segs[n].p = p;
        segs[n].n = end ? (size_t)(end - p) : plen - (size_t)(p - path);
        n++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    const route *best = NULL;
    bool other_verb = false;
    gw_match tmp;
    for (size_t i = 0; i < r->n; i++) {
        const route *x = &r->r[i];
        bool same_verb = strcmp(x->verb, verb) == 0;
        if (same_verb && best != NULL && specificity(x, best) <= 0)
            continue;
        memset(&tmp, 0, sizeof tmp);
        if (!route_match(x, segs, n, cv, a, &tmp))
            continue;
        if (!same_verb) {
            other_verb = true;
            allow_add(allow, allow_len, x->verb);
            continue;
        }
        best = x;
        *m = tmp;
    }
    if (best == NULL) {
        memset(m, 0, sizeof *m);
        return other_verb ? GW_ROUTE_METHOD_NOT_ALLOWED : GW_ROUTE_NOT_FOUND;
    }
    if (allow != NULL && allow_len > 0)
        allow[0] = '\0';
    m->method = best->method;
    m->body = best->body;
    m->response_body = best->response_body;
    m->pattern = best->pattern;
    m->index = (size_t)(best - r->r);
    return GW_ROUTE_OK;
}
