/*
 * json.h: a small bounded JSON reader and writer for the HTTP server, plus the UTF-8 rules both share.
 *
 * The reader parses one document (RFC 8259) into a flat array of values: no recursion deeper than
 * JSON_MAX_DEPTH, no more values than JSON_MAX_VALUES, strings decoded into one buffer the size of the
 * input. It rejects what a careful server must: invalid UTF-8, raw control bytes (NUL included) in
 * strings, lone surrogates, "\u0000" (our strings are C strings), trailing garbage.
 *
 *     JsonDoc doc;
 *     if (json_parse(&doc, body, body_len) != 0) reply_400(doc.error);
 *     const JsonValue *prompt = json_get(&doc, json_root(&doc), "prompt");
 *     json_free(&doc);
 *
 * The writer appends to a Buf, a growable byte buffer with a hard size limit.
 */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 32
#define JSON_MAX_VALUES 65536  // token-id prompts: lm-eval's batch of 16 at 2,048 tokens, or of 64 at 1,000

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct {
    JsonType type;
    int child;          // first element or member (arrays, objects), -1 when empty
    int next;           // next element or member of the parent, -1 at the end
    const char *key;    // member name inside an object (decoded, NUL-terminated), else NULL
    size_t key_len;
    const char *str;    // JSON_STRING: decoded, NUL-terminated
    size_t len;
    double number;      // JSON_NUMBER
} JsonValue;

typedef struct {
    JsonValue *values;
    int n_values, max_values;
    char *strings;
    size_t strings_used, strings_size;
    char error[160];    // why json_parse failed, one line
} JsonDoc;

/* 0, or -1 with doc->error set. json_free afterwards in both cases. */
int json_parse(JsonDoc *doc, const char *text, size_t len);
void json_free(JsonDoc *doc);
const JsonValue *json_root(const JsonDoc *doc);
/* The member of an object named key (the last one when repeated, as Python's json), or NULL. */
const JsonValue *json_get(const JsonDoc *doc, const JsonValue *object, const char *key);
const JsonValue *json_child(const JsonDoc *doc, const JsonValue *v);  // first element, or NULL
const JsonValue *json_next(const JsonDoc *doc, const JsonValue *v);   // next sibling, or NULL
const char *json_type_name(JsonType type);

/* UTF-8 as Unicode's Table 3-7 defines it. At s[0..n): > 0: the length of one valid character;
   < 0: -k, the k bytes of a maximal invalid subpart (one U+FFFD when decoding with replacement, as
   Python's errors="replace" does); 0: a valid start that n cuts short (n == 0 too). */
int utf8_next(const unsigned char *s, size_t n);
/* The offset of the first byte that is not valid UTF-8 (a cut-short character at the end counts), or n. */
size_t utf8_invalid_at(const unsigned char *s, size_t n);

/* A growable byte buffer that refuses to grow past limit: after a failed append, failed is 1 and the
   contents stop changing. Always NUL-terminated when data is not NULL. */
typedef struct {
    char *data;
    size_t len, cap, limit;
    int failed;
} Buf;

void buf_init(Buf *b, size_t limit);
void buf_free(Buf *b);
void buf_append(Buf *b, const void *data, size_t n);
void buf_puts(Buf *b, const char *s);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s[0..n) as a quoted JSON string: control bytes escaped, invalid or cut-short UTF-8 as U+FFFD. */
void json_write_string(Buf *b, const char *s, size_t n);

#endif
