/*
 * gpt.c: the forward pass of model.py's GPT (every variant) over a memory-mapped file, in fp32, bf16, q8_0 or
 * q4_0.
 *
 * The plain structure of karpathy/llama2.c's run.c (config, weights pointing into the mapped file, a run
 * state with the KV cache, the forward pass written as the math reads), with two changes: a prompt goes
 * through as one batch (matrix-matrix, each weight read once for many tokens), and every field read from
 * the file is checked before it is used. The q8_0 and q4_0 schemes are c/FORMAT.md's (quantize.py is their
 * reference).
 */
#define _DEFAULT_SOURCE  // madvise
#include "gpt.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GPT_MAGIC 0x43545047u  // "GPTC" read as a little-endian uint32
#define GPT_VERSION 2u
#define HEADER_SIZE 256
#define ALIGN 64

static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    if (err == NULL || err_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static uint32_t read_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static int32_t read_i32(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }
static float read_f32(const unsigned char *p) { float v; memcpy(&v, p, 4); return v; }
static uint64_t read_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

// ----------------------------------------------------------------------------
// the file: header, then the tensors in a fixed order, each 64-byte aligned (c/FORMAT.md)

typedef struct {
    uint64_t offset;  // where the next tensor goes
    uint64_t size;    // the file's size, to check every tensor against
    const unsigned char *base;
} Layout;

static const void *take(Layout *l, uint64_t bytes) {
    l->offset = (l->offset + ALIGN - 1) / ALIGN * ALIGN;
    const void *p = l->base ? l->base + l->offset : NULL;
    l->offset += bytes;
    return p;
}

static const float *take_f32(Layout *l, uint64_t n) { return (const float *)take(l, n * 4); }

const char *gpt_dtype_name(int dtype) {
    static const char *names[] = {"fp32", "q8_0", "q4_0", "bf16"};
    return dtype >= 0 && dtype < 4 ? names[dtype] : "unknown";
}

// A matrix of the file's dtype (c/FORMAT.md); the head of a q4_0 file is q8_0 in the same groups of 32.
static WeightMatrix take_matrix(Layout *l, const GPTConfig *c, int rows, int cols, int head) {
    static const int types[] = {WEIGHT_F32, WEIGHT_Q8_0, WEIGHT_Q4_0, WEIGHT_BF16};  // by GPT_DTYPE_*
    WeightMatrix m = {.type = head && c->dtype == GPT_DTYPE_Q4_0 ? WEIGHT_Q8_0 : types[c->dtype], .rows = rows,
                      .cols = cols, .group_size = c->group_size};
    uint64_t n = (uint64_t)rows * cols;
    switch (m.type) {
    case WEIGHT_Q8_0: m.q = (const int8_t *)take(l, n); break;
    case WEIGHT_Q4_0: m.q4 = (const uint8_t *)take(l, n / 2); break;
    case WEIGHT_BF16: m.bf = (const uint16_t *)take(l, n * 2); break;
    default: m.f = take_f32(l, n);
    }
    if (m.type == WEIGHT_Q8_0 || m.type == WEIGHT_Q4_0) m.s = take_f32(l, (uint64_t)rows * (cols / c->group_size));
    return m;
}

// Walk the tensors in file order; with l->base NULL it only measures (used to check the file's size first).
static void layout_weights(GPTModel *m, Layout *l) {
    const GPTConfig *c = &m->config;
    int C = c->n_embd, V = c->padded_vocab_size;
    int layernorm_bias = c->norm == GPT_NORM_LAYERNORM && c->bias;
    m->wte = (c->tie_embeddings && c->dtype != GPT_DTYPE_FP32) ? NULL : take_f32(l, (uint64_t)V * C);
    m->wpe = c->pos_emb == GPT_POS_LEARNED ? take_f32(l, (uint64_t)c->block_size * C) : NULL;
    m->value_embeds = c->value_embeds ? take_f32(l, (uint64_t)((c->n_layer + 1) / 2) * V * C) : NULL;
    for (int i = 0; i < c->n_layer; i++) {
        GPTLayer *L = &m->layers[i];
        memset(L, 0, sizeof *L);
        if (c->value_embeds) L->value_lambdas = take_f32(l, 2);
        L->ln_1_w = take_f32(l, C);
        if (layernorm_bias) L->ln_1_b = take_f32(l, C);
        L->c_attn = take_matrix(l, c, 3 * C, C, 0);
        if (c->bias) L->c_attn_b = take_f32(l, 3 * C);
        L->attn_proj = take_matrix(l, c, C, C, 0);
        if (c->bias) L->attn_proj_b = take_f32(l, C);
        L->ln_2_w = take_f32(l, C);
        if (layernorm_bias) L->ln_2_b = take_f32(l, C);
        L->c_fc = take_matrix(l, c, c->hidden, C, 0);
        if (c->bias) L->c_fc_b = take_f32(l, c->hidden);
        if (c->mlp == GPT_MLP_SWIGLU) {
            L->c_gate = take_matrix(l, c, c->hidden, C, 0);
            if (c->bias) L->c_gate_b = take_f32(l, c->hidden);
        }
        L->mlp_proj = take_matrix(l, c, C, c->hidden, 0);
        if (c->bias) L->mlp_proj_b = take_f32(l, C);
    }
    m->skip_weights = c->unet_skips && c->n_layer / 2 ? take_f32(l, c->n_layer / 2) : NULL;
    m->ln_f_w = take_f32(l, C);
    m->ln_f_b = layernorm_bias ? take_f32(l, C) : NULL;
    if (!c->tie_embeddings || c->dtype != GPT_DTYPE_FP32) {
        m->lm_head = take_matrix(l, c, V, C, 1);
    } else {
        m->lm_head = (WeightMatrix){.type = WEIGHT_F32, .f = m->wte, .rows = V, .cols = C};
    }
}

// The k-th of the matrices a forward pass multiplies by: the head (the largest, first: repacked while nothing else
// is, the process's peak memory stays at the copies plus one original), then five per layer (c_gate has no rows
// without SwiGLU); NULL past the last.
static WeightMatrix *weight_matrix(GPTModel *m, int k) {
    if (k == 0) return &m->lm_head;
    if (k > m->config.n_layer * 5) return NULL;
    GPTLayer *L = &m->layers[(k - 1) / 5];
    WeightMatrix *mats[] = {&L->c_attn, &L->attn_proj, &L->c_fc, &L->c_gate, &L->mlp_proj};
    return mats[(k - 1) % 5];
}

// Let the kernel drop the pages of [p, p + bytes) that this mapping holds (the whole pages inside it): a packed
// matrix is read from its copy, and without this the file's pages it was copied from stay counted in the
// process's memory. The mapping is private and read-only: a page touched again (a tied head's embedding rows) is
// read back from the file.
static void release_pages(const void *p, size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + bytes) / page * page;
    if (end > start) madvise((void *)start, end - start, MADV_DONTNEED);
}

