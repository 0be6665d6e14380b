/*
 * bpe.c: GPT-2's tokenizer, byte-identical to tiktoken's r50k_base (tests/test_c_engine.py checks it).
 *
 * Encoding is two steps, as in tiktoken (src/lib.rs, read for reference): the text is cut into pieces by
 * r50k_base's pattern
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+$|\s+(?!\S)|\s
 * (matched here by hand, alternative by alternative, leftmost first), then each piece that is not a token
 * by itself is merged pairwise, lowest rank first. \p{L} and \p{N} are ranges export.py wrote from Python's
 * unicodedata; \s is Unicode's White_Space property.
 */
#include "bpe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BPE_MAGIC 0x31455042u  // "BPE1"

struct BPE {
    int n_vocab, eot;
    const uint32_t *offsets;   // n_vocab + 1: token i is bytes[offsets[i] .. offsets[i+1])
    const unsigned char *bytes;
    const uint32_t *letters;   // n_letters (lo, hi) pairs, sorted
    const uint32_t *numbers;
    int n_letters, n_numbers;
    int32_t *table;            // open addressing: token bytes -> id (-1 empty); eot is not in it
    uint32_t table_mask;
};

static uint32_t read_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static uint32_t hash_bytes(const unsigned char *p, size_t n) {  // FNV-1a
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static int lookup(const BPE *bpe, const unsigned char *p, size_t n) {
    for (uint32_t i = hash_bytes(p, n) & bpe->table_mask;; i = (i + 1) & bpe->table_mask) {
        int32_t id = bpe->table[i];
        if (id < 0) return -1;
        size_t len = bpe->offsets[id + 1] - bpe->offsets[id];
        if (len == n && memcmp(bpe->bytes + bpe->offsets[id], p, n) == 0) return id;
    }
}

static int check_ranges(const uint32_t *r, int n) {
    for (int i = 0; i < n; i++) {
        if (r[2 * i] > r[2 * i + 1] || r[2 * i + 1] > 0x10FFFF) return -1;
        if (i > 0 && r[2 * i] <= r[2 * i - 1]) return -1;
    }
    return 0;
}

BPE *bpe_open(const unsigned char *table, size_t size, char *err, size_t err_size) {
#define FAIL(msg) do { snprintf(err, err_size, "tokenizer table: %s", msg); goto fail; } while (0)
    BPE *bpe = calloc(1, sizeof *bpe);
    if (bpe == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    if (size < 20 || ((uintptr_t)table & 3)) FAIL("too short or misaligned");
    if (read_u32(table) != BPE_MAGIC) FAIL("wrong magic number (not written by export.py)");
    uint32_t n_vocab = read_u32(table + 4), eot = read_u32(table + 8);
    uint32_t n_letters = read_u32(table + 12), n_numbers = read_u32(table + 16);
    if (n_vocab < 256 || n_vocab > 1u << 24 || eot >= n_vocab || n_letters > 1u << 20 || n_numbers > 1u << 20)
        FAIL("counts out of range");
    uint64_t need = 20 + 8ull * n_letters + 8ull * n_numbers + 4ull * (n_vocab + 1);
    if (need > size) FAIL("truncated");
    bpe->n_vocab = (int)n_vocab;
    bpe->eot = (int)eot;
    bpe->n_letters = (int)n_letters;
    bpe->n_numbers = (int)n_numbers;
    bpe->letters = (const uint32_t *)(table + 20);
    bpe->numbers = bpe->letters + 2 * n_letters;
    bpe->offsets = bpe->numbers + 2 * n_numbers;
    bpe->bytes = table + need;
    if (check_ranges(bpe->letters, bpe->n_letters) || check_ranges(bpe->numbers, bpe->n_numbers))
        FAIL("Unicode ranges are not sorted");
    if (bpe->offsets[0] != 0 || bpe->offsets[n_vocab] != size - need) FAIL("token bytes do not fill the table");
    for (uint32_t i = 0; i < n_vocab; i++)
        if (bpe->offsets[i + 1] <= bpe->offsets[i]) FAIL("a token has no bytes");
    uint32_t capacity = 1;
    while (capacity < 2 * n_vocab) capacity *= 2;
    bpe->table_mask = capacity - 1;
    bpe->table = malloc(capacity * sizeof(int32_t));
    if (bpe->table == NULL) FAIL("out of memory");
    memset(bpe->table, 0xff, capacity * sizeof(int32_t));
    for (uint32_t id = 0; id < n_vocab; id++) {
        if (id == eot) continue;  // a special token: never produced by merges
        const unsigned char *p = bpe->bytes + bpe->offsets[id];
        size_t n = bpe->offsets[id + 1] - bpe->offsets[id];
        if (lookup(bpe, p, n) >= 0) FAIL("a token appears twice");
        uint32_t i = hash_bytes(p, n) & bpe->table_mask;
        while (bpe->table[i] >= 0) i = (i + 1) & bpe->table_mask;
        bpe->table[i] = (int32_t)id;
    }
    for (int b = 0; b < 256; b++) {  // every single byte must be a token, or BPE could not encode every input
        unsigned char c = (unsigned char)b;
        if (lookup(bpe, &c, 1) < 0) FAIL("a single byte is missing from the vocabulary");
    }
    return bpe;
fail:
    bpe_close(bpe);
    return NULL;
#undef FAIL
}

void bpe_close(BPE *bpe) {
    if (bpe == NULL) return;
    free(bpe->table);
    free(bpe);
}

int bpe_vocab_size(const BPE *bpe) { return bpe->n_vocab; }
int bpe_eot_token(const BPE *bpe) { return bpe->eot; }

const unsigned char *bpe_decode(const BPE *bpe, int token, size_t *len) {
    if (token < 0 || token >= bpe->n_vocab) return NULL;
    *len = bpe->offsets[token + 1] - bpe->offsets[token];
    return bpe->bytes + bpe->offsets[token];
}

// ----------------------------------------------------------------------------
// UTF-8 and the character classes

// The code point at p (n bytes left) and its length, for valid UTF-8 only (Rust's str::from_utf8 rules:
// no overlong forms, no surrogates, nothing past U+10FFFF); length 0 where the bytes are not valid.
static int utf8_next(const unsigned char *p, size_t n, uint32_t *cp) {
    unsigned char c = p[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; *cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; *cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; *cp = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        *cp = (*cp << 6) | (p[i] & 0x3F);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
    return len;
}

static int in_ranges(const uint32_t *r, int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[2 * mid]) hi = mid - 1;
        else if (cp > r[2 * mid + 1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int is_space(uint32_t c) {  // Unicode White_Space (PropList.txt), what \s means to tiktoken's regex
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

enum { OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3, END = 4 };

typedef struct {
    const BPE *bpe;
    const unsigned char *text;
    size_t len;  // valid UTF-8
} Scanner;

static int class_at(const Scanner *s, size_t at, size_t *next) {
    if (at >= s->len) { *next = at; return END; }
    uint32_t cp;
    int n = utf8_next(s->text + at, s->len - at, &cp);
    *next = at + (n > 0 ? n : 1);
    if (is_space(cp)) return SPACE;
    if (in_ranges(s->bpe->letters, s->bpe->n_letters, cp)) return LETTER;
    if (in_ranges(s->bpe->numbers, s->bpe->n_numbers, cp)) return NUMBER;
    return OTHER;
}

static size_t run_of(const Scanner *s, size_t at, int cls) {  // the end of the run of cls starting at `at`
    size_t next;
    while (at < s->len && class_at(s, at, &next) == cls) at = next;
    return at;
}

// The end of the regex match starting at `at` (< len).
static size_t next_piece(const Scanner *s, size_t at) {
    const unsigned char *t = s->text;
    size_t left = s->len - at, next, after;
    if (t[at] == '\'' && left >= 2) {
        unsigned char a = t[at + 1], b = left >= 3 ? t[at + 2] : 0;
        if (a == 's' || a == 'd' || a == 'm' || a == 't') return at + 2;
        if ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')) return at + 3;
    }
    int cls = class_at(s, at, &next);
    if (cls == LETTER || cls == NUMBER || cls == OTHER) return run_of(s, next, cls);
    if (t[at] == ' ') {  // " ?" then a letter, number or other run
        int then = class_at(s, next, &after);
        if (then == LETTER || then == NUMBER || then == OTHER) return run_of(s, after, then);
    }
    size_t end = run_of(s, next, SPACE);  // cls == SPACE
    if (end == s->len) return end;  // \s+$
    // \s+(?!\S): the run but its last character, when that leaves one; else \s: one character
    size_t last = at, p = at;
    while (p < end) { last = p; class_at(s, p, &p); }
    return last > at ? last : next;
}

// ----------------------------------------------------------------------------
// byte-pair merges inside one piece

typedef struct {
    int *tokens;
    int count, max;
} Out;

static int push(Out *o, int token) {
    if (o->count >= o->max) return -1;
    o->tokens[o->count++] = token;
    return 0;
}

static int rank_of(const BPE *bpe, const unsigned char *p, size_t n) {
    int id = lookup(bpe, p, n);
    return id < 0 ? INT32_MAX : id;  // for r50k_base a token's id is its merge rank
}

// tiktoken's byte_pair_encode: part boundaries start[0..n], rank[i] of merging part i with part i+1;
// repeatedly merge the lowest rank (leftmost on ties). O(n^2) in the piece length, as tiktoken's.
static int merge_piece(const BPE *bpe, const unsigned char *p, size_t n, Out *o) {
    int id = lookup(bpe, p, n);
    if (id >= 0) return push(o, id);
    size_t small_start[64];
    int small_rank[64];
    size_t *start = n + 1 <= 64 ? small_start : malloc((n + 1) * sizeof(size_t));
    int *rank = n + 1 <= 64 ? small_rank : malloc((n + 1) * sizeof(int));
    if (start == NULL || rank == NULL) {
        if (start != small_start) free(start);
        if (rank != small_rank) free(rank);
        return -1;
    }
    size_t parts = n + 1;  // boundaries, the last one is n
    for (size_t i = 0; i <= n; i++) start[i] = i;
    for (size_t i = 0; i + 1 < n; i++) rank[i] = rank_of(bpe, p + i, 2);
    rank[n - 1] = rank[n] = INT32_MAX;  // no pair starts at the last byte; rank[n] is only ever moved
    for (;;) {
        size_t best = 0;
        int best_rank = INT32_MAX;
        for (size_t i = 0; i + 1 < parts; i++)
            if (rank[i] < best_rank) { best_rank = rank[i]; best = i; }
        if (best_rank == INT32_MAX) break;
        // merge parts best and best+1: drop boundary best+1, then rerank the neighbours
        memmove(start + best + 1, start + best + 2, (parts - best - 2) * sizeof(size_t));
        memmove(rank + best + 1, rank + best + 2, (parts - best - 2) * sizeof(int));
        parts--;
        rank[best] = best + 2 < parts ? rank_of(bpe, p + start[best], start[best + 2] - start[best]) : INT32_MAX;
        if (best > 0) rank[best - 1] = rank_of(bpe, p + start[best - 1], start[best + 1] - start[best - 1]);
    }
    int rc = 0;
    for (size_t i = 0; i + 1 < parts && rc == 0; i++) rc = push(o, lookup(bpe, p + start[i], start[i + 1] - start[i]));
    if (start != small_start) free(start);
    if (rank != small_rank) free(rank);
    return rc;
}

static int is_all_space_token(const BPE *bpe, int id) {
    for (uint32_t i = bpe->offsets[id]; i < bpe->offsets[id + 1]; i++) {
        unsigned char c = bpe->bytes[i];
        if (c != ' ' && c != '\n' && c != '\t') return 0;
    }
    return 1;
}

int bpe_encode(const BPE *bpe, const char *text, size_t len, int *tokens, int max_tokens) {
    const unsigned char *t = (const unsigned char *)text;
    Out o = {tokens, 0, max_tokens};
    size_t valid = 0;
    uint32_t cp;
    for (int n; valid < len && (n = utf8_next(t + valid, len - valid, &cp)) > 0;) valid += n;
    Scanner s = {bpe, t, valid};
    int last_piece_tokens = 0;
    for (size_t at = 0; at < valid;) {
        size_t end = next_piece(&s, at);
        int before = o.count;
        if (merge_piece(bpe, t + at, end - at, &o) != 0) return -1;
        last_piece_tokens = o.count - before;
        at = end;
    }
    if (valid == len) return o.count;
    // Invalid UTF-8 from `valid` on: as tiktoken's _encode_bytes, the last piece (widened over tokens made
    // only of spaces, tabs and newlines before it) and every remaining byte go through BPE as one piece.
    if (last_piece_tokens > 0 && is_all_space_token(bpe, o.tokens[o.count - last_piece_tokens]))
        while (last_piece_tokens < o.count && is_all_space_token(bpe, o.tokens[o.count - last_piece_tokens - 1]))
            last_piece_tokens++;
    size_t from = valid;
    for (int i = 0; i < last_piece_tokens; i++) {
        size_t n = 0;
        bpe_decode(bpe, o.tokens[o.count - 1 - i], &n);
        from -= n;
    }
    o.count -= last_piece_tokens;
    // the dropped tokens spelled exactly the bytes before `valid`, so the unstable bytes are t[from..len)
    if (merge_piece(bpe, t + from, len - from, &o) != 0) return -1;
    return o.count;
}
