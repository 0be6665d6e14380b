// tests/test_matmul.py's driver: the kernel this build chose (matmul) against the portable reference
// (matmul_portable) on random matrices of odd shapes: fp32, bf16, q8_0 with group sizes 32 and 64, and q4_0.
// For every shape it checks, and prints the worst case of each:
//   error: |kernel - reference| / sum_i |w_i x_i| (the two sum in different orders; the int8 products are exact)
//   alone: whether each token's outputs are bit for bit the ones it gets multiplied alone (n = 1)
// and attention's two products (attention_scores, attention_values) against plain loops on odd head sizes:
//     matmul_test            prints "kernel <name>", "TYPE error E alone A" for fp32, bf16, q8_0 and q4_0,
//                            "attention error E"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../c/matmul.h"

static uint64_t rng = 42;
static float uniform(void) {  // in [-1, 1)
    rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
    return (float)((rng * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0f - 1.0f;
}

static void *checked(void *p) {
    if (p == NULL) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}

static uint16_t to_bf16(float f) {  // round to nearest, ties to even (finite values)
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// the worst error and whether every row alone matched, over one shape; gs: the group size of q8_0 and q4_0
static void check(int type, int n, int in, int out, int gs, double *worst, int *alone_ok) {
    float *wf = checked(malloc((size_t)out * in * sizeof(float)));
    float *x = checked(malloc((size_t)n * in * sizeof(float)));
    float *b = checked(malloc((size_t)out * sizeof(float)));
    float *y = checked(malloc((size_t)n * out * sizeof(float)));
    float *ref = checked(malloc((size_t)n * out * sizeof(float)));
    float *one = checked(malloc((size_t)out * sizeof(float)));
    int8_t *q = checked(malloc((size_t)out * in));
    uint8_t *q4 = checked(calloc((size_t)out * in / 2 + 1, 1));
    uint16_t *bf = checked(malloc((size_t)out * in * sizeof(uint16_t)));
    float *s = checked(malloc((size_t)out * (gs ? in / gs : 1) * sizeof(float)));
    for (size_t i = 0; i < (size_t)out * in; i++) wf[i] = uniform();
    for (size_t i = 0; i < (size_t)n * in; i++) x[i] = uniform() * (i % 7 == 0 ? 8.0f : 1.0f);  // a few outliers
    for (int i = 0; i < out; i++) b[i] = uniform();
    WeightMatrix w = {.type = type, .rows = out, .cols = in, .group_size = gs};
    if (type == WEIGHT_Q4_0) {  // c/FORMAT.md's q4_0 of the random weights; one group of zeros, whose scale is 0
        for (int o = 0; o < out; o++)
            for (int g = 0; g < in / gs; g++) {
                float *wg = wf + (size_t)o * in + (size_t)g * gs, largest = 0.0f;
                if (o == 0 && g == 0) memset(wg, 0, gs * sizeof(float));
                for (int i = 0; i < gs; i++) largest = fabsf(wg[i]) > fabsf(largest) ? wg[i] : largest;
                float d = largest / -8.0f, inverse = d != 0.0f ? 1.0f / d : 0.0f;
                s[(size_t)o * (in / gs) + g] = d;
                for (int i = 0; i < gs; i++) {
                    int v = (int)(wg[i] * inverse + 8.5f);
                    v = v < 15 ? v : 15;
                    q4[((size_t)o * in + (size_t)g * gs) / 2 + i % 16] |= (uint8_t)(i < 16 ? v : v << 4);
                    wg[i] = (v - 8) * d;  // |w| for the error bound
                }
            }
        w.q4 = q4;
        w.s = s;
    } else if (type == WEIGHT_BF16) {
        for (size_t i = 0; i < (size_t)out * in; i++) {
            bf[i] = to_bf16(wf[i]);
            wf[i] = from_bf16(bf[i]);
        }
        w.bf = bf;
    } else if (type == WEIGHT_Q8_0) {  // c/FORMAT.md's q8_0 of the random weights; one group of zeros, whose scale is 0
        for (int o = 0; o < out; o++)
            for (int g = 0; g < in / gs; g++) {
                float amax = 0.0f;
                float *wg = wf + (size_t)o * in + (size_t)g * gs;
                if (o == 0 && g == 0) memset(wg, 0, gs * sizeof(float));
                for (int i = 0; i < gs; i++) amax = fmaxf(amax, fabsf(wg[i]));
                float scale = amax / 127.0f;
                s[(size_t)o * (in / gs) + g] = scale;
                for (int i = 0; i < gs; i++) {
                    q[(size_t)o * in + (size_t)g * gs + i] = (int8_t)(scale > 0 ? rintf(wg[i] / scale) : 0);
                    wg[i] = q[(size_t)o * in + (size_t)g * gs + i] * scale;  // |w| for the error bound
                }
            }
        w.q = q;
        w.s = s;
    } else {
        w.f = wf;
    }
    QuantizedRows xq;
    if (quantized_rows_init(&xq, n, in) != 0 || matmul_pack(&w) != 0) { fprintf(stderr, "out of memory\n"); exit(1); }
    matmul_portable(ref, x, &w, b, n, &xq);
    matmul(y, x, &w, b, n, &xq);
    for (int t = 0; t < n; t++) {
        for (int o = 0; o < out; o++) {
            double magnitude = fabsf(b[o]) + 1e-6;
            for (int i = 0; i < in; i++) magnitude += fabs((double)wf[(size_t)o * in + i] * x[(size_t)t * in + i]);
            double e = fabs((double)y[(size_t)t * out + o] - ref[(size_t)t * out + o]) / magnitude;
            if (!(e <= *worst)) *worst = e;  // NaN counts as worst
        }
        matmul(one, x + (size_t)t * in, &w, b, 1, &xq);
        if (memcmp(one, y + (size_t)t * out, (size_t)out * sizeof(float)) != 0) *alone_ok = 0;
    }
    matmul_free_packed(&w);
    quantized_rows_free(&xq);
    free(wf); free(x); free(b); free(y); free(ref); free(one); free(q); free(q4); free(bf); free(s);
}

// the worst |kernel - plain loop| / sum |terms| of attention's scores and weighted values, over head sizes and counts
static double check_attention(void) {
    static const int head_sizes[] = {1, 3, 16, 17, 32, 64, 80, 130};
    double worst = 0.0;
    for (size_t h = 0; h < sizeof head_sizes / sizeof *head_sizes; h++) {
        int hs = head_sizes[h];
        float *q = checked(malloc(hs * sizeof(float))), *keys = checked(malloc((size_t)hs * KEY_BLOCK * sizeof(float)));
        float *values = checked(malloc((size_t)KEY_BLOCK * hs * sizeof(float))), p[KEY_BLOCK], scores[KEY_BLOCK];
        float *out = checked(malloc(hs * sizeof(float)));
        for (int i = 0; i < hs; i++) q[i] = uniform();
        for (int i = 0; i < hs * KEY_BLOCK; i++) keys[i] = uniform(), values[i] = uniform();
        for (int j = 0; j < KEY_BLOCK; j++) p[j] = (uniform() + 1.0f) / 2;
        attention_scores(scores, q, keys, hs, 0.125f);
        for (int j = 0; j < KEY_BLOCK; j++) {
            double ref = 0.0, magnitude = 1e-6;
            for (int d = 0; d < hs; d++) {
                ref += (double)q[d] * keys[(size_t)d * KEY_BLOCK + j] * 0.125;
                magnitude += fabs((double)q[d] * keys[(size_t)d * KEY_BLOCK + j] * 0.125);
            }
            double e = fabs(scores[j] - ref) / magnitude;
            if (!(e <= worst)) worst = e;
        }
        for (int count = 1; count <= KEY_BLOCK; count += count < 9 ? 1 : 11) {
            for (int d = 0; d < hs; d++) out[d] = 0.5f;
            attention_values(out, p, values, count, hs);
            for (int d = 0; d < hs; d++) {
                double ref = 0.5, magnitude = 0.5;
                for (int j = 0; j < count; j++) {
                    ref += (double)p[j] * values[(size_t)j * hs + d];
                    magnitude += fabs((double)p[j] * values[(size_t)j * hs + d]);
                }
                double e = fabs(out[d] - ref) / magnitude;
                if (!(e <= worst)) worst = e;
            }
        }
        free(q); free(keys); free(values); free(out);
    }
    return worst;
}

int main(void) {
    printf("kernel %s\n", matmul_kernel_name());
    // tokens at every tile edge (tiles of 4, 6 and 12 tokens), rows around the 16- and 32-row tiles
    static const int tokens[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 17, 25, 33};
    static const int rows[] = {1, 15, 16, 17, 31, 32, 33, 48, 65, 100};
    static const int fp32_in[] = {1, 3, 16, 17, 64, 100};
    double worst = 0.0;
    int alone = 1;
    for (int type = WEIGHT_F32; type <= WEIGHT_BF16; type += WEIGHT_BF16 - WEIGHT_F32) {
        for (size_t a = 0; a < sizeof tokens / sizeof *tokens; a++)
            for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
                for (size_t c = 0; c < sizeof fp32_in / sizeof *fp32_in; c++)
                    check(type, tokens[a], fp32_in[c], rows[r], 0, &worst, &alone);
        printf("%s error %.3g alone %d\n", type == WEIGHT_F32 ? "fp32" : "bf16", worst, alone);
        worst = 0.0;
        alone = 1;
    }
    for (int gs = 32; gs <= 64; gs *= 2)
        for (size_t a = 0; a < sizeof tokens / sizeof *tokens; a++)
            for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
                for (int groups = 1; groups <= 3; groups++) check(WEIGHT_Q8_0, tokens[a], groups * gs, rows[r], gs, &worst, &alone);
    printf("q8_0 error %.3g alone %d\n", worst, alone);
    worst = 0.0;
    alone = 1;
    for (size_t a = 0; a < sizeof tokens / sizeof *tokens; a++)
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
            for (int groups = 1; groups <= 4; groups++) check(WEIGHT_Q4_0, tokens[a], groups * 32, rows[r], 32, &worst, &alone);
    printf("q4_0 error %.3g alone %d\n", worst, alone);
    printf("attention error %.3g\n", check_attention());
    return 0;
}