static int finite_positive(float x) { return isfinite(x) && x > 0.0f; }

// Every header field in range, so that no size computed from them can overflow (all in uint64 below).
static int check_config(const GPTConfig *c, const char *path, char *err, size_t err_size) {
#define BAD(...) do { set_error(err, err_size, __VA_ARGS__); return -1; } while (0)
    if (c->n_layer < 1 || c->n_layer > 4096) BAD("%s: n_layer %d is out of range (corrupted header?)", path, c->n_layer);
    if (c->n_head < 1 || c->n_embd < 1 || c->n_embd > 1 << 16 || c->n_embd % c->n_head != 0)
        BAD("%s: n_embd %d with n_head %d is not a valid shape (corrupted header?)", path, c->n_embd, c->n_head);
    if (c->block_size < 1 || c->block_size > 1 << 20) BAD("%s: block_size %d is out of range (corrupted header?)", path, c->block_size);
    if (c->padded_vocab_size < 1 || c->padded_vocab_size > 1 << 24 || c->vocab_size < 1 || c->vocab_size > c->padded_vocab_size)
        BAD("%s: vocab_size %d / padded %d are out of range (corrupted header?)", path, c->vocab_size, c->padded_vocab_size);
    if (c->pos_emb != GPT_POS_LEARNED && c->pos_emb != GPT_POS_ROPE) BAD("%s: unknown pos_emb %d", path, c->pos_emb);
    if (c->mlp < GPT_MLP_GELU || c->mlp > GPT_MLP_RELU2) BAD("%s: unknown mlp %d", path, c->mlp);
    if (c->norm != GPT_NORM_LAYERNORM && c->norm != GPT_NORM_RMSNORM) BAD("%s: unknown norm %d", path, c->norm);
    if (c->hidden < 1 || c->hidden > 1 << 20) BAD("%s: MLP hidden size %d is out of range", path, c->hidden);
    if ((c->qk_norm | c->tie_embeddings | c->bias | c->doc_mask | c->value_embeds | c->unet_skips) & ~1)
        BAD("%s: a flag (qk_norm, tie_embeddings, bias, doc_mask, value_embeds, unet_skips) is neither 0 nor 1", path);
    if (c->attn_window < 0) BAD("%s: attn_window %d is negative", path, c->attn_window);
    if (c->dtype == GPT_DTYPE_Q8_0 || c->dtype == GPT_DTYPE_Q4_0) {
        if (c->dtype == GPT_DTYPE_Q8_0 && c->group_size != 32 && c->group_size != 64)
            BAD("%s: q8_0 group_size %d is not 32 or 64", path, c->group_size);
        if (c->dtype == GPT_DTYPE_Q4_0 && c->group_size != 32) BAD("%s: q4_0 group_size %d is not 32", path, c->group_size);
        if (c->n_embd % c->group_size || c->hidden % c->group_size)
            BAD("%s: widths %d and %d are not multiples of group_size %d", path, c->n_embd, c->hidden, c->group_size);
    } else if (c->dtype != GPT_DTYPE_FP32 && c->dtype != GPT_DTYPE_BF16) {
        BAD("%s: unknown dtype %d (this engine knows fp32, q8_0, q4_0 and bf16)", path, c->dtype);
    }
    if (c->pos_emb == GPT_POS_ROPE && (c->n_embd / c->n_head) % 2) BAD("%s: RoPE needs an even head size", path);
    if (!isfinite(c->logit_softcap) || c->logit_softcap < 0) BAD("%s: logit_softcap is not 0 or positive", path);
    if (!finite_positive(c->rope_theta) || !finite_positive(c->norm_eps) || !finite_positive(c->qk_norm_eps))
        BAD("%s: rope_theta or a norm epsilon is not a positive number", path);
    if (c->eot_token < 0) BAD("%s: eot_token %d is negative", path, c->eot_token);
    return 0;
#undef BAD
}

