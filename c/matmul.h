/*
 * matmul.h: y (n, out) = x (n, in) @ W^T + b for the engine's weight matrices, fp32, bf16, q8_0 or q4_0
 * (c/FORMAT.md).
 *
 * One place for the SIMD code. The kernel is chosen when the engine is built (the Makefile's -march=native):
 * AVX-512 (with VNNI for q8_0), AVX2 + FMA, or the portable C loops, which are also the reference that the
 * SIMD kernels are tested against (tests/test_matmul.py). The SIMD kernels read the weights repacked once at
 * load (matmul_pack): panels of 16 output rows interleaved along `in`, so that one vector load holds 16 rows
 * and each token's input is broadcast against it (outer products: no horizontal sums).
 *
 * Every output y[t][o] is summed in the same order whatever n is and wherever t falls in a tile, so a token's
 * result does not depend on the other rows of the call (a batched decode step equals decoding alone).
 */
#ifndef MATMUL_H
#define MATMUL_H

#include <stddef.h>
#include <stdint.h>

/* The types of a weight matrix (c/FORMAT.md). */
enum { WEIGHT_F32, WEIGHT_Q8_0, WEIGHT_Q4_0, WEIGHT_BF16 };

/* A weight matrix, rows (out) x cols (in), row-major as in the file: fp32, bf16, or int8 (q8_0) or 4-bit (q4_0)
   values with one fp32 scale per group of group_size columns. packed: the kernel's copy made by matmul_pack
   (NULL: none). */
typedef struct {
    int type;            // WEIGHT_*
    const float *f;      // fp32 weights (rows*cols)
    const uint16_t *bf;  // bf16 weights (rows*cols), the top halves of fp32
    const int8_t *q;     // q8_0 values (rows*cols)
    const uint8_t *q4;   // q4_0 values (rows*cols/2): per group of 32, byte j holds value j (low) and j + 16 (high)
    const float *s;      // q8_0 and q4_0 scales (rows*cols/group_size)
    int rows, cols, group_size;
    void *packed;
} WeightMatrix;

/* The file's bytes of w: its values and scales (what matmul_pack copies, and the pages it may release). */
size_t matmul_values_bytes(const WeightMatrix *w);
size_t matmul_scales_bytes(const WeightMatrix *w);
/* Row `row` of w as fp32, from the file's layout: the embedding lookup of a tied head that is not fp32. */
void matmul_row(float *out, const WeightMatrix *w, int row);

/* The q8_0 activations of up to `rows` rows of up to `cols` inputs: values, one scale per group, and the sum
   of each group's values (the VNNI kernel's correction for its unsigned weights). */
typedef struct {
    int8_t *q;
    float *scales;
    int32_t *sums;
} QuantizedRows;

/* Which kernels this build runs, e.g. "fp32 and bf16 avx512 32x12, q8_0 and q4_0 avx512-vnni 32x6". */
const char *matmul_kernel_name(void);

/* Repack w for the SIMD kernel (malloc'd into w->packed); nothing with the portable kernel. 0, or -1 out of
   memory. Bytes it takes: matmul_packed_bytes. */
int matmul_pack(WeightMatrix *w);
size_t matmul_packed_bytes(const WeightMatrix *w);
void matmul_free_packed(WeightMatrix *w);

int quantized_rows_init(QuantizedRows *x, int rows, int cols);  // 0, or -1 out of memory
void quantized_rows_free(QuantizedRows *x);

/* y = x @ w^T + b (b may be NULL), with the packed kernel where w was packed, else the portable one.
   x_q: scratch for the int8 activations of q8_0 and q4_0, room for n x w->cols. */
void matmul(float *y, const float *x, const WeightMatrix *w, const float *b, int n, QuantizedRows *x_q);
/* The portable kernel alone, on the file's layout: the reference. */
void matmul_portable(float *y, const float *x, const WeightMatrix *w, const float *b, int n, QuantizedRows *x_q);

/* This build's peak on this machine, all OpenMP threads together: fp32 multiply-adds and int8 products per
   second (a multiply and an add count 2), from independent chains of the kernels' own vector instructions on
   registers, no memory traffic: the ceiling the matmuls are measured against (c/gpt --peak). */
void matmul_peak(double *fp32_ops_per_second, double *int8_ops_per_second);

/* Attention's two products over one block of KEY_BLOCK cached positions, with the same vector primitives:
   scores[j] = scale * (q . key j) for the block's keys stored dimension-major (hs rows of KEY_BLOCK floats), and
   out[d] += sum over j < count of p[j] * values[j * hs + d]. */
#define KEY_BLOCK 64
void attention_scores(float *scores, const float *q, const float *keys, int hs, float scale);
void attention_values(float *out, const float *p, const float *values, int count, int hs);

// The dot product of two fp32 vectors in 16 lanes, summed pairwise at the end: the compiler vectorizes both loops
// without -ffast-math, where `omp simd reduction` ends in 16 serial scalar adds.
static inline float dot_f32(const float *a, const float *b, int n) {
    float lanes[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) lanes[k] += a[i + k] * b[i + k];
    for (int width = 8; width > 0; width /= 2)
        for (int k = 0; k < width; k++) lanes[k] += lanes[k + width];
    float sum = lanes[0];
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

#endif
