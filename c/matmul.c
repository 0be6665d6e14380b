/*
 * matmul.c: the engine's matrix products, y (n, out) = x (n, in) @ W^T + b, fp32, bf16, q8_0 and q4_0 (matmul.h).
 *
 * The portable loops come first: they read the file's layout, they are what a CPU without AVX2 runs, and they
 * are the reference the SIMD kernels are held to. Then one micro-kernel per type, written once over a few
 * vector primitives that each instruction set defines (llamafile's tinyBLAS habit), for two levels chosen when
 * the engine is compiled (-march=native picks the machine's):
 *   avx512-vnni  (AVX-512 F/BW + VNNI: Zen 4, Ice Lake and later Xeons): 16 floats or 64 bytes a vector
 *   avx2         (AVX2 + FMA, the x86-64-v3 machines):                  8 floats or 32 bytes a vector
 * The weights are repacked once at load into panels of 16 output rows interleaved along `in` (fp32: 16 floats
 * per input; q8_0: 16 rows x 4 consecutive bytes per step of 4 inputs, then the panel's scales), so that one
 * vector load holds a slice of 16 rows and a token's input, broadcast, multiplies all of them: a tile of
 * TILE_VECTORS vectors of rows by up to TILE_TOKENS tokens stays in registers while `in` is walked, and each
 * result is written once, with no horizontal sum. A tile's weights (32 rows x in) stay in L1/L2 while every
 * token tile of the call passes them, which is what makes a prefill compute-bound instead of bound by reading
 * the weights. Edge tiles run the same kernel at fewer tokens; rows past `out` are zero rows of the packing
 * whose results are not stored.
 *
 * q8_0 with VNNI: vpdpbusd multiplies unsigned by signed bytes, so the weights are made unsigned in the register
 * (w + 128, by flipping the top bit) and each group's dot product starts at -128 x (the sum of the token's
 * int8 values in that group): exact, the same int32 as the portable loop. Plain AVX2 has no such instruction;
 * maddubs would saturate on (w + 128) x, so it multiplies |w| by x with w's sign (both within 127 x 127).
 *
 * q4_0 is q8_0's kernel on weights that are unsigned already: its values q in 0..15 stand for q - 8, so a group's
 * dot product starts at -8 x (the token's sum) and the nibbles multiply the token's int8 values directly (vpdpbusd,
 * or maddubs, whose pairs stay within 2 x 15 x 127). Packed, a panel's step holds 16 rows x 8 inputs in 4 bytes a
 * row: the low nibbles are inputs 8s .. 8s+3 and the high ones 8s+4 .. 8s+7, unpacked in registers with a mask and
 * a shift. Half of q8_0's bytes, for a decode that is bound by reading them.
 *
 * bf16 is the fp32 kernel reading 2-byte weights: each vector of them is widened to fp32 in the register (a
 * shift by 16), so the sums are the fp32 kernel's on the bf16-rounded weights. (CPUs with avx512_bf16 could
 * multiply pairs with vdpbf16ps on bf16-rounded activations; not done: no machine here has it to test.)
 */
#define _DEFAULT_SOURCE  // clock_gettime, posix_memalign, madvise
#include "matmul.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PANEL 16   // output rows interleaved in one panel of the packed layout
#define Q4_GROUP 32  // q4_0's group: llama.cpp's QK4_0

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// q4_0 value i (0..15) of a row in the file's layout: groups of 32 in 16 bytes, value j low and j + 16 high
static inline int q4_value(const uint8_t *row, int i) {
    uint8_t byte = row[i / Q4_GROUP * (Q4_GROUP / 2) + i % (Q4_GROUP / 2)];
    return i % Q4_GROUP < Q4_GROUP / 2 ? byte & 15 : byte >> 4;
}

size_t matmul_values_bytes(const WeightMatrix *w) {
    size_t n = (size_t)w->rows * w->cols;
    switch (w->type) {
    case WEIGHT_Q8_0: return n;
    case WEIGHT_Q4_0: return n / 2;
    case WEIGHT_BF16: return n * 2;
    default: return n * 4;
    }
}

size_t matmul_scales_bytes(const WeightMatrix *w) {
    int grouped = w->type == WEIGHT_Q8_0 || w->type == WEIGHT_Q4_0;
    return grouped ? (size_t)w->rows * (w->cols / w->group_size) * sizeof(float) : 0;
}

void matmul_row(float *out, const WeightMatrix *w, int row) {
    int in = w->cols, groups = w->group_size ? in / w->group_size : 1;
    const float *scales = w->s ? w->s + (size_t)row * groups : NULL;
    for (int i = 0; i < in; i++) {
        switch (w->type) {
        case WEIGHT_Q8_0: out[i] = w->q[(size_t)row * in + i] * scales[i / w->group_size]; break;
        case WEIGHT_Q4_0: out[i] = (q4_value(w->q4 + (size_t)row * in / 2, i) - 8) * scales[i / w->group_size]; break;
        case WEIGHT_BF16: out[i] = bf16_to_f32(w->bf[(size_t)row * in + i]); break;
        default: out[i] = w->f[(size_t)row * in + i];
        }
    }
}