GPTModel *gpt_open(const char *path, char *err, size_t err_size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        set_error(err, err_size, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_error(err, err_size, "%s is not a regular file", path);
        close(fd);
        return NULL;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < HEADER_SIZE) {
        set_error(err, err_size, "%s is not a model file: %llu bytes, shorter than the %d-byte header", path,
                  (unsigned long long)size, HEADER_SIZE);
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        set_error(err, err_size, "cannot map %s: %s", path, strerror(errno));
        return NULL;
    }
    const unsigned char *h = map;
    GPTModel *m = calloc(1, sizeof *m);
    if (m == NULL) {
        set_error(err, err_size, "out of memory");
        munmap(map, size);
        return NULL;
    }
    m->map = map;
    m->map_size = size;
    if (read_u32(h) != GPT_MAGIC) {
        set_error(err, err_size, "%s is not a c/gpt model file (wrong magic number); write one with export.py", path);
        goto fail;
    }
    uint32_t version = read_u32(h + 4);
    if (version != GPT_VERSION) {
        set_error(err, err_size, "%s has format version %u, this engine reads version %u; %s", path, version, GPT_VERSION,
                  version > GPT_VERSION ? "update c/gpt" : "export the model again");
        goto fail;
    }
    GPTConfig *c = &m->config;
    int32_t f[16];
    for (int i = 0; i < 16; i++) f[i] = read_i32(h + 8 + 4 * i);
    c->n_layer = f[0]; c->n_head = f[1]; c->n_embd = f[2]; c->block_size = f[3];
    c->vocab_size = f[4]; c->padded_vocab_size = f[5]; c->pos_emb = f[6]; c->mlp = f[7]; c->hidden = f[8];
    c->norm = f[9]; c->qk_norm = f[10]; c->tie_embeddings = f[11]; c->bias = f[12]; c->dtype = f[13];
    c->group_size = f[14]; c->eot_token = f[15];
    c->logit_softcap = read_f32(h + 72);
    c->rope_theta = read_f32(h + 76);
    c->norm_eps = read_f32(h + 80);
    c->qk_norm_eps = read_f32(h + 84);
    uint64_t tokenizer_offset = read_u64(h + 88), tokenizer_size = read_u64(h + 96), file_size = read_u64(h + 104);
    c->doc_mask = read_i32(h + 112); c->attn_window = read_i32(h + 116);
    c->value_embeds = read_i32(h + 120); c->unet_skips = read_i32(h + 124);
    if (check_config(c, path, err, err_size) != 0) goto fail;
    if (file_size != size) {
        set_error(err, err_size, "%s is %s: the header says %llu bytes, the file has %llu", path,
                  size < file_size ? "truncated" : "damaged", (unsigned long long)file_size, (unsigned long long)size);
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layer, sizeof(GPTLayer));
    if (m->layers == NULL) {
        set_error(err, err_size, "out of memory");
        goto fail;
    }
    Layout measure = {HEADER_SIZE, size, NULL};
    layout_weights(m, &measure);
    uint64_t expected_tokenizer = (measure.offset + ALIGN - 1) / ALIGN * ALIGN;
    if (tokenizer_offset != expected_tokenizer || tokenizer_size > size || tokenizer_offset + tokenizer_size != size) {
        set_error(err, err_size, "%s: the tensors for this config end at %llu and the tokenizer should span %llu..%llu, "
                  "but the file has %llu bytes (damaged or written by another exporter)", path,
                  (unsigned long long)measure.offset, (unsigned long long)tokenizer_offset,
                  (unsigned long long)(tokenizer_offset + tokenizer_size), (unsigned long long)size);
        goto fail;
    }
    Layout l = {HEADER_SIZE, size, h};
    layout_weights(m, &l);
    m->tokenizer = h + tokenizer_offset;
    m->tokenizer_size = (size_t)tokenizer_size;
    // every matrix into the SIMD kernel's layout, once: the cost of a faster prefill is this copy (matmul.h)
    WeightMatrix *w;
    for (int k = 0; (w = weight_matrix(m, k)) != NULL; k++) {
        if (w->rows == 0) continue;
        if (matmul_pack(w) != 0) {
            set_error(err, err_size, "out of memory repacking the weights of %s", path);
            goto fail;
        }
        m->packed_bytes += matmul_packed_bytes(w);
        if (w->packed == NULL) continue;
        const void *values = w->f ? (const void *)w->f : w->q ? (const void *)w->q : w->q4 ? (const void *)w->q4 : (const void *)w->bf;
        release_pages(values, matmul_values_bytes(w));
        if (w->s) release_pages(w->s, matmul_scales_bytes(w));
    }

    if (c->pos_emb == GPT_POS_ROPE) {
        // model.rope_cos_sin: float32 angles t * theta^(-2i/hs), dimension i and i + hs/2 share an angle
        int hs = c->n_embd / c->n_head;
        size_t n = (size_t)c->block_size * hs;
        m->rope_cos = malloc(n * sizeof(float));
        m->rope_sin = malloc(n * sizeof(float));
        if (m->rope_cos == NULL || m->rope_sin == NULL) {
            set_error(err, err_size, "out of memory");
            goto fail;
        }
        for (int i = 0; i < hs / 2; i++) {
            float inv_freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)hs);
            for (int t = 0; t < c->block_size; t++) {
                float angle = (float)t * inv_freq;
                size_t at = (size_t)t * hs;
                m->rope_cos[at + i] = m->rope_cos[at + i + hs / 2] = cosf(angle);
                m->rope_sin[at + i] = m->rope_sin[at + i + hs / 2] = sinf(angle);
            }
        }
    }
    return m;
fail:
    gpt_close(m);
    return NULL;
}

void gpt_close(GPTModel *m) {
    if (m == NULL) return;
    if (m->map) munmap(m->map, m->map_size);
    WeightMatrix *w;
    for (int k = 0; m->layers && (w = weight_matrix(m, k)) != NULL; k++) matmul_free_packed(w);
    free(m->layers);
    free(m->rope_cos);
    free(m->rope_sin);
    free(m);
}

void gpt_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

// ----------------------------------------------------------------------------
// the state of one generation

// The activations of one forward pass over up to `rows` tokens, which may belong to different generations
// (a batched decode step): row r is token r of state row_state[r] at position row_pos[r].
typedef struct {
    int rows;
    GPTState **row_state;
    int *row_pos;
    int *query_groups;  // attention's groups of rows: group g is rows query_groups[g] .. query_groups[g+1]-1
    int *head_rows;     // the rows whose logits a pass computes
    float *x, *xb, *xb2, *qkv, *hb, *hb2;
    float *skips;      // unet_skips: the outputs of blocks 0 .. n_layer/2-1 for these rows
    QuantizedRows xq;  // q8_0 activations
    GPTProfile profile;  // where the forward passes over these activations spent their time
} Activations;

static void activations_free(Activations *a) {
    free(a->row_state); free(a->row_pos); free(a->query_groups); free(a->head_rows);
    free(a->x); free(a->xb); free(a->xb2); free(a->qkv); free(a->hb); free(a->hb2); free(a->skips);
    quantized_rows_free(&a->xq);
}

static int activations_init(Activations *a, const GPTConfig *c, int rows) {
    size_t R = (size_t)rows, C = (size_t)c->n_embd, H = (size_t)c->hidden;
    size_t widest = 3 * C > H ? 3 * C : H;
    memset(a, 0, sizeof *a);
    a->rows = rows;
    a->row_state = malloc(R * sizeof(GPTState *));
    a->row_pos = malloc(R * sizeof(int));
    a->query_groups = malloc((R + 1) * sizeof(int));
    a->head_rows = malloc(R * sizeof(int));
    a->x = malloc(R * C * sizeof(float));
    a->xb = malloc(R * C * sizeof(float));
    a->xb2 = malloc(R * C * sizeof(float));
    a->qkv = malloc(R * 3 * C * sizeof(float));
    a->hb = malloc(R * H * sizeof(float));
    a->hb2 = malloc(R * H * sizeof(float));
    a->skips = malloc(((size_t)c->n_layer / 2 + 1) * R * C * sizeof(float));
    int quantized = quantized_rows_init(&a->xq, rows, (int)widest);
    if (a->row_state && a->row_pos && a->query_groups && a->head_rows && a->x && a->xb && a->xb2 && a->qkv && a->hb &&
        a->hb2 && a->skips && quantized == 0)
        return 0;
    activations_free(a);
    return -1;
}

