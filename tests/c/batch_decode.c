// tests/test_batch_decode.py's driver: every generation decoded alone (gpt_prefill, then gpt_decode) and then all
// of them together (the same prefills, then gpt_decode_batch), fed the same tokens: the alone run's greedy picks.
// Prints the largest |logit difference| and the largest |logit|, over every step of every generation.
//     batch_decode MODEL.bin STEPS LEN_1 LEN_2 ... LEN_B   (prompt lengths; prompt i is tokens (7 j + 3 i) % 1000)
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

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: batch_decode MODEL.bin STEPS LEN...\n"); return 2; }
    char err[256];
    GPTModel *m = gpt_open(argv[1], err, sizeof err);
    if (!m) { fprintf(stderr, "error: %s\n", err); return 1; }
    int steps = atoi(argv[2]), n = argc - 3, V = m->config.padded_vocab_size, vocab = m->config.vocab_size;
    float *alone = malloc((size_t)n * steps * V * sizeof(float));
    int *picks = malloc((size_t)n * steps * sizeof(int));
    GPTState **states = malloc(n * sizeof *states);
    int *tokens = malloc(n * sizeof(int));
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            int len = atoi(argv[3 + i]);
            int *prompt = malloc(len * sizeof(int));
            for (int j = 0; j < len; j++) prompt[j] = (7 * j + 3 * i) % (vocab < 1000 ? vocab : 1000);
            if (len > 5 && vocab > 50256) prompt[len / 2] = m->config.eot_token;  // a document boundary
            states[i] = gpt_state_new(m, err, sizeof err);
            if (!states[i] || !gpt_prefill(m, states[i], prompt, len, NULL)) { fprintf(stderr, "error: prefill\n"); return 1; }
            free(prompt);
        }
        GPTBatch *b = pass ? gpt_batch_new(m, n, err, sizeof err) : NULL;
        if (pass && !b) { fprintf(stderr, "error: %s\n", err); return 1; }
        float max_diff = 0.0f, max_abs = 0.0f;
        for (int step = 0; step < steps; step++) {
            for (int i = 0; i < n; i++) {
                const float *logits = gpt_state_logits(states[i]);
                float *row = alone + ((size_t)i * steps + step) * V;
                if (pass == 0) {
                    memcpy(row, logits, V * sizeof(float));
                    picks[i * steps + step] = argmax(logits, vocab);
                } else {
                    for (int v = 0; v < V; v++) {
                        max_diff = fmaxf(max_diff, fabsf(logits[v] - row[v]));
                        max_abs = fmaxf(max_abs, fabsf(row[v]));
                    }
                }
                tokens[i] = picks[i * steps + step];
            }
            if (pass == 0) {
                for (int i = 0; i < n; i++)
                    if (!gpt_decode(m, states[i], tokens[i])) { fprintf(stderr, "error: decode\n"); return 1; }
            } else if (gpt_decode_batch(m, b, states, tokens, n) != 0) {
                fprintf(stderr, "error: %s\n", gpt_state_error(states[0]));
                return 1;
            }
        }
        if (pass) printf("%g %g\n", max_diff, max_abs);
        for (int i = 0; i < n; i++) gpt_state_free(states[i]);
        gpt_batch_free(b);
    }
    free(alone); free(picks); free(states); free(tokens);
    gpt_close(m);
    return 0;
}
