/*
 * server.c: gpt-server, an OpenAI-compatible completions server over the C engine (gpt.h, bpe.h), on POSIX
 * sockets and threads, nothing else. This file is its command line and start; server.h lists the other files.
 *
 *     ./c/gpt-server model.bin                                   # http://127.0.0.1:8080 (a web page at /)
 *     ./c/gpt-server model.bin --port 9000 --threads 2 --alias demo
 *     curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \
 *          -d '{"model": "demo", "prompt": "The for statement", "max_tokens": 16, "temperature": 0}'
 *
 * Endpoints: POST /v1/completions (OpenAI's legacy completions: a prompt as text or token ids, several prompts,
 * n samples of each, echo, logprobs, stop strings, streaming), GET /v1/models, GET /health, POST /tokenize and
 * /detokenize (llama-server's shape), GET /metrics (Prometheus' text format), GET / (the page of --ui, read once
 * at start). With --api-key (or GPT_SERVER_API_KEY), all but /health and the page need Authorization: Bearer KEY.
 *
 * Threads: the main thread runs every connection in one poll() loop (loop.c): it reads requests within --timeout,
 * answers what needs no model, queues completions, and sends every answer from its connection's outbox. One
 * generation thread (scheduler.c) decodes every running choice in one batched step with all --threads (OpenMP) and
 * appends their text to the outboxes; it never waits on a client. A full queue is a 503; past --max_connections a
 * connection is answered 503 and closed. A client that stops reading pauses its own choices and is cut after
 * --timeout; a client that goes away stops its generations at the next step.
 * SIGTERM/SIGINT: stop accepting, answer the queued requests 503, cut the generations in flight at their next
 * token (finish_reason "length"), send their ends, exit 0.
 */
#define _GNU_SOURCE  // readlink, accept4
#include "flags.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAGE_BYTES (1 << 20)  // the web page file
#define RESERVED_FILES 64         // descriptors kept for the model file, the listener, the wake pipe, stdio

atomic_int stop_requested = 0;

long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#ifndef TESTING  // tests/c/server_test.c links the rest of the server without its command line
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

// The whole file (at most MAX_PAGE_BYTES), or NULL with one line in err.
static char *read_page(const char *path, size_t *len, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot read the web page %.160s: %s", path, strerror(errno));
        return NULL;
    }
    char *page = malloc(MAX_PAGE_BYTES + 1);
    size_t n = page ? fread(page, 1, MAX_PAGE_BYTES + 1, f) : 0;
    int failed = !page || ferror(f) || n > MAX_PAGE_BYTES;
    fclose(f);
    if (failed) {
        snprintf(err, err_size, "the web page %.160s is unreadable or larger than %d bytes", path, MAX_PAGE_BYTES);
        free(page);
        return NULL;
    }
    *len = n;
    return page;
}

// ui.html beside the executable (c/gpt-server -> c/ui.html): /proc/self/exe, else argv[0]'s folder.
static void default_page_path(const char *argv0, char *out, size_t size) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = '\0';
    else snprintf(exe, sizeof exe, "%s", argv0);
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(out, size, "%s/ui.html", slash ? exe : ".");
}

// The open-file limit raised to what the system allows (the hard limit): the connections it leaves room for.
static long raise_open_files(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return 1024;
    if (r.rlim_cur < r.rlim_max) {
        rlim_t want = r.rlim_max == RLIM_INFINITY ? 1 << 20 : r.rlim_max;
        struct rlimit raised = {want, r.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) r.rlim_cur = want;
    }
    return r.rlim_cur == RLIM_INFINITY ? 1 << 20 : (long)r.rlim_cur;
}

// A listening socket on host:port (numeric, or localhost); its port into *port (0 asks for any free one). -1 after
// one error line.
static int listen_on(const char *host, int *port) {
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    socklen_t addr_len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)*port);
        addr_len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)*port);
        addr_len = sizeof *v6;
    } else {
        fprintf(stderr, "error: --host needs a numeric IPv4 or IPv6 address (127.0.0.1, ::1), got %s\n", host);
        return -1;
    }
    int listener = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(listener, (struct sockaddr *)&addr, addr_len) != 0 || listen(listener, SOMAXCONN) != 0) {
        fprintf(stderr, "error: cannot listen on %s port %d: %s\n", host, *port, strerror(errno));
        if (listener >= 0) close(listener);
        return -1;
    }
    getsockname(listener, (struct sockaddr *)&addr, &addr_len);
    *port = ntohs(addr.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    return listener;
}

// 1 for an address only this machine reaches: 127.0.0.0/8, ::1, localhost.
static int loopback(const char *host) {
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 || strcmp(host, "localhost") == 0;
}