// Keys are cached in blocks of KEY_BLOCK positions (matmul.h), each block stored dimension-major (block, head_size,
// KEY_BLOCK): a query's scores against a block are KEY_BLOCK independent sums that vectorize over the keys, with no
// horizontal sum per key (attention_scores).
static int cache_blocks(const GPTConfig *c) { return (c->block_size + KEY_BLOCK - 1) / KEY_BLOCK; }

struct GPTState {
    int length;        // tokens seen so far
    int pos;           // positions held in the KV cache (<= block_size)
    int *window;       // the last min(length, block_size) tokens
    int *doc_start;    // doc_mask: the position where the document of each cached position starts
    float *key_cache;  // (n_layer, n_head, cache_blocks, head_size, KEY_BLOCK): each block of keys transposed
    float *value_cache;  // (n_layer, n_head, block_size, head_size): each head's values contiguous
    Activations act;   // for a prefill of up to block_size tokens at once
    float *logits;     // padded_vocab_size: the last token's
    char error[256];
};

GPTState *gpt_state_new(const GPTModel *m, char *err, size_t err_size) {
    const GPTConfig *c = &m->config;
    size_t T = (size_t)c->block_size, C = (size_t)c->n_embd;
    GPTState *s = calloc(1, sizeof *s);
    if (s == NULL) goto oom;
    s->window = malloc(T * sizeof(int));
    s->doc_start = malloc(T * sizeof(int));
    // zeros, not garbage, in the block positions past the last key: attend computes their scores and drops them
    s->key_cache = calloc((size_t)c->n_layer * cache_blocks(c) * KEY_BLOCK * C, sizeof(float));
    s->value_cache = malloc((size_t)c->n_layer * T * C * sizeof(float));
    s->logits = malloc((size_t)c->padded_vocab_size * sizeof(float));
    if (!s->window || !s->doc_start || !s->key_cache || !s->value_cache || !s->logits) goto oom;
    if (activations_init(&s->act, c, c->block_size) != 0) goto oom;
    return s;
oom:
    set_error(err, err_size, "out of memory for the KV cache and activations (block_size %d)", c->block_size);
    gpt_state_free(s);
    return NULL;
}

void gpt_state_free(GPTState *s) {
    if (s == NULL) return;
    free(s->window); free(s->doc_start); free(s->key_cache); free(s->value_cache); free(s->logits);
    activations_free(&s->act);
    free(s);
}

void gpt_state_reset(GPTState *s) { s->length = 0; s->pos = 0; s->error[0] = '\0'; }
int gpt_state_length(const GPTState *s) { return s->length; }

const int *gpt_state_tokens(const GPTState *s, int *n) {
    *n = s->length;
    return s->length == s->pos ? s->window : NULL;  // past block_size the window moved: pos restarted below length
}

int gpt_state_truncate(GPTState *s, int n) {
    if (s->length != s->pos || n < 0 || n > s->length) return -1;
    s->length = s->pos = n;  // the rows past n are overwritten by what comes next; masked until then
    s->error[0] = '\0';
    return 0;
}

int gpt_state_copy_prefix(const GPTModel *m, GPTState *dst, const GPTState *src, int n) {
    const GPTConfig *c = &m->config;
    if (src->length != src->pos || n < 0 || n > src->length) return -1;
    size_t T = (size_t)c->block_size, C = (size_t)c->n_embd, hs = C / (size_t)c->n_head;
    size_t blocks = ((size_t)n + KEY_BLOCK - 1) / KEY_BLOCK, block_floats = hs * KEY_BLOCK;
    for (int l = 0; l < c->n_layer; l++)
        for (int h = 0; h < c->n_head; h++) {
            size_t keys = ((size_t)l * c->n_head + h) * cache_blocks(c) * block_floats;
            size_t values = (size_t)l * T * C + (size_t)h * T * hs;
            memcpy(dst->key_cache + keys, src->key_cache + keys, blocks * block_floats * sizeof(float));
            memcpy(dst->value_cache + values, src->value_cache + values, (size_t)n * hs * sizeof(float));
        }
    memcpy(dst->window, src->window, (size_t)n * sizeof(int));
    memcpy(dst->doc_start, src->doc_start, (size_t)n * sizeof(int));
    dst->length = dst->pos = n;
    dst->error[0] = '\0';
    return 0;
}
const char *gpt_state_error(const GPTState *s) { return s->error; }
GPTProfile gpt_state_profile(const GPTState *s) { return s->act.profile; }

// ----------------------------------------------------------------------------
// the building blocks

static void layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] - mean) * rstd * w[i] + (b ? b[i] : 0.0f);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * (w ? w[i] : 1.0f);
}

static void norm_rows(const GPTConfig *c, float *out, const float *x, const float *w, const float *b, int n) {
    #pragma omp parallel for
    for (int t = 0; t < n; t++) {
        size_t at = (size_t)t * c->n_embd;
        if (c->norm == GPT_NORM_RMSNORM) rmsnorm(out + at, x + at, w, c->n_embd, c->norm_eps);
        else layernorm(out + at, x + at, w, b, c->n_embd, c->norm_eps);
    }
}

