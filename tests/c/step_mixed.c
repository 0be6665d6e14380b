// tests/test_batch_decode.py's driver for gpt_step: every generation run alone (gpt_prefill of its prompt, then
// gpt_decode of its greedy picks), then all of them in one GPTBatch as a server mixes them: generation i arrives
// at step i, its prompt goes through in chunks of CHUNK tokens beside the others' decode rows, then it decodes
// the same picks. Prints the largest |logit difference| between the two runs (0: bit for bit) and the largest
// |logit|, over every point where a generation has logits (its prompt's end, each decode).
//     step_mixed MODEL.bin STEPS CHUNK LEN_1 LEN_2 ... LEN_B   (prompt lengths; prompt i is tokens (5 j + 3 i) % 997)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../c/gpt.h"

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[best]) best = i;
    return best;
}

static void *checked(void *p) {
    if (p == NULL) { fprintf(stderr, "error: out of memory\n"); exit(1); }
    return p;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: step_mixed MODEL.bin STEPS CHUNK LEN...\n"); return 2; }
    char err[256];
    GPTModel *m = gpt_open(argv[1], err, sizeof err);
    if (!m) { fprintf(stderr, "error: %s\n", err); return 1; }
    int steps = atoi(argv[2]), chunk = atoi(argv[3]), n = argc - 4;
    int V = m->config.padded_vocab_size, vocab = m->config.vocab_size;
    int *lengths = checked(malloc(n * sizeof(int))), **prompts = checked(malloc(n * sizeof(int *)));
    for (int i = 0; i < n; i++) {
        lengths[i] = atoi(argv[4 + i]);
        prompts[i] = checked(malloc(lengths[i] * sizeof(int)));
        for (int j = 0; j < lengths[i]; j++) prompts[i][j] = (5 * j + 3 * i) % (vocab < 997 ? vocab : 997);
        if (lengths[i] > 5 && vocab > 50256) prompts[i][lengths[i] / 2] = m->config.eot_token;  // a document boundary
    }
    // alone: logits at each of `steps` points and the greedy picks
    float *alone = checked(malloc((size_t)n * steps * V * sizeof(float)));
    int *picks = checked(malloc((size_t)n * steps * sizeof(int)));
    for (int i = 0; i < n; i++) {
        GPTState *s = gpt_state_new(m, err, sizeof err);
        if (!s) { fprintf(stderr, "error: %s\n", err); return 1; }
        const float *logits = gpt_prefill(m, s, prompts[i], lengths[i], NULL);
        for (int point = 0; point < steps && logits; point++) {
            memcpy(alone + ((size_t)i * steps + point) * V, logits, V * sizeof(float));
            picks[i * steps + point] = argmax(logits, vocab);
            if (point + 1 < steps) logits = gpt_decode(m, s, picks[i * steps + point]);
        }
        if (!logits) { fprintf(stderr, "error: %s\n", gpt_state_error(s)); return 1; }
        gpt_state_free(s);
    }
    // mixed: generation i arrives at step i; each step carries a chunk of every unfinished prompt and a decode row
    // of every generation past its prompt
    GPTBatch *b = gpt_batch_new(m, n, err, sizeof err);
    if (!b) { fprintf(stderr, "error: %s\n", err); return 1; }
    GPTState **states = checked(malloc(n * sizeof *states)), **step_states = checked(malloc(n * sizeof *step_states));
    int *fed = checked(calloc(n, sizeof(int))), *points = checked(calloc(n, sizeof(int)));
    int *counts = checked(malloc(n * sizeof(int))), *step_index = checked(malloc(n * sizeof(int)));
    int *tokens = checked(malloc(((size_t)n * chunk + n) * sizeof(int)));
    for (int i = 0; i < n; i++) {
        states[i] = gpt_state_new(m, err, sizeof err);
        if (!states[i]) { fprintf(stderr, "error: %s\n", err); return 1; }
    }
    float max_diff = 0.0f, max_abs = 0.0f;
    for (int step = 0;; step++) {
        int k = 0, total = 0;
        for (int i = 0; i < n && i <= step; i++) {
            if (points[i] == steps) continue;  // done
            if (fed[i] < lengths[i]) {
                int take = lengths[i] - fed[i] < chunk ? lengths[i] - fed[i] : chunk;
                memcpy(tokens + total, prompts[i] + fed[i], take * sizeof(int));
                counts[k] = take;
                fed[i] += take;
            } else {
                tokens[total] = picks[i * steps + points[i] - 1];
                counts[k] = 1;
            }
            total += counts[k];
            step_states[k] = states[i];
            step_index[k++] = i;
        }
        if (k == 0 && step >= n) break;
        if (k == 0) continue;
        if (gpt_step(m, b, step_states, tokens, counts, k) != 0) {
            fprintf(stderr, "error: %s\n", gpt_state_error(step_states[0]));
            return 1;
        }
        for (int j = 0; j < k; j++) {
            int i = step_index[j];
            if (fed[i] < lengths[i]) continue;  // mid-prompt: no logits to look at yet
            const float *logits = gpt_state_logits(states[i]), *row = alone + ((size_t)i * steps + points[i]) * V;
            for (int v = 0; v < V; v++) {
                max_diff = fmaxf(max_diff, fabsf(logits[v] - row[v]));
                max_abs = fmaxf(max_abs, fabsf(row[v]));
            }
            points[i]++;
        }
    }
    printf("%g %g\n", max_diff, max_abs);
    for (int i = 0; i < n; i++) { gpt_state_free(states[i]); free(prompts[i]); }
    gpt_batch_free(b);
    free(states); free(step_states); free(fed); free(points); free(counts); free(step_index); free(tokens);
    free(alone); free(picks); free(lengths); free(prompts);
    gpt_close(m);
    return 0;
}