typedef struct {
    const char *model_path, *host, *alias, *page_path, *api_key;
    long port, threads, cap, queue, timeout_s, parallel, prefill_chunk, max_connections;
    int no_prompt_cache;
} Options;

// The command line into o: 0 to go on, -1 after --help (exit 0), 1 after one error line (exit 1).
static int parse_options(int argc, char **argv, Options *o) {
    const Flag flags[] = {
        {"--host", FLAG_TEXT, &o->host, 0, 0, "ADDR", "numeric address to listen on, or localhost (default 127.0.0.1: this machine only)"},
        {"--port", FLAG_INT, &o->port, 0, 65535, "N", "port (default 8080; 0: any free port, printed at start)"},
        {"--threads", FLAG_INT, &o->threads, 1, 1024, "N", "threads of the generation thread (default: the number of CPU cores)"},
        {"--parallel", FLAG_INT, &o->parallel, 1, 256, "N", "choices decoded together, one batched step for all (default 8)"},
        {"--prefill_chunk", FLAG_INT, &o->prefill_chunk, 1, 1 << 20, "N", "prompt tokens a step carries beside the decodes: a long prompt goes in over\n"
                                  "several steps while the other streams go on (default 512, or the\ncontext if shorter)"},
        {"--no_prompt_cache", FLAG_SWITCH, &o->no_prompt_cache, 0, 0, NULL, "prefill every prompt whole (default: a prompt's prefix that a slot holds from an\n"
                                  "earlier request is not prefilled again; a request opts out with cache_prompt: false)"},
        {"--max_tokens_cap", FLAG_INT, &o->cap, 1, 1000000, "N", "largest max_tokens a request may ask for; more is a 400 (default 1024)"},
        {"--alias", FLAG_TEXT, &o->alias, 0, 0, "NAME", "the model's name in /v1/models and answers (default: the file's name)"},
        {"--queue", FLAG_INT, &o->queue, 0, 100000, "N", "requests that may wait for a free generation slot; more get 503 (default 32)"},
        {"--timeout", FLAG_INT, &o->timeout_s, 1, 3600, "SECONDS", "time a client has to send its request, and a client that stops reading\n"
                                  "its answer before it is cut (default 10)"},
        {"--max_connections", FLAG_INT, &o->max_connections, 1, 1 << 20, "N", "client connections open at once; past it, 503 and close (default 4096,\n"
                                  "or what the open-file limit leaves room for)"},
        {"--api-key", FLAG_TEXT, &o->api_key, 0, 0, "KEY", "every endpoint but /health and the page needs Authorization: Bearer KEY\n"
                                  "(default: the GPT_SERVER_API_KEY environment variable; none: open)"},
        {"--ui", FLAG_TEXT, &o->page_path, 0, 0, "FILE", "the web page served at /, read once at start (default: ui.html beside the\n"
                                  "executable, c/ui.html; without it, / is a 404)"},
    };
    const char *head = "usage: gpt-server model.bin [options]\n"
                       "Serves a model written by export.py over HTTP, OpenAI-compatible: POST /v1/completions, GET /v1/models,\n"
                       "GET /health; POST /tokenize and /detokenize (llama-server's), GET /metrics (Prometheus), GET / (a web page).";
    int rc = flags_parse(flags, (int)(sizeof flags / sizeof *flags), argc, argv, &o->model_path, head);
    if (rc) return rc > 0 ? -1 : 1;
    const char *a = o->alias;
    if (a && (!*a || strlen(a) > 200 || utf8_invalid_at((const unsigned char *)a, strlen(a)) != strlen(a) || strchr(a, '/'))) {
        fprintf(stderr, "error: --alias needs a name (UTF-8, no '/', at most 200 bytes)\n");
        return 1;
    }
    if (o->api_key && !*o->api_key) {
        fprintf(stderr, "error: --api-key needs a key, not an empty string\n");
        return 1;
    }
    if (!o->model_path) {
        flags_usage(stderr, head, flags, (int)(sizeof flags / sizeof *flags));
        fprintf(stderr, "error: give the model file written by export.py\n");
        return 1;
    }
    return 0;
}