// e^x in plain arithmetic, so that a loop over it vectorizes without -ffast-math (libm's expf is a call per value,
// and the tanh-GELU, the softmaxes and the soft-cap spent a quarter of the non-matmul time of a decode step in it):
// e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series to r^6. Within 3e-7 relative of e^x
// for x in [-87, 88]; 0 below, e^88 above.
static inline float exp_f32(float x) {
    // comparisons, not fminf/fmaxf (calls, where these vectorize); NaN falls to -87, as fmaxf(NaN, -87) did
    float c = x > -87.0f ? (x < 88.0f ? x : 88.0f) : -87.0f;
    float n = (c * 1.44269504f + 12582912.0f) - 12582912.0f;  // adding and removing 1.5 * 2^23 rounds to an integer
    float r = (c - n * 0.693145752f) - n * 1.42860677e-6f;    // ln 2 as a float with a short mantissa plus the rest
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    int32_t bits = ((int32_t)n + 127) << 23;  // 2^n
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

// GELU's tanh form, written as x * sigmoid(2u): 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u))
static float gelu_tanh(float x) {
    return x / (1.0f + exp_f32(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
}

static void rope(float *v, const float *cos_t, const float *sin_t, int hs) {
    int half = hs / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i + half] + a * sin_t[i + half];
    }
}

// Causal attention of up to QUERY_BLOCK queries of one head at once: query i (row i of q and of out, hs floats)
// attends to the keys and values of positions first[i] .. last[i] of the head's cache (keys: KEY_BLOCK-position
// blocks, dimension-major; values: one row of hs per position). Keys go by block with a running max and sum per
// query (flash-attention style), so the scores of a long prompt never leave L1, and every block of keys is read
// once for all the queries.
#define QUERY_BLOCK 8
// out and q: rows of C (the model's width) and 3 C floats (the qkv of a row), their head's slice.
static void attend(float *out, const float *q, const int *first, const int *last, int queries, const float *keys,
                   const float *values, int hs, int C, float scale) {
    float score[QUERY_BLOCK][KEY_BLOCK], max[QUERY_BLOCK], sum[QUERY_BLOCK];
    int lo = first[0], hi = last[0];
    for (int i = 0; i < queries; i++) {
        for (int d = 0; d < hs; d++) out[(size_t)i * C + d] = 0.0f;
        max[i] = -INFINITY;
        sum[i] = 0.0f;
        lo = first[i] < lo ? first[i] : lo;
        hi = last[i] > hi ? last[i] : hi;
    }
    for (int block = lo / KEY_BLOCK; block <= hi / KEY_BLOCK; block++) {
        const float *kb = keys + (size_t)block * hs * KEY_BLOCK;
        int p0 = block * KEY_BLOCK;
        for (int i = 0; i < queries; i++) attention_scores(score[i], q + (size_t)i * 3 * C, kb, hs, scale);
        for (int i = 0; i < queries; i++) {
            int j0 = first[i] > p0 ? first[i] - p0 : 0, j1 = last[i] - p0 < KEY_BLOCK - 1 ? last[i] - p0 : KEY_BLOCK - 1;
            if (j0 > j1) continue;  // none of this query's keys in the block
            // every step over the whole block, the keys outside the query's range at -inf (weight 0): fixed-length
            // loops vectorize, where a max or a sum over j0..j1 is a chain of dependent scalar steps
            float *sc = score[i], *o = out + (size_t)i * C;
            for (int j = 0; j < KEY_BLOCK; j++) sc[j] = j >= j0 && j <= j1 ? sc[j] : -INFINITY;
            float lanes[16];
            for (int k = 0; k < 16; k++) lanes[k] = -INFINITY;
            for (int j = 0; j < KEY_BLOCK; j += 16)
                for (int k = 0; k < 16; k++) lanes[k] = sc[j + k] > lanes[k] ? sc[j + k] : lanes[k];
            float block_max = lanes[0];
            for (int k = 1; k < 16; k++) block_max = lanes[k] > block_max ? lanes[k] : block_max;
            if (block_max > max[i]) {  // rescale what was summed under the old maximum
                float rescale = expf(max[i] - block_max);
                sum[i] *= rescale;
                for (int d = 0; d < hs; d++) o[d] *= rescale;
                max[i] = block_max;
            }
            for (int j = 0; j < KEY_BLOCK; j++) sc[j] = exp_f32(sc[j] - max[i]);  // -inf: 0
            for (int k = 0; k < 16; k++) lanes[k] = 0.0f;
            for (int j = 0; j < KEY_BLOCK; j += 16)
                for (int k = 0; k < 16; k++) lanes[k] += sc[j + k];
            for (int width = 8; width > 0; width /= 2)
                for (int k = 0; k < width; k++) lanes[k] += lanes[k + width];
            sum[i] += lanes[0];
            attention_values(o, sc + j0, values + (size_t)(p0 + j0) * hs, j1 - j0 + 1, hs);
        }
    }
    for (int i = 0; i < queries; i++)
        for (int d = 0; d < hs; d++) out[(size_t)i * C + d] /= sum[i];
}

// ----------------------------------------------------------------------------
// the forward pass of n rows: row r is tokens[r] of generation a->row_state[r] at position a->row_pos[r]
// (inside block_size). Rows of one state come in order of position. logits receives the logits of the rows
// a->head_rows[0 .. n_head-1], one after another (every row for a prompt's all_logits, the last row of each
// generation for a step).

static double clock_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// matmul, its time added to *seconds (a->profile's matmul or head)
static void timed_matmul(Activations *a, double *seconds, float *y, const float *x, const WeightMatrix *w, const float *b,
                         int n) {
    double start = clock_seconds();
    matmul(y, x, w, b, n, &a->xq);
    *seconds += clock_seconds() - start;
}

static void forward(const GPTModel *m, Activations *a, const int *tokens, int n, float *logits, int n_head) {
    double start = clock_seconds();
    const GPTConfig *c = &m->config;
    int C = c->n_embd, nh = c->n_head, hs = C / nh, T = c->block_size, H = c->hidden, V = c->padded_vocab_size;
    for (int t = 0; t < n; t++) {
        float *x = a->x + (size_t)t * C;
        if (m->wte) memcpy(x, m->wte + (size_t)tokens[t] * C, C * sizeof(float));
        else matmul_row(x, &m->lm_head, tokens[t]);  // a tied head that is not fp32 is the embedding too
        if (m->wpe)
            for (int i = 0; i < C; i++) x[i] += m->wpe[(size_t)a->row_pos[t] * C + i];
        // a document starts at its <|endoftext|> (model.py's attention_mask)
        GPTState *s = a->row_state[t];
        int p = a->row_pos[t];
        s->doc_start[p] = (p == 0 || tokens[t] == c->eot_token) ? p : s->doc_start[p - 1];
    }
    // consecutive positions of one generation, up to QUERY_BLOCK, attend as a group (each block of keys read once)
    int groups = 0;
    for (int t = 0; t < n; t++)
        if (t == 0 || a->row_state[t] != a->row_state[t - 1] || a->row_pos[t] != a->row_pos[t - 1] + 1 ||
            t - a->query_groups[groups - 1] == QUERY_BLOCK)
            a->query_groups[groups++] = t;
    a->query_groups[groups] = n;
    float att_scale = 1.0f / sqrtf((float)hs);
    int half = c->n_layer / 2;
    for (int l = 0; l < c->n_layer; l++) {
        const GPTLayer *L = &m->layers[l];
        size_t layer_values = (size_t)l * T * C, layer_keys = (size_t)l * cache_blocks(c) * KEY_BLOCK * C;
        int mirrored = c->n_layer - 1 - l;  // the block of the first half that this one of the second half mirrors
        if (c->unet_skips && mirrored < half) {
            const float *skip = a->skips + (size_t)mirrored * a->rows * C;
            float w = m->skip_weights[mirrored];
            for (size_t i = 0; i < (size_t)n * C; i++) a->x[i] += w * skip[i];
        }
        const float *value_table = c->value_embeds ? m->value_embeds + (size_t)(l < mirrored ? l : mirrored) * V * C : NULL;
        norm_rows(c, a->xb, a->x, L->ln_1_w, L->ln_1_b, n);
        timed_matmul(a, &a->profile.matmul, a->qkv, a->xb, &L->c_attn, L->c_attn_b, n);
        #pragma omp parallel for collapse(2)
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < nh; h++) {
                GPTState *s = a->row_state[t];
                int p = a->row_pos[t];
                float *q = a->qkv + (size_t)t * 3 * C + h * hs, *k = q + C, *v = q + 2 * C;
                if (value_table) {
                    const float *ve = value_table + (size_t)tokens[t] * C + h * hs;
                    for (int i = 0; i < hs; i++) v[i] = L->value_lambdas[0] * v[i] + L->value_lambdas[1] * ve[i];
                }
                if (c->qk_norm) {
                    rmsnorm(q, q, NULL, hs, c->qk_norm_eps);
                    rmsnorm(k, k, NULL, hs, c->qk_norm_eps);
                }
                if (c->pos_emb == GPT_POS_ROPE) {
                    const float *cs = m->rope_cos + (size_t)p * hs, *sn = m->rope_sin + (size_t)p * hs;
                    rope(q, cs, sn, hs);
                    rope(k, cs, sn, hs);
                }
                float *kb = s->key_cache + layer_keys + ((size_t)h * cache_blocks(c) + p / KEY_BLOCK) * hs * KEY_BLOCK;
                for (int i = 0; i < hs; i++) kb[(size_t)i * KEY_BLOCK + p % KEY_BLOCK] = k[i];
                memcpy(s->value_cache + layer_values + ((size_t)h * T + p) * hs, v, hs * sizeof(float));
            }
        }
        double attention_start = clock_seconds();
        // causal attention, a group of rows of one generation (query_groups) and one head at a time, over the keys
        // first .. p of each row's own cache: all the earlier ones, or from where the token's document starts and
        // within its window (a contiguous range)
        #pragma omp parallel for collapse(2) schedule(dynamic, 1)  // 1: a single token's heads split evenly
        for (int g = 0; g < groups; g++)
            for (int h = 0; h < nh; h++) {
                int t0 = a->query_groups[g], queries = a->query_groups[g + 1] - t0, first[QUERY_BLOCK], last[QUERY_BLOCK];
                const GPTState *s = a->row_state[t0];
                for (int i = 0; i < queries; i++) {
                    int p = a->row_pos[t0 + i];
                    first[i] = c->doc_mask ? s->doc_start[p] : 0;
                    if (c->attn_window && p - c->attn_window + 1 > first[i]) first[i] = p - c->attn_window + 1;
                    last[i] = p;
                }
                const float *kc = s->key_cache + layer_keys + (size_t)h * cache_blocks(c) * KEY_BLOCK * hs;
                const float *vc = s->value_cache + layer_values + (size_t)h * T * hs;
                attend(a->xb + (size_t)t0 * C + h * hs, a->qkv + (size_t)t0 * 3 * C + h * hs, first, last, queries, kc, vc,
                       hs, C, att_scale);
            }
        a->profile.attention += clock_seconds() - attention_start;
        timed_matmul(a, &a->profile.matmul, a->xb2, a->xb, &L->attn_proj, L->attn_proj_b, n);
        for (size_t i = 0; i < (size_t)n * C; i++) a->x[i] += a->xb2[i];

        norm_rows(c, a->xb, a->x, L->ln_2_w, L->ln_2_b, n);
        timed_matmul(a, &a->profile.matmul, a->hb, a->xb, &L->c_fc, L->c_fc_b, n);
        long count = (long)n * H;
        if (c->mlp == GPT_MLP_SWIGLU) {
            timed_matmul(a, &a->profile.matmul, a->hb2, a->xb, &L->c_gate, L->c_gate_b, n);
            #pragma omp parallel for simd
            for (long i = 0; i < count; i++) a->hb[i] *= a->hb2[i] / (1.0f + exp_f32(-a->hb2[i]));
        } else if (c->mlp == GPT_MLP_RELU2) {
            #pragma omp parallel for simd
            for (long i = 0; i < count; i++) a->hb[i] = a->hb[i] > 0.0f ? a->hb[i] * a->hb[i] : 0.0f;
        } else {
            #pragma omp parallel for simd
            for (long i = 0; i < count; i++) a->hb[i] = gelu_tanh(a->hb[i]);
        }
        timed_matmul(a, &a->profile.matmul, a->xb2, a->hb, &L->mlp_proj, L->mlp_proj_b, n);
        for (size_t i = 0; i < (size_t)n * C; i++) a->x[i] += a->xb2[i];
        if (c->unet_skips && l < half) memcpy(a->skips + (size_t)l * a->rows * C, a->x, (size_t)n * C * sizeof(float));
    }
    // the head, for the rows asked: gathered, normed, multiplied
    for (int k = 0; k < n_head; k++) memcpy(a->xb2 + (size_t)k * C, a->x + (size_t)a->head_rows[k] * C, C * sizeof(float));
    norm_rows(c, a->xb, a->xb2, m->ln_f_w, m->ln_f_b, n_head);
    timed_matmul(a, &a->profile.head, logits, a->xb, &m->lm_head, NULL, n_head);
    if (c->logit_softcap > 0.0f) {
        float cap = c->logit_softcap;
        #pragma omp parallel for simd
        for (long i = 0; i < (long)n_head * V; i++)  // cap tanh(l / cap), tanh(y) = 2 / (1 + e^(-2y)) - 1
            logits[i] = cap * (2.0f / (1.0f + exp_f32(-2.0f * logits[i] / cap)) - 1.0f);
    }
    a->profile.total += clock_seconds() - start;
}

