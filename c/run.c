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
#include "gpt.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: gpt MODEL.bin [options]\n"
        "  -p TEXT          the prompt (default: start from <|endoftext|>)\n"
        "  -n N             tokens to generate (default 256)\n"
        "  -t T             temperature; 0 is greedy (default 1.0)\n"
        "  -k K             sample among the K most likely tokens; 0 is all (default 0)\n"
        "  --top_p P        sample among the most likely tokens whose probability reaches P (default 1.0: all)\n"
        "  -s SEED          random seed, for reproducible samples (default: the time)\n"
        "  --threads N      OpenMP threads (default: OMP_NUM_THREADS or all cores)\n"
        "  --no_stop        keep going after <|endoftext|>\n"
        "  --bench          print prefill tokens/s, decode tokens/s, time to first token and peak memory\n"
        "  --prompt_len N   with --bench and no -p: a prompt of N random tokens\n"
        "  --profile        with --bench: the prefill's and the decode's time by part (matmuls, attention, head)\n"
        "  --peak           print this machine's fp32 and int8 peak for this build's kernels (no model needed)\n"
        "  --tokens IDS     the prompt as token ids, \"1 2 3\" (instead of -p)\n"
        "  --print_ids      print the generated token ids instead of text\n"
        "  --dump_logits F  write the float32 logits of every prompt token, then of every generated token, to F\n"
        "  --encode         tokenizer check: each stdin line is hex bytes; print their token ids, a tab, and the\n"
        "                   hex of the decoded ids\n");
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

static long parse_int(const char *flag, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "error: %s needs an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        exit(1);
    }
    return v;
}