// ----------------------------------------------------------------------------
// the portable kernels: the file's layout, one output at a time

// q8_0 activations (c/FORMAT.md): per group of gs inputs, scale = max|x|/127, q = round-half-even(x/scale)
static void quantize_rows(QuantizedRows *xq, const float *x, int n, int in, int gs) {
    int groups = in / gs;
    #pragma omp parallel for
    for (int t = 0; t < n; t++) {
        for (int g = 0; g < groups; g++) {
            const float *xg = x + (size_t)t * in + (size_t)g * gs;
            int8_t *qg = xq->q + (size_t)t * in + (size_t)g * gs;
            float lanes[16] = {0};  // |x|'s maximum in 16 lanes, then across them: the loop vectorizes
            for (int i = 0; i < gs; i++) lanes[i % 16] = fabsf(xg[i]) > lanes[i % 16] ? fabsf(xg[i]) : lanes[i % 16];
            float amax = 0.0f;
            for (int i = 0; i < 16; i++) amax = lanes[i] > amax ? lanes[i] : amax;
            float scale = amax / 127.0f;
            int32_t sum = 0;
            if (scale > 0.0f) {
                for (int i = 0; i < gs; i++) {  // comparisons, not fminf/fmaxf (calls); NaN (a damaged file) to -127
                    float v = rintf(xg[i] / scale);
                    qg[i] = (int8_t)(v > -127.0f ? (v < 127.0f ? v : 127.0f) : -127.0f);
                    sum += qg[i];
                }
            } else {
                memset(qg, 0, gs);
            }
            xq->scales[(size_t)t * groups + g] = scale;
            xq->sums[(size_t)t * groups + g] = sum;
        }
    }
}

// c/FORMAT.md as written: per group an int32 dot product, times both scales, summed over groups in order
static float dot_row_q8(const int8_t *w, const float *ws, const int8_t *x, const float *xs, int in, int gs) {
    float y = 0.0f;
    for (int g = 0; g < in / gs; g++) {
        int32_t sum = 0;
        for (int i = g * gs; i < (g + 1) * gs; i++) sum += (int32_t)w[i] * (int32_t)x[i];
        y += (float)sum * ws[g] * xs[g];
    }
    return y;
}

// q4_0 as c/FORMAT.md writes it: per group, the int32 dot product of (q - 8) and the token's int8 values
static float dot_row_q4(const uint8_t *w, const float *ws, const int8_t *x, const float *xs, int in) {
    float y = 0.0f;
    for (int g = 0; g < in / Q4_GROUP; g++) {
        int32_t sum = 0;
        for (int i = g * Q4_GROUP; i < (g + 1) * Q4_GROUP; i++) sum += (q4_value(w, i) - 8) * (int32_t)x[i];
        y += (float)sum * ws[g] * xs[g];
    }
    return y;
}

// dot_f32's order (16 lanes, then pairwise) on the weights widened to fp32
static float dot_row_bf16(const uint16_t *w, const float *x, int in) {
    float lanes[16] = {0};
    int i = 0;
    for (; i + 16 <= in; i += 16)
        for (int k = 0; k < 16; k++) lanes[k] += bf16_to_f32(w[i + k]) * x[i + k];
    for (int width = 8; width > 0; width /= 2)
        for (int k = 0; k < width; k++) lanes[k] += lanes[k + width];
    float sum = lanes[0];
    for (; i < in; i++) sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

void matmul_portable(float *y, const float *x, const WeightMatrix *w, const float *b, int n, QuantizedRows *x_q) {
    int in = w->cols, out = w->rows, gs = w->group_size, groups = gs ? in / gs : 0;
    if (w->type == WEIGHT_Q8_0 || w->type == WEIGHT_Q4_0) quantize_rows(x_q, x, n, in, gs);
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < out; o++) {
        for (int t = 0; t < n; t++) {
            const int8_t *xq = x_q ? x_q->q + (size_t)t * in : NULL;
            const float *xs = x_q ? x_q->scales + (size_t)t * groups : NULL;
            float dot;
            switch (w->type) {
            case WEIGHT_Q8_0: dot = dot_row_q8(w->q + (size_t)o * in, w->s + (size_t)o * groups, xq, xs, in, gs); break;
            case WEIGHT_Q4_0: dot = dot_row_q4(w->q4 + (size_t)o * in / 2, w->s + (size_t)o * groups, xq, xs, in); break;
            case WEIGHT_BF16: dot = dot_row_bf16(w->bf + (size_t)o * in, x + (size_t)t * in, in); break;
            default: dot = dot_f32(w->f + (size_t)o * in, x + (size_t)t * in, in);
            }
            y[(size_t)t * out + o] = dot + (b ? b[o] : 0.0f);
        }
    }
}