// n tokens of one generation at positions s->pos .. s->pos + n - 1 (inside block_size); s->logits gets the last
// one's logits, all_logits (if not NULL) every one's
static void forward_state(const GPTModel *m, GPTState *s, const int *tokens, int n, float *all_logits) {
    Activations *a = &s->act;
    for (int t = 0; t < n; t++) {
        a->row_state[t] = s;
        a->row_pos[t] = s->pos + t;
    }
    int V = m->config.padded_vocab_size, n_head = all_logits ? n : 1;
    for (int k = 0; k < n_head; k++) a->head_rows[k] = n - n_head + k;
    forward(m, a, tokens, n, all_logits ? all_logits : s->logits, n_head);
    if (all_logits) memcpy(s->logits, all_logits + (size_t)(n - 1) * V, V * sizeof(float));
    s->pos += n;
}

const float *gpt_prefill(const GPTModel *m, GPTState *s, const int *tokens, int n, float *all_logits) {
    const GPTConfig *c = &m->config;
    int T = c->block_size;
    if (n < 1) {
        snprintf(s->error, sizeof s->error, "prefill of %d tokens: give at least one", n);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->padded_vocab_size) {
            snprintf(s->error, sizeof s->error, "token %d is outside the model's vocabulary [0, %d)", tokens[i], c->padded_vocab_size);
            return NULL;
        }
    }
    if (s->pos + n <= T) {  // fits: extend the cache
        memcpy(s->window + s->pos, tokens, n * sizeof(int));
        s->length += n;
        forward_state(m, s, tokens, n, all_logits);
        return s->logits;
    }
    if (all_logits) {
        snprintf(s->error, sizeof s->error, "logits of every token only while they fit in block_size %d", T);
        return NULL;
    }
    // past block_size: the model conditions on the last block_size tokens (model.generate's idx[:, -block_size:]),
    // at positions 0.. again, so the window is recomputed from scratch
    if (n >= T) {
        memcpy(s->window, tokens + n - T, T * sizeof(int));
    } else {
        int keep = T - n;
        memmove(s->window, s->window + s->pos - keep, keep * sizeof(int));
        memcpy(s->window + keep, tokens, n * sizeof(int));
    }
    s->length += n;
    s->pos = 0;
    forward_state(m, s, s->window, T, NULL);
    return s->logits;
}

