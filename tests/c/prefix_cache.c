// tests/test_batch_decode.py's driver for the prompt cache (gpt_state_truncate, gpt_state_copy_prefix): a prompt's
// logits, and those of the tokens decoded after it, from a fresh state against those from a state that reused the
// KV rows of a shared prefix, for every split point k:
//   truncate: a state that ran another prompt with the same first k tokens (then different ones, or more) is cut to
//             k and fed the rest;
//   copy:     a fresh state takes a finished state's first k rows (gpt_state_copy_prefix) and is fed the rest.
// The rest goes in by chunks of CHUNK through gpt_step, as the server feeds it. Prints the largest |difference| (0:
// bit for bit) over every split point, prompt end and decode step, then the number of comparisons.
//     prefix_cache MODEL.bin LEN STEPS CHUNK     (the prompt: tokens (7 j + 1) % 997, a <|endoftext|> in its middle)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../c/gpt.h"

static void *checked(void *p) {
    if (p == NULL) { fprintf(stderr, "error: out of memory\n"); exit(1); }
    return p;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[best]) best = i;
    return best;
}

// tokens[from..n) into s by chunks through gpt_step; the logits of the last one
static const float *feed(const GPTModel *m, GPTBatch *b, GPTState *s, const int *tokens, int from, int n, int chunk) {
    for (int at = from; at < n; at += chunk) {
        int count = n - at < chunk ? n - at : chunk;
        if (gpt_step(m, b, &s, tokens + at, &count, 1) != 0) { fprintf(stderr, "error: %s\n", gpt_state_error(s)); exit(1); }
    }
    return gpt_state_logits(s);
}

// the prompt's last logits and `steps` greedy decodes' into out ((steps + 1) x V), from the state as it stands
static void run(const GPTModel *m, GPTBatch *b, GPTState *s, const int *prompt, int from, int len, int steps, int chunk,
                float *out) {
    int V = m->config.padded_vocab_size;
    const float *logits = feed(m, b, s, prompt, from, len, chunk);
    for (int t = 0; t <= steps; t++) {
        memcpy(out + (size_t)t * V, logits, V * sizeof(float));
        if (t == steps) break;
        int token = argmax(logits, m->config.vocab_size);
        int one = 1;
        if (gpt_step(m, b, &s, &token, &one, 1) != 0) { fprintf(stderr, "error: %s\n", gpt_state_error(s)); exit(1); }
        logits = gpt_state_logits(s);
    }
}

static double worst(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: prefix_cache MODEL.bin LEN STEPS CHUNK\n"); return 2; }
    char err[256];
    GPTModel *m = gpt_open(argv[1], err, sizeof err);
    if (!m) { fprintf(stderr, "error: %s\n", err); return 1; }
    int len = atoi(argv[2]), steps = atoi(argv[3]), chunk = atoi(argv[4]);
    int V = m->config.padded_vocab_size, vocab = m->config.vocab_size;
    GPTBatch *b = gpt_batch_new(m, 1, err, sizeof err);
    GPTState *fresh = gpt_state_new(m, err, sizeof err), *used = gpt_state_new(m, err, sizeof err);
    GPTState *copy = gpt_state_new(m, err, sizeof err), *source = gpt_state_new(m, err, sizeof err);
    if (!b || !fresh || !used || !copy || !source) { fprintf(stderr, "error: %s\n", err); return 1; }
    int *prompt = checked(malloc((len + 1) * sizeof(int))), *other = checked(malloc((len + 1) * sizeof(int)));
    for (int j = 0; j < len; j++) prompt[j] = (7 * j + 1) % (vocab < 997 ? vocab : 997);
    if (len > 5 && vocab > 50256) prompt[len / 2] = m->config.eot_token;  // a document boundary
    size_t n = (size_t)(steps + 1) * V;
    float *want = checked(malloc(n * sizeof(float))), *got = checked(malloc(n * sizeof(float)));
    run(m, b, fresh, prompt, 0, len, steps, len, want);  // the reference: the whole prompt at once
    feed(m, b, source, prompt, 0, len, len);              // a finished prompt, whose rows are copied
    double diff = 0;
    int compared = 0;
    for (int k = 0; k < len; k++) {
        // another prompt: the same first k tokens, then others (and one token longer)
        memcpy(other, prompt, k * sizeof(int));
        for (int j = k; j <= len; j++) other[j] = (prompt[j < len ? j : 0] + 11) % (vocab < 997 ? vocab : 997);
        gpt_state_reset(used);
        feed(m, b, used, other, 0, len + 1, chunk);
        int held;
        const int *tokens = gpt_state_tokens(used, &held);
        if (!tokens || held != len + 1 || memcmp(tokens, other, (len + 1) * sizeof(int)) != 0 || gpt_state_truncate(used, k) != 0) {
            fprintf(stderr, "error: the state does not hold its tokens, or cannot be cut to %d\n", k);
            return 1;
        }
        run(m, b, used, prompt, k, len, steps, chunk, got);
        diff = fmax(diff, worst(want, got, n));
        // a copy of a state's first k rows
        gpt_state_reset(copy);
        if (gpt_state_copy_prefix(m, copy, source, k) != 0) { fprintf(stderr, "error: cannot copy %d rows\n", k); return 1; }
        run(m, b, copy, prompt, k, len, steps, chunk, got);
        diff = fmax(diff, worst(want, got, n));
        compared += 2;
    }
    int held;
    if (gpt_state_length(fresh) > m->config.block_size &&
        (gpt_state_tokens(fresh, &held) != NULL || gpt_state_truncate(fresh, 1) != -1)) {
        fprintf(stderr, "error: a state past block_size offered its rows\n");
        return 1;
    }
    printf("%g %d\n", diff, compared);
    free(prompt); free(other); free(want); free(got);
    gpt_state_free(fresh); gpt_state_free(used); gpt_state_free(copy); gpt_state_free(source);
    gpt_batch_free(b);
    gpt_close(m);
    return 0;
}