int quantized_rows_init(QuantizedRows *x, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    x->q = malloc(n);
    x->scales = malloc(n * sizeof(float));  // one per group: generous, as the group size is not known here
    x->sums = malloc(n * sizeof(int32_t));
    if (x->q && x->scales && x->sums) return 0;
    quantized_rows_free(x);
    return -1;
}

void quantized_rows_free(QuantizedRows *x) {
    free(x->q); free(x->scales); free(x->sums);
    x->q = NULL; x->scales = NULL; x->sums = NULL;
}

// ----------------------------------------------------------------------------
// the vector primitives of each level

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define SIMD_LEVEL "avx512-vnni"
#define KERNEL_NAME "fp32 and bf16 avx512 32x12, q8_0 and q4_0 avx512-vnni 32x6"
#define LANES 16
#define F32_TILE_TOKENS 12  // 2 x 12 accumulators + 2 weight vectors + 1 broadcast of the 32 zmm registers
#define Q8_TILE_TOKENS 6    // 2 x 6 int32 dot products + 2 x 6 float sums + 2 weights + 1 broadcast
typedef __m512 vfloat;
typedef __m512i vint;
typedef __m512i q8weights;  // w + 128, as unsigned bytes
#define Q8_OFFSET 128
static inline vfloat vf_zero(void) { return _mm512_setzero_ps(); }
static inline vfloat vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline vfloat vf_set1(float v) { return _mm512_set1_ps(v); }
static inline vfloat vf_fma(vfloat a, vfloat b, vfloat c) { return _mm512_fmadd_ps(a, b, c); }
static inline vfloat vf_mul(vfloat a, vfloat b) { return _mm512_mul_ps(a, b); }
static inline vfloat vf_add(vfloat a, vfloat b) { return _mm512_add_ps(a, b); }
static inline void vf_store(float *p, vfloat v) { _mm512_storeu_ps(p, v); }
static inline vint vi_set1(int32_t v) { return _mm512_set1_epi32(v); }
static inline vfloat vi_to_vf(vint v) { return _mm512_cvtepi32_ps(v); }
static inline q8weights q8_load(const int8_t *p) {
    return _mm512_xor_si512(_mm512_loadu_si512((const void *)p), _mm512_set1_epi8((char)0x80));
}
// each int32 lane += its row's 4 weights x the token's 4 inputs
static inline vint q8_dot4(vint acc, q8weights w, vint x) { return _mm512_dpbusd_epi32(acc, w, x); }
// 16 rows x 8 nibbles: the low ones (a step of 4 inputs) and the high ones (the next 4), as unsigned bytes
static inline void q4_load(const uint8_t *p, vint *low, vint *high) {
    __m512i raw = _mm512_loadu_si512((const void *)p), mask = _mm512_set1_epi8(0x0F);
    *low = _mm512_and_si512(raw, mask);
    *high = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
}
static inline vint q4_dot4(vint acc, vint w, vint x) { return _mm512_dpbusd_epi32(acc, w, x); }
static inline vfloat bf16_load(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SIMD_LEVEL "avx2"
#define KERNEL_NAME "fp32 and bf16 avx2 16x6, q8_0 and q4_0 avx2 16x4"
#define LANES 8
#define F32_TILE_TOKENS 6   // 2 x 6 accumulators + 2 weight vectors + 1 broadcast of the 16 ymm registers
#define Q8_TILE_TOKENS 4
typedef __m256 vfloat;
typedef __m256i vint;
typedef struct { __m256i abs, sign; } q8weights;  // |w| and w, whose sign goes onto the token's bytes
#define Q8_OFFSET 0
static inline vfloat vf_zero(void) { return _mm256_setzero_ps(); }
static inline vfloat vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline vfloat vf_set1(float v) { return _mm256_set1_ps(v); }
static inline vfloat vf_fma(vfloat a, vfloat b, vfloat c) { return _mm256_fmadd_ps(a, b, c); }
static inline vfloat vf_mul(vfloat a, vfloat b) { return _mm256_mul_ps(a, b); }
static inline vfloat vf_add(vfloat a, vfloat b) { return _mm256_add_ps(a, b); }
static inline void vf_store(float *p, vfloat v) { _mm256_storeu_ps(p, v); }
static inline vint vi_set1(int32_t v) { return _mm256_set1_epi32(v); }
static inline vfloat vi_to_vf(vint v) { return _mm256_cvtepi32_ps(v); }
static inline q8weights q8_load(const int8_t *p) {
    __m256i w = _mm256_loadu_si256((const __m256i *)p);
    return (q8weights){_mm256_sign_epi8(w, w), w};
}
static inline vint q8_dot4(vint acc, q8weights w, vint x) {
    __m256i pairs = _mm256_maddubs_epi16(w.abs, _mm256_sign_epi8(x, w.sign));  // |pair| <= 2 x 127 x 127
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
static inline void q4_load(const uint8_t *p, vint *low, vint *high) {
    __m256i raw = _mm256_loadu_si256((const __m256i *)p), mask = _mm256_set1_epi8(0x0F);
    *low = _mm256_and_si256(raw, mask);
    *high = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
}
static inline vint q4_dot4(vint acc, vint w, vint x) {  // |pair| <= 2 x 15 x 128: no saturation
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)));
}
static inline vfloat bf16_load(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
#endif

// ----------------------------------------------------------------------------
// the packed kernels

#ifdef SIMD_LEVEL
#define TILE_VECTORS 2                       // vectors of rows in a tile
#define TILE_ROWS (TILE_VECTORS * LANES)     // 32 rows (avx512-vnni) or 16 (avx2)
#define ALWAYS_INLINE inline __attribute__((always_inline))

static int padded_rows(int rows) { return (rows + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS; }

const char *matmul_kernel_name(void) { return KERNEL_NAME " (rows x tokens per tile, weights repacked at load)"; }

size_t matmul_packed_bytes(const WeightMatrix *w) {
    WeightMatrix padded = *w;
    padded.rows = padded_rows(w->rows);
    return matmul_values_bytes(&padded) + matmul_scales_bytes(&padded);
}

int matmul_pack(WeightMatrix *w) {
    // A matrix of 2 MB or more starts on a 2 MB boundary and asks Linux for huge pages over its whole 2 MB spans
    // (the tail stays in small pages, so no memory is added): a decode streams every weight once a token, and on 4 KB
    // pages that costs a TLB miss every 4 KB. llama.cpp's mmap of its GGUF gets the page cache's large folios where
    // the kernel has them. Prefill, which keeps a tile's weights in cache, gains nothing; decode does.
    size_t bytes = (matmul_packed_bytes(w) + 63) / 64 * 64, huge = (size_t)2 << 20;
    void *packed;
    if (posix_memalign(&packed, bytes >= huge ? huge : 64, bytes) != 0) return -1;
#ifdef MADV_HUGEPAGE
    if (bytes >= huge) madvise(packed, bytes / huge * huge, MADV_HUGEPAGE);  // advice: nothing changes if refused
#endif
    int rows = w->rows, in = w->cols, panels = padded_rows(rows) / PANEL;
    if (w->type == WEIGHT_F32 || w->type == WEIGHT_BF16) {  // panel p, input i: rows 16p .. 16p+15
        float *wp = packed;
        uint16_t *hp = packed;
        for (int p = 0; p < panels; p++)
            for (int i = 0; i < in; i++)
                for (int r = 0; r < PANEL; r++) {
                    int o = p * PANEL + r;
                    size_t at = ((size_t)p * in + i) * PANEL + r;
                    if (w->type == WEIGHT_F32) wp[at] = o < rows ? w->f[(size_t)o * in + i] : 0.0f;
                    else hp[at] = o < rows ? w->bf[(size_t)o * in + i] : 0;
                }
    } else if (w->type == WEIGHT_Q8_0) {
        // panel p, step s: rows 16p .. 16p+15 x inputs 4s .. 4s+3; then the scales, panel p, group g: 16 rows
        int8_t *qp = packed;
        int steps = in / 4, groups = in / w->group_size;
        float *sp = (float *)(qp + (size_t)panels * PANEL * in);
        for (int p = 0; p < panels; p++)
            for (int r = 0; r < PANEL; r++) {
                int o = p * PANEL + r;
                for (int s = 0; s < steps; s++)
                    for (int k = 0; k < 4; k++)
                        qp[((size_t)p * steps + s) * PANEL * 4 + r * 4 + k] = o < rows ? w->q[(size_t)o * in + 4 * s + k] : 0;
                for (int g = 0; g < groups; g++)
                    sp[((size_t)p * groups + g) * PANEL + r] = o < rows ? w->s[(size_t)o * groups + g] : 0.0f;
            }
    } else {
        // panel p, step s: rows 16p .. 16p+15 x 4 bytes, byte k holding inputs 8s+k (low) and 8s+4+k (high);
        // then the scales as q8_0's. Rows past the matrix: value 8 (zero) and scale 0
        uint8_t *qp = packed;
        int steps = in / 8, groups = in / Q4_GROUP;
        float *sp = (float *)(qp + (size_t)panels * PANEL * in / 2);
        for (int p = 0; p < panels; p++)
            for (int r = 0; r < PANEL; r++) {
                int o = p * PANEL + r;
                const uint8_t *row = w->q4 + (size_t)o * in / 2;
                for (int s = 0; s < steps; s++)
                    for (int k = 0; k < 4; k++) {
                        int low = o < rows ? q4_value(row, 8 * s + k) : 8, high = o < rows ? q4_value(row, 8 * s + 4 + k) : 8;
                        qp[((size_t)p * steps + s) * PANEL * 4 + r * 4 + k] = (uint8_t)(low | high << 4);
                    }
                for (int g = 0; g < groups; g++)
                    sp[((size_t)p * groups + g) * PANEL + r] = o < rows ? w->s[(size_t)o * groups + g] : 0.0f;
            }
    }
    w->packed = packed;
    return 0;
}

#define MAX_TILE_TOKENS (F32_TILE_TOKENS > Q8_TILE_TOKENS ? F32_TILE_TOKENS : Q8_TILE_TOKENS)

// The tile's results (TILE_ROWS outputs of each of `tokens` tokens, row-major by token) into y, plus the bias;
// at the last tile, only the rows that exist.
static ALWAYS_INLINE void store_tile(float *y, vfloat acc[TILE_VECTORS][MAX_TILE_TOKENS],
                                     const float *b, int out, int o0, int t0, int tokens) {
    if (o0 + TILE_ROWS <= out) {
        for (int r = 0; r < TILE_VECTORS; r++) {
            vfloat bias = b ? vf_load(b + o0 + r * LANES) : vf_zero();
            for (int j = 0; j < tokens; j++) vf_store(y + (size_t)(t0 + j) * out + o0 + r * LANES, vf_add(acc[r][j], bias));
        }
        return;
    }
    float tmp[TILE_ROWS];
    for (int j = 0; j < tokens; j++) {
        for (int r = 0; r < TILE_VECTORS; r++) vf_store(tmp + r * LANES, acc[r][j]);
        for (int o = o0; o < out; o++) y[(size_t)(t0 + j) * out + o] = tmp[o - o0] + (b ? b[o] : 0.0f);
    }
}

// tokens t0 .. t0+tokens-1 (tokens <= F32_TILE_TOKENS, a constant where it is inlined) x rows o0 .. o0+TILE_ROWS-1;
// bf16 (a constant too): the packed weights are bf16, widened as they are loaded
static ALWAYS_INLINE void tile_f32(float *y, const float *x, const void *wp, const float *b, int in, int out, int o0,
                                   int t0, int tokens, int bf16) {
    vfloat acc[TILE_VECTORS][MAX_TILE_TOKENS];
    size_t w[TILE_VECTORS];  // the element of the packed layout where each vector of rows starts
    for (int r = 0; r < TILE_VECTORS; r++) {
        int row = o0 + r * LANES;
        w[r] = (size_t)(row / PANEL) * in * PANEL + row % PANEL;
        for (int j = 0; j < tokens; j++) acc[r][j] = vf_zero();
    }
    const float *xt = x + (size_t)t0 * in;
    for (int i = 0; i < in; i++) {
        vfloat wv[TILE_VECTORS];
        for (int r = 0; r < TILE_VECTORS; r++)
            wv[r] = bf16 ? bf16_load((const uint16_t *)wp + w[r] + (size_t)i * PANEL)
                         : vf_load((const float *)wp + w[r] + (size_t)i * PANEL);
        #pragma GCC unroll 16
        for (int j = 0; j < tokens; j++) {
            vfloat xv = vf_set1(xt[(size_t)j * in + i]);
            for (int r = 0; r < TILE_VECTORS; r++) acc[r][j] = vf_fma(wv[r], xv, acc[r][j]);
        }
    }
    store_tile(y, acc, b, out, o0, t0, tokens);
}

// q4 (a constant where it is inlined): the packed weights are q4_0's nibbles, 8 inputs a step, not q8_0's bytes
static ALWAYS_INLINE void tile_q8(float *y, const QuantizedRows *x, const void *qp, const float *sp, const float *b,
                                  int in, int out, int gs, int o0, int t0, int tokens, int q4) {
    int inputs_per_step = q4 ? 8 : 4, steps = in / inputs_per_step, groups = in / gs;
    vfloat acc[TILE_VECTORS][MAX_TILE_TOKENS];
    const uint8_t *w[TILE_VECTORS];
    const float *ws[TILE_VECTORS];
    for (int r = 0; r < TILE_VECTORS; r++) {
        int row = o0 + r * LANES;
        w[r] = (const uint8_t *)qp + (size_t)(row / PANEL) * steps * PANEL * 4 + (row % PANEL) * 4;
        ws[r] = sp + (size_t)(row / PANEL) * groups * PANEL + row % PANEL;
        for (int j = 0; j < tokens; j++) acc[r][j] = vf_zero();
    }
    const int8_t *xt = x->q + (size_t)t0 * in;
    for (int g = 0; g < groups; g++) {
        vint dot[TILE_VECTORS][MAX_TILE_TOKENS];
        for (int j = 0; j < tokens; j++) {
            vint start = vi_set1(-(q4 ? 8 : Q8_OFFSET) * x->sums[(size_t)(t0 + j) * groups + g]);
            for (int r = 0; r < TILE_VECTORS; r++) dot[r][j] = start;
        }
        for (int s = g * gs / inputs_per_step; s < (g + 1) * gs / inputs_per_step; s++) {
            if (q4) {
                vint low[TILE_VECTORS], high[TILE_VECTORS];
                for (int r = 0; r < TILE_VECTORS; r++) q4_load(w[r] + (size_t)s * PANEL * 4, &low[r], &high[r]);
                #pragma GCC unroll 16
                for (int j = 0; j < tokens; j++) {
                    int32_t first, second;
                    memcpy(&first, xt + (size_t)j * in + 8 * s, 4);
                    memcpy(&second, xt + (size_t)j * in + 8 * s + 4, 4);
                    vint x_first = vi_set1(first), x_second = vi_set1(second);
                    for (int r = 0; r < TILE_VECTORS; r++)
                        dot[r][j] = q4_dot4(q4_dot4(dot[r][j], low[r], x_first), high[r], x_second);
                }
                continue;
            }
            q8weights wv[TILE_VECTORS];
            for (int r = 0; r < TILE_VECTORS; r++) wv[r] = q8_load((const int8_t *)w[r] + (size_t)s * PANEL * 4);
            #pragma GCC unroll 16
            for (int j = 0; j < tokens; j++) {
                int32_t four;
                memcpy(&four, xt + (size_t)j * in + 4 * s, 4);
                vint xv = vi_set1(four);
                for (int r = 0; r < TILE_VECTORS; r++) dot[r][j] = q8_dot4(dot[r][j], wv[r], xv);
            }
        }
        for (int r = 0; r < TILE_VECTORS; r++) {
            vfloat w_scale = vf_load(ws[r] + (size_t)g * PANEL);
            for (int j = 0; j < tokens; j++) {
                vfloat scale = vf_mul(w_scale, vf_set1(x->scales[(size_t)(t0 + j) * groups + g]));
                acc[r][j] = vf_fma(vi_to_vf(dot[r][j]), scale, acc[r][j]);
            }
        }
    }
    store_tile(y, acc, b, out, o0, t0, tokens);
}

// One function per tile width, so that each inlined kernel has a constant token count: its loops unroll and its
// accumulators live in registers.
#define TILE_F32_CASE(k) case k: tile_f32(y, x, wp, b, in, out, o0, t, k, bf16); break;
static ALWAYS_INLINE void row_tiles_f32(float *y, const float *x, const void *wp, const float *b, int n, int in, int out,
                                        int bf16) {
    int tiles = padded_rows(out) / TILE_ROWS;
    #pragma omp parallel for schedule(static)
    for (int tile = 0; tile < tiles; tile++) {
        int o0 = tile * TILE_ROWS;
        for (int t = 0; t < n; t += F32_TILE_TOKENS) {
            switch (n - t < F32_TILE_TOKENS ? n - t : F32_TILE_TOKENS) {
                TILE_F32_CASE(1) TILE_F32_CASE(2) TILE_F32_CASE(3) TILE_F32_CASE(4) TILE_F32_CASE(5) TILE_F32_CASE(6)
#if F32_TILE_TOKENS > 6
                TILE_F32_CASE(7) TILE_F32_CASE(8) TILE_F32_CASE(9) TILE_F32_CASE(10) TILE_F32_CASE(11) TILE_F32_CASE(12)
#endif
            }
        }
    }
}

#define TILE_Q8_CASE(k) case k: tile_q8(y, x, qp, sp, b, in, out, gs, o0, t, k, q4); break;
static ALWAYS_INLINE void row_tiles_q8(float *y, const QuantizedRows *x, const WeightMatrix *w, const float *b, int n,
                                       int q4) {
    int in = w->cols, out = w->rows, gs = w->group_size, tiles = padded_rows(out) / TILE_ROWS;
    const uint8_t *qp = w->packed;
    const float *sp = (const float *)(qp + (size_t)padded_rows(out) * in / (q4 ? 2 : 1));
    #pragma omp parallel for schedule(static)
    for (int tile = 0; tile < tiles; tile++) {
        int o0 = tile * TILE_ROWS;
        for (int t = 0; t < n; t += Q8_TILE_TOKENS) {
            switch (n - t < Q8_TILE_TOKENS ? n - t : Q8_TILE_TOKENS) {
                TILE_Q8_CASE(1) TILE_Q8_CASE(2) TILE_Q8_CASE(3) TILE_Q8_CASE(4)
#if Q8_TILE_TOKENS > 4
                TILE_Q8_CASE(5) TILE_Q8_CASE(6)
#endif
            }
        }
    }
}

void matmul(float *y, const float *x, const WeightMatrix *w, const float *b, int n, QuantizedRows *x_q) {
    if (w->packed == NULL) {
        matmul_portable(y, x, w, b, n, x_q);
        return;
    }
    switch (w->type) {  // each call names its type as a constant: one specialized kernel each
    case WEIGHT_F32: row_tiles_f32(y, x, w->packed, b, n, w->cols, w->rows, 0); break;
    case WEIGHT_BF16: row_tiles_f32(y, x, w->packed, b, n, w->cols, w->rows, 1); break;
    case WEIGHT_Q8_0:
        quantize_rows(x_q, x, n, w->cols, w->group_size);
        row_tiles_q8(y, x_q, w, b, n, 0);
        break;
    case WEIGHT_Q4_0:
        quantize_rows(x_q, x, n, w->cols, w->group_size);
        row_tiles_q8(y, x_q, w, b, n, 1);
        break;
    }
}

// KEY_BLOCK sums in KEY_BLOCK / LANES registers, twice: even and odd dimensions in separate accumulators, so that
// twice as many independent multiply-add chains cover the instruction's latency
void attention_scores(float *scores, const float *q, const float *keys, int hs, float scale) {
    vfloat even[KEY_BLOCK / LANES], odd[KEY_BLOCK / LANES];
    for (int r = 0; r < KEY_BLOCK / LANES; r++) even[r] = odd[r] = vf_zero();
    int d = 0;
    for (; d + 2 <= hs; d += 2) {
        vfloat q0 = vf_set1(q[d]), q1 = vf_set1(q[d + 1]);
        const float *k0 = keys + (size_t)d * KEY_BLOCK, *k1 = k0 + KEY_BLOCK;
        for (int r = 0; r < KEY_BLOCK / LANES; r++) {
            even[r] = vf_fma(q0, vf_load(k0 + r * LANES), even[r]);
            odd[r] = vf_fma(q1, vf_load(k1 + r * LANES), odd[r]);
        }
    }
    if (d < hs)
        for (int r = 0; r < KEY_BLOCK / LANES; r++) even[r] = vf_fma(vf_set1(q[d]), vf_load(keys + (size_t)d * KEY_BLOCK + r * LANES), even[r]);
    for (int r = 0; r < KEY_BLOCK / LANES; r++) vf_store(scores + r * LANES, vf_mul(vf_add(even[r], odd[r]), vf_set1(scale)));
}

// 4 vectors of dimensions at a time, held in registers over the rows (even and odd rows apart, as above); the
// dimensions past them one by one
void attention_values(float *out, const float *p, const float *values, int count, int hs) {
    int d = 0;
    for (; d + 4 * LANES <= hs; d += 4 * LANES) {
        vfloat even[4], odd[4];
        for (int r = 0; r < 4; r++) {
            even[r] = vf_load(out + d + r * LANES);
            odd[r] = vf_zero();
        }
        int j = 0;
        for (; j + 2 <= count; j += 2) {
            vfloat p0 = vf_set1(p[j]), p1 = vf_set1(p[j + 1]);
            const float *v0 = values + (size_t)j * hs + d, *v1 = v0 + hs;
            for (int r = 0; r < 4; r++) {
                even[r] = vf_fma(p0, vf_load(v0 + r * LANES), even[r]);
                odd[r] = vf_fma(p1, vf_load(v1 + r * LANES), odd[r]);
            }
        }
        if (j < count)
            for (int r = 0; r < 4; r++) even[r] = vf_fma(vf_set1(p[j]), vf_load(values + (size_t)j * hs + d + r * LANES), even[r]);
        for (int r = 0; r < 4; r++) vf_store(out + d + r * LANES, vf_add(even[r], odd[r]));
    }
    for (; d < hs; d++)
        for (int j = 0; j < count; j++) out[d] += p[j] * values[(size_t)j * hs + d];
}

#define PEAK_CHAINS 8  // independent accumulators: enough to cover the multiply-add latency
#define PEAK_FP32_OPS (PEAK_CHAINS * LANES * 2)
#define PEAK_INT8_OPS (PEAK_CHAINS * LANES * 4 * 2)
static float peak_fp32(long iterations) {
    vfloat acc[PEAK_CHAINS], scale = vf_set1(0.999f), add = vf_set1(1e-3f);
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = vf_set1((float)c);
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = vf_fma(acc[c], scale, add);
    float out[LANES], sum = 0.0f;
    for (int c = 0; c < PEAK_CHAINS; c++) {
        vf_store(out, acc[c]);
        sum += out[0];
    }
    return sum;  // used, so that the loop is not optimized away
}

// as the q8_0 tile's inner step: two weight vectors, each token's 4 bytes broadcast once against both
static float peak_int8(long iterations) {
    int8_t bytes[2][64];
    for (int i = 0; i < 64; i++) bytes[0][i] = (int8_t)(i - 32), bytes[1][i] = (int8_t)(31 - i);
    q8weights w[2] = {q8_load(bytes[0]), q8_load(bytes[1])};
    vint acc[PEAK_CHAINS];
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = vi_set1(c);
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < PEAK_CHAINS; c += 2) {
            vint x = vi_set1((int32_t)(i + c));  // a token's new input: nothing of the step can be hoisted
            acc[c] = q8_dot4(acc[c], w[0], x);
            acc[c + 1] = q8_dot4(acc[c + 1], w[1], x);
        }
    float out[LANES], sum = 0.0f;
    for (int c = 0; c < PEAK_CHAINS; c++) {
        vf_store(out, vi_to_vf(acc[c]));
        sum += out[0];
    }
    return sum;
}

#else  // no SIMD level: the portable kernels on the file's layout, nothing packed

#define PEAK_CHAINS 8
#define PEAK_FP32_OPS (PEAK_CHAINS * 2)
#define PEAK_INT8_OPS (PEAK_CHAINS * 2)
static float peak_fp32(long iterations) {
    float acc[PEAK_CHAINS], sum = 0.0f;
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = (float)c;
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = acc[c] * 0.999f + 1e-3f;
    for (int c = 0; c < PEAK_CHAINS; c++) sum += acc[c];
    return sum;
}

static float peak_int8(long iterations) {
    int32_t acc[PEAK_CHAINS];
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = c;
    for (long i = 0; i < iterations; i++)  // the portable kernel's step: an int8 x int8 product into int32
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = (int32_t)((uint32_t)acc[c] + (uint32_t)((int8_t)(c - 4) * (int8_t)(i & 63)));
    float sum = 0.0f;
    for (int c = 0; c < PEAK_CHAINS; c++) sum += (float)acc[c];
    return sum;
}

void attention_scores(float *scores, const float *q, const float *keys, int hs, float scale) {
    for (int j = 0; j < KEY_BLOCK; j++) scores[j] = 0.0f;
    for (int d = 0; d < hs; d++)
        for (int j = 0; j < KEY_BLOCK; j++) scores[j] += q[d] * keys[(size_t)d * KEY_BLOCK + j];
    for (int j = 0; j < KEY_BLOCK; j++) scores[j] *= scale;
}

void attention_values(float *out, const float *p, const float *values, int count, int hs) {
    for (int j = 0; j < count; j++)
        for (int d = 0; d < hs; d++) out[d] += p[j] * values[(size_t)j * hs + d];
}

const char *matmul_kernel_name(void) { return "fp32 and bf16 portable, q8_0 and q4_0 portable (no AVX2: one output at a time)"; }
size_t matmul_packed_bytes(const WeightMatrix *w) { (void)w; return 0; }
int matmul_pack(WeightMatrix *w) { w->packed = NULL; return 0; }
void matmul(float *y, const float *x, const WeightMatrix *w, const float *b, int n, QuantizedRows *x_q) {
    matmul_portable(y, x, w, b, n, x_q);
}

#endif

static double clock_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The best of PEAK_TRIALS short runs per type: a peak is an upper bound, and on a shared machine one longer run can
   catch a slow moment (two bench_serve tables showed kernels at 103-111% of such a "peak"; alternating runs of this
   loop on that VM spread from 143 to 197 GFLOP/s). */
#define PEAK_TRIALS 5
void matmul_peak(double *fp32_ops_per_second, double *int8_ops_per_second) {
    const long iterations = 20000000;  // a few tenths of a second per trial on one 3 GHz core
    for (int type = 0; type < 2; type++) {
        double best = 0.0;
        for (int trial = 0; trial < PEAK_TRIALS; trial++) {
            int threads = 0;
            float sum = 0.0f;
            double start = clock_seconds();
            #pragma omp parallel reduction(+:threads, sum)
            {
                threads += 1;
                sum += type == 0 ? peak_fp32(iterations) : peak_int8(iterations);
            }
            volatile float sink = sum;  // the chains' results are used: the loops cannot be optimized away
            (void)sink;
            double ops = (double)threads * iterations * (type == 0 ? PEAK_FP32_OPS : PEAK_INT8_OPS);
            double rate = ops / (clock_seconds() - start);
            if (rate > best) best = rate;
        }
        *(type == 0 ? fp32_ops_per_second : int8_ops_per_second) = best;
    }
}

void matmul_free_packed(WeightMatrix *w) {
    free(w->packed);
    w->packed = NULL;
}