const float *gpt_decode(const GPTModel *m, GPTState *s, int token) { return gpt_prefill(m, s, &token, 1, NULL); }

struct GPTBatch {
    int max_batch;
    Activations act;   // rows for max_batch decodes beside a prompt of up to block_size tokens
    int *tokens;       // the tokens of the rows of a step
    int *ones;         // max_batch counts of 1: a decode step (gpt_decode_batch)
    GPTState **stepped;  // the states whose rows a step's forward pass carries
    float *logits;     // max_batch x padded_vocab_size
};

GPTBatch *gpt_batch_new(const GPTModel *m, int max_batch, char *err, size_t err_size) {
    if (max_batch < 1 || max_batch > 4096) {
        set_error(err, err_size, "a batch of %d generations: give 1 to 4096", max_batch);
        return NULL;
    }
    GPTBatch *b = calloc(1, sizeof *b);
    int rows = max_batch + m->config.block_size;
    if (b != NULL) {
        b->logits = malloc((size_t)max_batch * m->config.padded_vocab_size * sizeof(float));
        b->tokens = malloc((size_t)rows * sizeof(int));
        b->ones = malloc((size_t)max_batch * sizeof(int));
        b->stepped = malloc((size_t)max_batch * sizeof(GPTState *));
    }
    if (b == NULL || !b->logits || !b->tokens || !b->ones || !b->stepped || activations_init(&b->act, &m->config, rows) != 0) {
        if (b != NULL) { free(b->logits); free(b->tokens); free(b->ones); free(b->stepped); }
        free(b);
        set_error(err, err_size, "out of memory for a batch of %d generations", max_batch);
        return NULL;
    }
    b->max_batch = max_batch;
    for (int i = 0; i < max_batch; i++) b->ones[i] = 1;
    return b;
}

void gpt_batch_free(GPTBatch *b) {
    if (b == NULL) return;
    activations_free(&b->act);
    free(b->logits);
    free(b->tokens);
    free(b->ones);
    free(b->stepped);
    free(b);
}

const float *gpt_state_logits(const GPTState *s) { return s->logits; }

int gpt_decode_batch(const GPTModel *m, GPTBatch *b, GPTState **states, const int *tokens, int n) {
    return gpt_step(m, b, states, tokens, b->ones, n);
}