static float parse_float(const char *flag, const char *s, float lo, float hi) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "error: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        exit(1);
    }
    return v;
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

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *token_ids = NULL, *dump_path = NULL;
    long steps = 256, top_k = 0, threads = 0, prompt_len = 0;
    float temperature = 1.0f, top_p = 1.0f;
    uint64_t seed = (uint64_t)time(NULL);
    int bench = 0, no_stop = 0, print_ids = 0, encode = 0, profile = 0, peak = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--bench")) { bench = 1; continue; }
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--peak")) { peak = 1; continue; }
        if (!strcmp(a, "--no_stop")) { no_stop = 1; continue; }
        if (!strcmp(a, "--print_ids")) { print_ids = 1; continue; }
        if (!strcmp(a, "--encode")) { encode = 1; continue; }
        if (a[0] != '-') {
            if (model_path) die("one model file only; '%s' is a second one (quote the prompt: -p \"...\")", a);
            model_path = a;
            continue;
        }
        if (i + 1 >= argc) die("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-n")) steps = parse_int(a, v, 0, 100000000);
        else if (!strcmp(a, "-t")) temperature = parse_float(a, v, 0.0f, 100.0f);
        else if (!strcmp(a, "-k")) top_k = parse_int(a, v, 0, INT_MAX);
        else if (!strcmp(a, "--top_p")) top_p = parse_float(a, v, 1e-6f, 1.0f);
        else if (!strcmp(a, "-s")) seed = (uint64_t)parse_int(a, v, 0, LONG_MAX);
        else if (!strcmp(a, "--threads")) threads = parse_int(a, v, 1, 1024);
        else if (!strcmp(a, "--prompt_len")) prompt_len = parse_int(a, v, 1, 1 << 20);
        else if (!strcmp(a, "--tokens")) token_ids = v;
        else if (!strcmp(a, "--dump_logits")) dump_path = v;
        else die("unknown option %s (see --help)", a);
    }
    if (threads) gpt_set_threads((int)threads);
    if (peak) {
        double fp32, int8;
        matmul_peak(&fp32, &int8);
        printf("peak fp32 %.1f GFLOP/s | int8 %.1f GOP/s | kernels %s\n", fp32 / 1e9, int8 / 1e9, matmul_kernel_name());
        return 0;
    }
    if (profile && !bench) die("--profile goes with --bench%s", "");
    if (model_path == NULL) die("give a model file written by export.py: gpt MODEL.bin -p \"...\" (see --help)%s", "");
    if (prompt && token_ids) die("give -p or --tokens, not both%s", "");

    char err[512];
    double t_open = now();
    GPTModel *model = gpt_open(model_path, err, sizeof err);
    if (model == NULL) die("%s", err);
    t_open = now() - t_open;
    BPE *bpe = bpe_open(model->tokenizer, model->tokenizer_size, err, sizeof err);
    if (bpe == NULL) die("%s", err);
    if (encode) return encode_lines(bpe);
    const GPTConfig *c = &model->config;

    int n_prompt = 0;
    int *prompt_tokens;
    if (token_ids) {
        prompt_tokens = parse_ids(token_ids, &n_prompt);
    } else if (prompt && prompt[0]) {
        size_t len = strlen(prompt);
        prompt_tokens = malloc((len + 1) * sizeof(int));
        if (prompt_tokens == NULL) die("out of memory%s", "");
        n_prompt = bpe_encode(bpe, prompt, len, prompt_tokens, (int)len + 1);
        if (n_prompt < 0) die("out of memory while encoding the prompt%s", "");
    } else if (bench && prompt_len) {
        prompt_tokens = malloc(prompt_len * sizeof(int));
        if (prompt_tokens == NULL) die("out of memory%s", "");
        uint64_t r = 42;
        for (long i = 0; i < prompt_len; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            prompt_tokens[n_prompt++] = (int)((r >> 33) % (uint64_t)c->vocab_size);
        }
    } else {
        prompt_tokens = malloc(sizeof(int));  // no prompt: start from <|endoftext|>, as GPT-2 does
        if (prompt_tokens == NULL) die("out of memory%s", "");
        prompt_tokens[n_prompt++] = c->eot_token < c->padded_vocab_size ? c->eot_token : 0;
    }
    if (n_prompt == 0) die("--tokens gave no token ids%s", "");
    if (dump_path && n_prompt > c->block_size) die("--dump_logits needs a prompt within block_size%s", "");

    GPTState *state = gpt_state_new(model, err, sizeof err);
    if (state == NULL) die("%s", err);
    GPTSampler sampler;
    if (gpt_sampler_init(&sampler, c->vocab_size, temperature, (int)top_k, top_p, seed) != 0) die("out of memory%s", "");
    FILE *dump = NULL;
    float *all_logits = NULL;
    if (dump_path) {
        dump = fopen(dump_path, "wb");
        if (dump == NULL) die("cannot write %s", dump_path);
        all_logits = malloc((size_t)n_prompt * c->padded_vocab_size * sizeof(float));
        if (all_logits == NULL) die("out of memory%s", "");
    }
    if (!bench && !print_ids && !token_ids) {  // echo the prompt, then stream the continuation
        fputs(prompt ? prompt : "", stdout);
        fflush(stdout);
    }

    double t0 = now(), cpu0 = cpu_seconds();
    const float *logits = gpt_prefill(model, state, prompt_tokens, n_prompt, all_logits);
    if (logits == NULL) die("%s", gpt_state_error(state));
    if (dump && fwrite(all_logits, sizeof(float), (size_t)n_prompt * c->padded_vocab_size, dump) != (size_t)n_prompt * c->padded_vocab_size)
        die("cannot write %s", dump_path);
    double t_prefill = now() - t0, cpu_prefill = cpu_seconds() - cpu0, t_first = 0, t_decode_start = 0, cpu_decode_start = 0;
    GPTProfile prefill_profile = gpt_state_profile(state);
    int generated = 0;
    for (long step = 0; step < steps; step++) {
        int token = gpt_sample(&sampler, logits);
        if (step == 0) {
            t_first = now() - t0;
            t_decode_start = now();
            cpu_decode_start = cpu_seconds();
        }
        if (token == c->eot_token && !no_stop && !bench) break;
        generated++;
        if (print_ids) {
            printf(step ? " %d" : "%d", token);
        } else if (!bench) {
            size_t len;
            const unsigned char *bytes = bpe_decode(bpe, token, &len);
            if (bytes) fwrite(bytes, 1, len, stdout);
            fflush(stdout);
        }
        if (step + 1 == steps) break;  // the last token needs no forward pass
        logits = gpt_decode(model, state, token);
        if (logits == NULL) die("%s", gpt_state_error(state));
        if (dump && fwrite(logits, sizeof(float), c->padded_vocab_size, dump) != (size_t)c->padded_vocab_size)
            die("cannot write %s", dump_path);
    }
    double t_decode = now() - t_decode_start, cpu_decode = cpu_seconds() - cpu_decode_start;
    if (!bench) printf("\n");
    if (dump && fclose(dump) != 0) die("cannot write %s", dump_path);
    if (bench) {
        printf("kernels %s | open %.3f s, of which the repacked weights: %.1f MB\n", matmul_kernel_name(), t_open,
               model->packed_bytes / 1e6);
        int decoded = generated > 1 ? generated - 1 : 0;  // forward passes after the prefill
        printf("prefill %d tokens %.6f s %.1f tok/s (cpu %.3f s) | time to first token %.3f ms | "
               "decode %d tokens %.6f s %.1f tok/s (cpu %.3f s) | peak memory %.1f MB\n",
               n_prompt, t_prefill, n_prompt / t_prefill, cpu_prefill, t_first * 1e3, decoded, t_decode,
               decoded ? decoded / t_decode : 0.0, cpu_decode, peak_memory_mb());
    }
    if (profile) {
        GPTProfile end = gpt_state_profile(state);
        const GPTProfile *parts[2] = {&prefill_profile, &end};
        for (int i = 0; i < 2; i++) {
            GPTProfile p = *parts[i];
            if (i == 1) {  // the decode's part: what was added after the prefill
                p.matmul -= prefill_profile.matmul; p.attention -= prefill_profile.attention;
                p.head -= prefill_profile.head; p.total -= prefill_profile.total;
            }
            double other = p.total - p.matmul - p.attention - p.head, total = p.total > 0 ? p.total : 1.0;
            printf("profile %s: matmuls %.3f ms (%.0f%%) | attention %.3f ms (%.0f%%) | head %.3f ms (%.0f%%) | "
                   "other %.3f ms (%.0f%%)\n", i ? "decode" : "prefill", p.matmul * 1e3, 100 * p.matmul / total,
                   p.attention * 1e3, 100 * p.attention / total, p.head * 1e3, 100 * p.head / total, other * 1e3,
                   100 * other / total);
        }
    }
    free(all_logits);
    free(prompt_tokens);
    gpt_sampler_free(&sampler);
    gpt_state_free(state);
    bpe_close(bpe);
    gpt_close(model);
    return 0;
}
