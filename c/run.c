/*
 * run.c: the command line of the C engine: generate text from a model file written by export.py.
 *
 *     ./c/gpt model.bin -p "The meaning of life is" -n 64 -t 0.8 -k 50
 *     ./c/gpt model.bin -p "Once upon a time" -t 0 --threads 2          # greedy
 *     ./c/gpt model.bin --bench --prompt_len 512 -n 256 --threads 2    # prefill/decode speed, TTFT, memory
 *     ./c/gpt model.bin --bench --profile --prompt_len 512 -n 64       # and where the time went
 *     ./c/gpt --peak --threads 2                                       # this machine's fp32 and int8 peak
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bpe.h"
#include "flags.h"
#include "gpt.h"

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {  // all threads: on a shared machine this varies less than the wall clock
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Peak resident memory in MB. Linux: VmHWM, this program's own high-water mark; getrusage's ru_maxrss would also
// count the parent's memory at the fork before exec (a Python benchmark that built a model reports that instead).
static double peak_memory_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    if (kb >= 0) return kb / 1024.0;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss / 1024.0;
}

static int hex_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// --encode: one hex line in, "id id id\thex-of-decode" out, for tests/test_c_engine.py
static int encode_lines(const BPE *bpe) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got % 2) die("--encode: a line of hex has an odd length%s", "");
        size_t n = (size_t)got / 2;
        char *bytes = malloc(n + 1);
        int *tokens = malloc((n + 1) * sizeof(int));
        if (!bytes || !tokens) die("out of memory%s", "");
        for (size_t i = 0; i < n; i++) {
            int hi = hex_value(line[2 * i]), lo = hex_value(line[2 * i + 1]);
            if (hi < 0 || lo < 0) die("--encode: not a hex digit in '%s'", line);
            bytes[i] = (char)(hi * 16 + lo);
        }
        int count = bpe_encode(bpe, bytes, n, tokens, (int)(n + 1));
        if (count < 0) die("--encode: out of memory%s", "");
        for (int i = 0; i < count; i++) printf(i ? " %d" : "%d", tokens[i]);
        putchar('\t');
        for (int i = 0; i < count; i++) {
            size_t len;
            const unsigned char *p = bpe_decode(bpe, tokens[i], &len);
            for (size_t j = 0; p && j < len; j++) printf("%02x", p[j]);
        }
        putchar('\n');
        free(bytes);
        free(tokens);
    }
    free(line);
    return 0;
}

static int *parse_ids(const char *s, int *count) {
    int cap = 16, n = 0;
    int *ids = malloc(cap * sizeof(int));
    const char *p = s;
    while (ids) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == '\0') break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT_MAX) die("--tokens needs non-negative integer ids, got '%s'", s);
        if (n == cap) ids = realloc(ids, (cap *= 2) * sizeof(int));
        if (ids) ids[n++] = (int)v;
        p = end;
    }
    if (ids == NULL) die("out of memory%s", "");
    *count = n;
    return ids;
}

typedef struct {
    const char *model_path, *prompt, *token_ids, *dump_path;
    long steps, top_k, threads, prompt_len, seed;
    float temperature, top_p;
    int bench, no_stop, print_ids, encode, profile, peak;
} Options;

// The command line into o: 0, or the exit code (after --help, or one error line).
static int parse_options(int argc, char **argv, Options *o) {
    const Flag flags[] = {
        {"-p", FLAG_TEXT, &o->prompt, 0, 0, "TEXT", "the prompt (default: start from <|endoftext|>)"},
        {"-n", FLAG_INT, &o->steps, 0, 100000000, "N", "tokens to generate (default 256)"},
        {"-t", FLAG_FLOAT, &o->temperature, 0, 100, "T", "temperature; 0 is greedy (default 1.0)"},
        {"-k", FLAG_INT, &o->top_k, 0, INT_MAX, "K", "sample among the K most likely tokens; 0 is all (default 0)"},
        {"--top_p", FLAG_FLOAT, &o->top_p, 1e-6, 1, "P", "sample among the most likely tokens whose probability reaches P (default 1.0: all)"},
        {"-s", FLAG_INT, &o->seed, 0, (double)LONG_MAX, "SEED", "random seed, for reproducible samples (default: the time)"},
        {"--threads", FLAG_INT, &o->threads, 1, 1024, "N", "OpenMP threads (default: OMP_NUM_THREADS or all cores)"},
        {"--no_stop", FLAG_SWITCH, &o->no_stop, 0, 0, NULL, "keep going after <|endoftext|>"},
        {"--bench", FLAG_SWITCH, &o->bench, 0, 0, NULL, "print prefill tokens/s, decode tokens/s, time to first token and peak memory"},
        {"--prompt_len", FLAG_INT, &o->prompt_len, 1, 1 << 20, "N", "with --bench and no -p: a prompt of N random tokens"},
        {"--profile", FLAG_SWITCH, &o->profile, 0, 0, NULL, "with --bench: the prefill's and the decode's time by part (matmuls, attention, head)"},
        {"--peak", FLAG_SWITCH, &o->peak, 0, 0, NULL, "print this machine's fp32 and int8 peak for this build's kernels (no model needed)"},
        {"--tokens", FLAG_TEXT, &o->token_ids, 0, 0, "IDS", "the prompt as token ids, \"1 2 3\" (instead of -p)"},
        {"--print_ids", FLAG_SWITCH, &o->print_ids, 0, 0, NULL, "print the generated token ids instead of text"},
        {"--dump_logits", FLAG_TEXT, &o->dump_path, 0, 0, "F", "write the float32 logits of every prompt token, then of every generated token, to F"},
        {"--encode", FLAG_SWITCH, &o->encode, 0, 0, NULL, "tokenizer check: each stdin line is hex bytes; print their token ids, a tab, and the\nhex of the decoded ids"},
    };
    int rc = flags_parse(flags, (int)(sizeof flags / sizeof *flags), argc, argv, &o->model_path, "usage: gpt MODEL.bin [options]");
    return rc < 0 ? 1 : rc ? -1 : 0;  // -1: --help printed, exit 0
}

// The prompt's token ids: -p's text, --tokens' ids, --bench's random ones, or <|endoftext|> alone.
static int *make_prompt(const Options *o, const BPE *bpe, const GPTConfig *c, int *n_prompt) {
    int *tokens;
    *n_prompt = 0;
    if (o->token_ids) return parse_ids(o->token_ids, n_prompt);
    if (o->prompt && o->prompt[0]) {
        size_t len = strlen(o->prompt);
        tokens = malloc((len + 1) * sizeof(int));
        if (tokens == NULL) die("out of memory%s", "");
        *n_prompt = bpe_encode(bpe, o->prompt, len, tokens, (int)len + 1);
        if (*n_prompt < 0) die("out of memory while encoding the prompt%s", "");
    } else if (o->bench && o->prompt_len) {
        tokens = malloc(o->prompt_len * sizeof(int));
        if (tokens == NULL) die("out of memory%s", "");
        uint64_t r = 42;
        for (long i = 0; i < o->prompt_len; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            tokens[(*n_prompt)++] = (int)((r >> 33) % (uint64_t)c->vocab_size);
        }
    } else {
        tokens = malloc(sizeof(int));  // no prompt: start from <|endoftext|>, as GPT-2 does
        if (tokens == NULL) die("out of memory%s", "");
        tokens[(*n_prompt)++] = c->eot_token < c->padded_vocab_size ? c->eot_token : 0;
    }
    return tokens;
}

// --profile: the prefill's and the decode's time by part; end holds both, the decode's is what came after prefill.
static void print_profile(GPTProfile prefill, GPTProfile end) {
    const GPTProfile *parts[2] = {&prefill, &end};
    for (int i = 0; i < 2; i++) {
        GPTProfile p = *parts[i];
        if (i == 1) {
            p.matmul -= prefill.matmul; p.attention -= prefill.attention;
            p.head -= prefill.head; p.total -= prefill.total;
        }
        double other = p.total - p.matmul - p.attention - p.head, total = p.total > 0 ? p.total : 1.0;
        printf("profile %s: matmuls %.3f ms (%.0f%%) | attention %.3f ms (%.0f%%) | head %.3f ms (%.0f%%) | "
               "other %.3f ms (%.0f%%)\n", i ? "decode" : "prefill", p.matmul * 1e3, 100 * p.matmul / total,
               p.attention * 1e3, 100 * p.attention / total, p.head * 1e3, 100 * p.head / total, other * 1e3,
               100 * other / total);
    }
}

int main(int argc, char **argv) {
    Options o = {.steps = 256, .temperature = 1.0f, .top_p = 1.0f, .seed = (long)time(NULL)};
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc > 0;
    if (o.threads) gpt_set_threads((int)o.threads);
    if (o.peak) {
        double fp32, int8;
        matmul_peak(&fp32, &int8);
        printf("peak fp32 %.1f GFLOP/s | int8 %.1f GOP/s | kernels %s\n", fp32 / 1e9, int8 / 1e9, matmul_kernel_name());
        return 0;
    }
    if (o.profile && !o.bench) die("--profile goes with --bench%s", "");
    if (o.model_path == NULL) die("give a model file written by export.py: gpt MODEL.bin -p \"...\" (see --help)%s", "");
    if (o.prompt && o.token_ids) die("give -p or --tokens, not both%s", "");

    char err[512];
    double t_open = now();
    GPTModel *model = gpt_open(o.model_path, err, sizeof err);
    if (model == NULL) die("%s", err);
    t_open = now() - t_open;
    BPE *bpe = bpe_open(model->tokenizer, model->tokenizer_size, err, sizeof err);
    if (bpe == NULL) die("%s", err);
    if (o.encode) return encode_lines(bpe);
    const GPTConfig *c = &model->config;
    int n_prompt;
    int *prompt_tokens = make_prompt(&o, bpe, c, &n_prompt);
    if (n_prompt == 0) die("--tokens gave no token ids%s", "");
    if (o.dump_path && n_prompt > c->block_size) die("--dump_logits needs a prompt within block_size%s", "");

    GPTState *state = gpt_state_new(model, err, sizeof err);
    if (state == NULL) die("%s", err);
    GPTSampler sampler;
    if (gpt_sampler_init(&sampler, c->vocab_size, o.temperature, (int)o.top_k, o.top_p, (uint64_t)o.seed) != 0)
        die("out of memory%s", "");
    FILE *dump = NULL;
    float *all_logits = NULL;
    size_t V = (size_t)c->padded_vocab_size;
    if (o.dump_path) {
        dump = fopen(o.dump_path, "wb");
        if (dump == NULL) die("cannot write %s", o.dump_path);
        all_logits = malloc((size_t)n_prompt * V * sizeof(float));
        if (all_logits == NULL) die("out of memory%s", "");
    }
    if (!o.bench && !o.print_ids && !o.token_ids) {  // echo the prompt, then stream the continuation
        fputs(o.prompt ? o.prompt : "", stdout);
        fflush(stdout);
    }

    double t0 = now(), cpu0 = cpu_seconds();
    const float *logits = gpt_prefill(model, state, prompt_tokens, n_prompt, all_logits);
    if (logits == NULL) die("%s", gpt_state_error(state));
    if (dump && fwrite(all_logits, sizeof(float), (size_t)n_prompt * V, dump) != (size_t)n_prompt * V)
        die("cannot write %s", o.dump_path);
    double t_prefill = now() - t0, cpu_prefill = cpu_seconds() - cpu0, t_first = 0, t_decode_start = 0, cpu_decode_start = 0;
    GPTProfile prefill_profile = gpt_state_profile(state);
    int generated = 0;
    for (long step = 0; step < o.steps; step++) {
        int token = gpt_sample(&sampler, logits);
        if (step == 0) {
            t_first = now() - t0;
            t_decode_start = now();
            cpu_decode_start = cpu_seconds();
        }
        if (token == c->eot_token && !o.no_stop && !o.bench) break;
        generated++;
        if (o.print_ids) {
            printf(step ? " %d" : "%d", token);
        } else if (!o.bench) {
            size_t len;
            const unsigned char *bytes = bpe_decode(bpe, token, &len);
            if (bytes) fwrite(bytes, 1, len, stdout);
            fflush(stdout);
        }
        if (step + 1 == o.steps) break;  // the last token needs no forward pass
        logits = gpt_decode(model, state, token);
        if (logits == NULL) die("%s", gpt_state_error(state));
        if (dump && fwrite(logits, sizeof(float), V, dump) != V) die("cannot write %s", o.dump_path);
    }
    double t_decode = now() - t_decode_start, cpu_decode = cpu_seconds() - cpu_decode_start;
    if (!o.bench) printf("\n");
    if (dump && fclose(dump) != 0) die("cannot write %s", o.dump_path);
    if (o.bench) {
        printf("kernels %s | open %.3f s, of which the repacked weights: %.1f MB\n", matmul_kernel_name(), t_open,
               model->packed_bytes / 1e6);
        int decoded = generated > 1 ? generated - 1 : 0;  // forward passes after the prefill
        printf("prefill %d tokens %.6f s %.1f tok/s (cpu %.3f s) | time to first token %.3f ms | "
               "decode %d tokens %.6f s %.1f tok/s (cpu %.3f s) | peak memory %.1f MB\n",
               n_prompt, t_prefill, n_prompt / t_prefill, cpu_prefill, t_first * 1e3, decoded, t_decode,
               decoded ? decoded / t_decode : 0.0, cpu_decode, peak_memory_mb());
    }
    if (o.profile) print_profile(prefill_profile, gpt_state_profile(state));
    free(all_logits);
    free(prompt_tokens);
    gpt_sampler_free(&sampler);
    gpt_state_free(state);
    bpe_close(bpe);
    gpt_close(model);
    return 0;
}