// why a step cannot run, in the first bad state's error; -1
static int step_refused(GPTState *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int step_refused(GPTState *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
    return -1;
}

int gpt_step(const GPTModel *m, GPTBatch *b, GPTState **states, const int *tokens, const int *counts, int n) {
    const GPTConfig *c = &m->config;
    int T = c->block_size, V = c->padded_vocab_size;
    if (n < 1 || n > b->max_batch)
        return n >= 1 ? step_refused(states[0], "a step of %d generations in a batch of at most %d", n, b->max_batch) : -1;
    int total = 0;
    for (int i = 0; i < n; i++) {
        GPTState *s = states[i];
        if (counts[i] < 1) return step_refused(s, "%d tokens for a generation in a step: give at least one", counts[i]);
        if (s->pos + counts[i] > T && !(s->pos == T && counts[i] == 1))
            return step_refused(s, "%d tokens at position %d pass block_size %d: prefill them alone (gpt_prefill)",
                                counts[i], s->pos, T);
        for (int j = 0; j < i; j++)
            if (states[j] == s) return step_refused(s, "generation %d is also generation %d of the step", i, j);
        for (int k = total; k < total + counts[i]; k++)
            if (tokens[k] < 0 || tokens[k] >= V)
                return step_refused(s, "token %d is outside the model's vocabulary [0, %d)", tokens[k], V);
        total += counts[i];
    }
    if (total > b->act.rows)
        return step_refused(states[0], "%d tokens in one step, more than the batch's %d rows", total, b->act.rows);
    Activations *a = &b->act;
    int rows = 0, stepped = 0;
    for (int i = 0, at = 0; i < n; at += counts[i], i++) {
        GPTState *s = states[i];
        if (s->pos == T) {  // its cache is full: the window moves and is recomputed, alone (gpt_decode's path)
            gpt_prefill(m, s, &tokens[at], 1, NULL);
            continue;
        }
        for (int k = 0; k < counts[i]; k++) {
            s->window[s->pos + k] = tokens[at + k];
            a->row_state[rows] = s;
            a->row_pos[rows] = s->pos + k;
            b->tokens[rows++] = tokens[at + k];
        }
        s->length += counts[i];
        a->head_rows[stepped] = rows - 1;  // the logits of its last token
        b->stepped[stepped++] = s;
    }
    if (rows == 0) return 0;
    forward(m, a, b->tokens, rows, b->logits, stepped);
    for (int k = 0; k < stepped; k++) {
        GPTState *s = b->stepped[k];
        memcpy(s->logits, b->logits + (size_t)k * V, V * sizeof(float));
        s->pos = a->row_pos[a->head_rows[k]] + 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// sampling

int gpt_sampler_init(GPTSampler *s, int n, float temperature, int top_k, float top_p, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;  // xorshift must not start at 0
    s->probs = malloc((size_t)n * sizeof(float));
    s->index = malloc((size_t)n * sizeof(int));
    if (n < 1 || s->probs == NULL || s->index == NULL) {
        gpt_sampler_free(s);
        return -1;
    }
    return 0;
}

void gpt_sampler_free(GPTSampler *s) {
    free(s->probs);
    free(s->index);
    s->probs = NULL;
    s->index = NULL;
}

static float random_f32(uint64_t *state) {  // xorshift64*, the top 24 bits as a float in [0, 1)
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;  // the first of equal maxima, as torch.argmax
    return best;
}

static int by_prob_desc(const void *a, const void *b, void *probs) {
    float pa = ((const float *)probs)[*(const int *)a], pb = ((const float *)probs)[*(const int *)b];
    return (pa < pb) - (pa > pb);
}

static void sort_desc(int *idx, int n, const float *probs) {
    // shell sort: no qsort_r (not C11) and no global pointer for the comparison
    for (int gap = n / 2; gap > 0; gap /= 2)
        for (int i = gap; i < n; i++) {
            int v = idx[i], j = i;
            while (j >= gap && by_prob_desc(&idx[j - gap], &v, (void *)probs) > 0) {
                idx[j] = idx[j - gap];
                j -= gap;
            }
            idx[j] = v;
        }
}

int gpt_sample(GPTSampler *s, const float *logits) {
    int n = s->n;
    if (s->temperature <= 0.0f) return argmax(logits, n);
    float max = logits[argmax(logits, n)], sum = 0.0f;
    for (int i = 0; i < n; i++) s->probs[i] = exp_f32((logits[i] - max) / s->temperature);
    for (int i = 0; i < n; i++) sum += s->probs[i];
    for (int i = 0; i < n; i++) s->probs[i] /= sum;
    int count = n;
    for (int i = 0; i < n; i++) s->index[i] = i;
    if ((s->top_k > 0 && s->top_k < n) || s->top_p < 1.0f) {
        if (s->top_k <= 0 || s->top_k >= n) {
            // top-p alone: a token below (1 - p) / (n - 1) can't be in the nucleus (llama2.c's cut), fewer to sort
            float cutoff = (1.0f - s->top_p) / (n - 1);
            count = 0;
            for (int i = 0; i < n; i++)
                if (s->probs[i] >= cutoff) s->index[count++] = i;
            if (count == 0) return argmax(logits, n);
        } else {
            // top-k: keep the k most likely, found by a partial pass before the sort
            int k = s->top_k;
            count = 0;
            for (int i = 0; i < n; i++) {
                if (count < k) {
                    s->index[count++] = i;
                    if (count == k) sort_desc(s->index, count, s->probs);
                } else if (s->probs[i] > s->probs[s->index[k - 1]]) {
                    int j = k - 1;
                    while (j > 0 && s->probs[s->index[j - 1]] < s->probs[i]) {
                        s->index[j] = s->index[j - 1];
                        j--;
                    }
                    s->index[j] = i;
                }
            }
        }
        sort_desc(s->index, count, s->probs);
        float total = 0.0f;
        for (int i = 0; i < count; i++) total += s->probs[s->index[i]];
        if (s->top_p < 1.0f) {  // the smallest prefix whose probability (renormalized within the top k) reaches top_p
            // with top-p alone the candidates are only those above the cut: their share is of the whole distribution
            float mass = s->top_k > 0 && s->top_k < n ? total : 1.0f, cumulative = 0.0f;
            for (int i = 0; i < count; i++) {
                cumulative += s->probs[s->index[i]] / mass;
                if (cumulative >= s->top_p) {
                    count = i + 1;
                    break;
                }
            }
            total = 0.0f;
            for (int i = 0; i < count; i++) total += s->probs[s->index[i]];
        }
        float r = random_f32(&s->rng) * total, cdf = 0.0f;
        for (int i = 0; i < count; i++) {
            cdf += s->probs[s->index[i]];
            if (r < cdf) return s->index[i];
        }
        return s->index[count - 1];  // rounding
    }
    float r = random_f32(&s->rng), cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += s->probs[i];
        if (r < cdf) return i;
    }
    return argmax(logits, n);  // rounding, or NaN logits from a damaged file: still a valid token
}