// The model, its tokenizer and the page; 0, or 1 after one error line.
static int open_model(Options *o, Server *s, char *argv0) {
    char err[256], default_page[4200];
    if (!o->page_path) default_page_path(argv0, default_page, sizeof default_page);
    char *page = read_page(o->page_path ? o->page_path : default_page, &s->page_len, err, sizeof err);
    if (!page && o->page_path) { fprintf(stderr, "error: %s (--ui)\n", err); return 1; }
    if (!page) fprintf(stderr, "gpt-server: no web page at /: %s (give it with --ui FILE)\n", err);
    s->page = page;
    GPTModel *model = gpt_open(o->model_path, err, sizeof err);
    if (!model) { fprintf(stderr, "error: %s\n", err); free(page); return 1; }
    BPE *bpe = bpe_open(model->tokenizer, model->tokenizer_size, err, sizeof err);
    if (!bpe) { fprintf(stderr, "error: %s\n", err); gpt_close(model); free(page); return 1; }
    s->model = model;
    s->bpe = bpe;
    int block = model->config.block_size;
    if (o->prefill_chunk == 0) o->prefill_chunk = block < 512 ? block : 512;  // media/prefill_chunk.md
    if (o->prefill_chunk > block) {
        fprintf(stderr, "error: --prefill_chunk %ld is more than the model's context, %d\n", o->prefill_chunk, block);
        bpe_close(bpe); gpt_close(model); free(page);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    Options o = {.host = "127.0.0.1", .port = 8080, .threads = sysconf(_SC_NPROCESSORS_ONLN), .cap = 1024, .queue = 32,
                 .timeout_s = 10, .parallel = 8, .max_connections = 4096, .api_key = getenv("GPT_SERVER_API_KEY")};
    if (o.threads < 1) o.threads = 1;
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc > 0;
    if (!o.alias) o.alias = strrchr(o.model_path, '/') ? strrchr(o.model_path, '/') + 1 : o.model_path;
    if (o.api_key && !*o.api_key) o.api_key = NULL;
    if (!o.api_key && !loopback(o.host))
        fprintf(stderr, "gpt-server: warning: %s is reachable from other machines, and no API key is set (--api-key KEY "
                "or GPT_SERVER_API_KEY)\n", o.host);
    Server s = {.alias = o.alias, .api_key = o.api_key, .max_tokens_cap = (int)o.cap, .queue_size = (int)o.queue,
                .timeout_ms = (int)o.timeout_s * 1000, .started = (long long)time(NULL), .parallel = (int)o.parallel,
                .prompt_cache = !o.no_prompt_cache};
    if (open_model(&o, &s, argv[0])) return 1;
    s.prefill_chunk = (int)o.prefill_chunk;
    gpt_set_threads((int)o.threads);
    long files = raise_open_files();
    s.max_connections = (int)(o.max_connections < files - RESERVED_FILES ? o.max_connections : files - RESERVED_FILES);
    if (s.max_connections < 1) s.max_connections = 1;
    int port = (int)o.port, listener = listen_on(o.host, &port), wake[2];
    if (listener < 0) return 1;
    if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) { fprintf(stderr, "error: cannot make a pipe: %s\n", strerror(errno)); return 1; }
    s.wake_fd = wake[1];

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;  // no SA_RESTART: poll() returns at once with EINTR
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);  // a client gone mid-answer is an error return, not a dead server
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    pthread_t generator;
    if (pthread_create(&generator, NULL, generation_thread, &s) != 0) {
        fprintf(stderr, "error: cannot start the generation thread\n");
        return 1;
    }
    const GPTConfig *cfg = &s.model->config;
    fprintf(stderr, "gpt-server: %s (%d layers, %d wide, context %d, %s) as \"%s\", %ld threads, %d parallel, prefill "
            "chunk %d, prompt cache %s, queue %d, max_tokens_cap %d, max connections %d (open-file limit %ld), timeout %ld "
            "s, %s; "
            "kernels %s\n", o.model_path, cfg->n_layer, cfg->n_embd, cfg->block_size,
            gpt_dtype_name(cfg->dtype), s.alias, o.threads, s.parallel, s.prefill_chunk, s.prompt_cache ? "on" : "off", s.queue_size,
            s.max_tokens_cap, s.max_connections, files, o.timeout_s, s.api_key ? "API key needed" : "no API key",
            matmul_kernel_name());
    fprintf(stderr, "gpt-server: listening on http://%s%s%s:%d\n", strchr(o.host, ':') ? "[" : "",
            strcmp(o.host, "localhost") ? o.host : "127.0.0.1", strchr(o.host, ':') ? "]" : "", port);

    serve_connections(&s, listener, wake[0], generator);  // until SIGTERM, then joins the generation thread
    close(wake[0]);
    close(wake[1]);
    bpe_close((BPE *)s.bpe);
    gpt_close((GPTModel *)s.model);
    free((char *)s.page);
    fprintf(stderr, "gpt-server: stopped\n");
    return 0;
}
#endif
