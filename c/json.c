/*
 * json.c: see json.h. A recursive-descent reader over a byte range that never reads past its end,
 * and a writer that escapes what JSON requires and replaces what UTF-8 forbids.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_OF(x) #x
#define TEXT_OF_VALUE(x) TEXT_OF(x)
#define JSON_MAX_VALUES_TEXT TEXT_OF_VALUE(JSON_MAX_VALUES)

// ----------------------------------------------------------------------------------------------------
// UTF-8

int utf8_next(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;                        // bytes in the whole character
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte (Table 3-7)
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }      // no UTF-16 surrogates
    else if (c >= 0xEE && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }      // no overlong 4-byte forms
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }      // nothing past U+10FFFF
    else return -1;                                   // a continuation byte, C0, C1 or F5..FF
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
        if (s[i] < min || s[i] > max) return -i;
    }
    return need;
}

size_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int k = utf8_next(s + i, n - i);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return n;
}

// ----------------------------------------------------------------------------------------------------
// Buf

void buf_init(Buf *b, size_t limit) {
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
    b->failed = 0;
}

void buf_free(Buf *b) {
    free(b->data);
    buf_init(b, b->limit);
}

void buf_append(Buf *b, const void *data, size_t n) {
    if (b->failed) return;
    if (n > b->limit || b->len + n > b->limit) { b->failed = 1; return; }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) { b->failed = 1; return; }
        b->data = grown;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(Buf *b, const char *s) { buf_append(b, s, strlen(s)); }

void buf_printf(Buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = 1; return; }
    if ((size_t)n < sizeof small) { buf_append(b, small, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->failed = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_append(b, big, (size_t)n);
    free(big);
}

void json_write_string(Buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    buf_append(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        int k = utf8_next(u + i, n - i);
        if (k <= 0) {  // U+FFFD for each maximal invalid subpart, and for a character cut short at the end
            buf_append(b, "\xEF\xBF\xBD", 3);
            i += k < 0 ? (size_t)-k : n - i;
            continue;
        }
        unsigned char c = u[i];
        if (k > 1 || (c >= 0x20 && c != '"' && c != '\\')) {
            buf_append(b, u + i, (size_t)k);
        } else if (c == '"') buf_append(b, "\\\"", 2);
        else if (c == '\\') buf_append(b, "\\\\", 2);
        else if (c == '\n') buf_append(b, "\\n", 2);
        else if (c == '\r') buf_append(b, "\\r", 2);
        else if (c == '\t') buf_append(b, "\\t", 2);
        else buf_printf(b, "\\u%04x", c);
        i += (size_t)k;
    }
    buf_append(b, "\"", 1);
}

// ----------------------------------------------------------------------------------------------------
// the reader

typedef struct {
    JsonDoc *doc;
    const unsigned char *p, *end, *start;
    int depth;
} Parser;

static int fail(Parser *ps, const char *what) {
    if (!ps->doc->error[0])
        snprintf(ps->doc->error, sizeof ps->doc->error, "invalid JSON at byte %zu: %s", (size_t)(ps->p - ps->start), what);
    return -1;
}

static void skip_space(Parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int new_value(Parser *ps, JsonType type) {
    JsonDoc *d = ps->doc;
    if (d->n_values >= d->max_values) return fail(ps, "too many values: at most " JSON_MAX_VALUES_TEXT " numbers, strings, lists and objects in one body");
    JsonValue *v = &d->values[d->n_values];
    memset(v, 0, sizeof *v);
    v->type = type;
    v->child = v->next = -1;
    return d->n_values++;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    *out = v;
    return 0;
}

// Decodes the string at ps->p (at its opening quote) into doc->strings; *out points at it.
static int parse_string(Parser *ps, const char **out, size_t *out_len) {
    JsonDoc *d = ps->doc;
    ps->p++;  // the opening quote
    // the decoded string is never longer than its source, and the buffer is the size of the whole input
    char *dst = d->strings + d->strings_used, *w = dst;
    for (;;) {
        if (ps->p >= ps->end) return fail(ps, "unterminated string");
        unsigned char c = *ps->p;
        if (c == '"') { ps->p++; break; }
        if (c < 0x20) return fail(ps, c == 0 ? "NUL byte in a string" : "control byte in a string");
        if (c != '\\') {
            int k = utf8_next(ps->p, (size_t)(ps->end - ps->p));
            if (k <= 0) return fail(ps, "invalid UTF-8 in a string");
            memcpy(w, ps->p, (size_t)k);
            w += k;
            ps->p += k;
            continue;
        }
        if (ps->end - ps->p < 2) return fail(ps, "unterminated escape");
        unsigned char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned cp;
            if (ps->end - ps->p < 4 || hex4(ps->p, &cp) != 0) return fail(ps, "bad \\u escape");
            ps->p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(ps, "lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {  // a high surrogate must be followed by a low one
                unsigned lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, "lone high surrogate");
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return fail(ps, "\\u0000 in a string");
            // 6 escaped source bytes (12 for a pair) always cover the at most 4 bytes written
            if (cp < 0x80) *w++ = (char)cp;
            else if (cp < 0x800) { *w++ = (char)(0xC0 | cp >> 6); *w++ = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) {
                *w++ = (char)(0xE0 | cp >> 12); *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *w++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *w++ = (char)(0xF0 | cp >> 18); *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *w++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: return fail(ps, "unknown escape");
        }
    }
    *w = '\0';
    *out = dst;
    *out_len = (size_t)(w - dst);
    d->strings_used += *out_len + 1;
    return 0;
}

static int parse_number(Parser *ps, double *out) {
    const unsigned char *s = ps->p, *q = ps->p, *e = ps->end;
    if (q < e && *q == '-') q++;
    if (q >= e || *q < '0' || *q > '9') return fail(ps, "bad number");
    if (*q == '0') q++;
    else while (q < e && *q >= '0' && *q <= '9') q++;
    if (q < e && *q == '.') {
        q++;
        if (q >= e || *q < '0' || *q > '9') return fail(ps, "bad number");
        while (q < e && *q >= '0' && *q <= '9') q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '+' || *q == '-')) q++;
        if (q >= e || *q < '0' || *q > '9') return fail(ps, "bad number");
        while (q < e && *q >= '0' && *q <= '9') q++;
    }
    char copy[64];  // strtod needs a terminated string; the grammar above already checked every byte
    size_t n = (size_t)(q - s);
    if (n >= sizeof copy) return fail(ps, "number too long");
    memcpy(copy, s, n);
    copy[n] = '\0';
    *out = strtod(copy, NULL);
    ps->p = q;
    return 0;
}

static int match_word(Parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "unexpected character");
    ps->p += n;
    return 0;
}

static int parse_value(Parser *ps);

// Links v as the next child of parent after *last.
static void link_child(JsonDoc *d, int parent, int *last, int v) {
    if (*last < 0) d->values[parent].child = v;
    else d->values[*last].next = v;
    *last = v;
}

static int parse_container(Parser *ps, int is_object) {
    JsonDoc *d = ps->doc;
    int self = new_value(ps, is_object ? JSON_OBJECT : JSON_ARRAY);
    if (self < 0) return -1;
    if (++ps->depth > JSON_MAX_DEPTH) return fail(ps, "nested too deeply");
    ps->p++;  // [ or {
    char close = is_object ? '}' : ']';
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == close) { ps->p++; ps->depth--; return self; }
    int last = -1;
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        if (is_object) {
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected a member name");
            if (parse_string(ps, &key, &key_len) != 0) return -1;
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "expected ':'");
            ps->p++;
        }
        int v = parse_value(ps);
        if (v < 0) return -1;
        d->values[v].key = key;
        d->values[v].key_len = key_len;
        link_child(d, self, &last, v);
        skip_space(ps);
        if (ps->p >= ps->end) return fail(ps, is_object ? "unterminated object" : "unterminated array");
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == close) { ps->p++; break; }
        return fail(ps, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    ps->depth--;
    return self;
}

static int parse_value(Parser *ps) {
    skip_space(ps);
    if (ps->p >= ps->end) return fail(ps, "unexpected end of input");
    int v;
    switch (*ps->p) {
    case '{': return parse_container(ps, 1);
    case '[': return parse_container(ps, 0);
    case '"':
        if ((v = new_value(ps, JSON_STRING)) < 0) return -1;
        {
            const char *s;
            size_t n;
            if (parse_string(ps, &s, &n) != 0) return -1;
            ps->doc->values[v].str = s;
            ps->doc->values[v].len = n;
        }
        return v;
    case 't': if ((v = new_value(ps, JSON_TRUE)) < 0 || match_word(ps, "true") != 0) return -1; return v;
    case 'f': if ((v = new_value(ps, JSON_FALSE)) < 0 || match_word(ps, "false") != 0) return -1; return v;
    case 'n': if ((v = new_value(ps, JSON_NULL)) < 0 || match_word(ps, "null") != 0) return -1; return v;
    default:
        if ((v = new_value(ps, JSON_NUMBER)) < 0) return -1;
        {
            double x = 0;
            if (parse_number(ps, &x) != 0) return -1;
            ps->doc->values[v].number = x;
        }
        return v;
    }
}

int json_parse(JsonDoc *doc, const char *text, size_t len) {
    memset(doc, 0, sizeof *doc);
    // every value takes at least one byte of input, so len + 1 of them always suffice
    doc->max_values = len + 1 < JSON_MAX_VALUES ? (int)len + 1 : JSON_MAX_VALUES;
    doc->values = malloc((size_t)doc->max_values * sizeof *doc->values);
    doc->strings_size = len + 1;
    doc->strings = malloc(doc->strings_size);
    if (!doc->values || !doc->strings) {
        snprintf(doc->error, sizeof doc->error, "out of memory parsing JSON");
        return -1;
    }
    Parser ps = {doc, (const unsigned char *)text, (const unsigned char *)text + len, (const unsigned char *)text, 0};
    if (parse_value(&ps) < 0) return -1;
    skip_space(&ps);
    if (ps.p != ps.end) return fail(&ps, "trailing bytes after the value");
    return 0;
}

void json_free(JsonDoc *doc) {
    free(doc->values);
    free(doc->strings);
    doc->values = NULL;
    doc->strings = NULL;
}

const JsonValue *json_root(const JsonDoc *doc) { return doc->n_values > 0 ? &doc->values[0] : NULL; }

const JsonValue *json_child(const JsonDoc *doc, const JsonValue *v) {
    return v && v->child >= 0 ? &doc->values[v->child] : NULL;
}

const JsonValue *json_next(const JsonDoc *doc, const JsonValue *v) {
    return v && v->next >= 0 ? &doc->values[v->next] : NULL;
}

const JsonValue *json_get(const JsonDoc *doc, const JsonValue *object, const char *key) {
    if (!object || object->type != JSON_OBJECT) return NULL;
    const JsonValue *found = NULL;
    size_t n = strlen(key);
    for (const JsonValue *m = json_child(doc, object); m; m = json_next(doc, m))
        if (m->key_len == n && memcmp(m->key, key, n) == 0) found = m;
    return found;
}

const char *json_type_name(JsonType type) {
    switch (type) {
    case JSON_NULL: return "null";
    case JSON_FALSE: case JSON_TRUE: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}
