// tests/test_c_server_units.py's driver: the pure parts of gpt-server, called directly, no sockets (as llama2.c's
// test.c calls run.c's functions, built with -DTESTING so that server.c has no main):
//   HTTP heads (http.c), the API key check (loop.c), a completion's JSON (request.c), the stop-string and UTF-8
//   hold-back and text_offset (response.c), and the flag table (flags.c).
//     server_test MODEL.bin     prints one line per failed check, then "N passed, N failed"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../c/flags.h"
#include "../../c/server.h"

static int passed, failed;

#define CHECK(cond) check((cond), #cond, __LINE__)
static void check(int ok, const char *what, int line) {
    if (ok) passed++;
    else { failed++; printf("FAILED line %d: %s\n", line, what); }
}

// ---------------------------------------------------------------------------------------------------
// http.c

static int head(const char *text, HttpRequest *req) {  // the status of parsing text as a whole head
    char msg[256];
    size_t n = strlen(text), end = http_head_end(text, n, 0);
    if (!end) return -1;
    return http_parse_head(text, end, 1 << 20, req, msg, sizeof msg);
}

static void test_http(void) {
    HttpRequest req;
    const char *good = "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nAuthorization: Bearer k\r\n\r\nbody";
    size_t end = http_head_end(good, strlen(good), 0);
    CHECK(end == strlen(good) - 4);
    size_t found = 0;  // fed a byte at a time, the end is found at the same byte, scanning from where it stopped
    for (size_t n = 1; n <= strlen(good) && !found; n++) found = http_head_end(good, n, n - 1);
    CHECK(found == end);
    CHECK(head(good, &req) == 0 && strcmp(req.method, "POST") == 0 && strcmp(req.path, "/v1/completions") == 0);
    CHECK(req.content_length == 12 && strcmp(req.authorization, "Bearer k") == 0 && !req.expect_continue);
    CHECK(http_head_end("GET / HTTP/1.1\n\n", 16, 0) == 16);  // bare LFs
    CHECK(http_head_end("GET / HTTP/1.1\r\nA: b\r\n", 22, 0) == 0);
    CHECK(head("GET /health HTTP/1.0\r\n\r\n", &req) == 0 && req.content_length == 0);
    CHECK(head("POST / HTTP/1.1\r\n\r\n", &req) == 411);
    CHECK(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", &req) == 411);
    CHECK(head("POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", &req) == 400);
    CHECK(head("POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n", &req) == 413);
    CHECK(head("POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", &req) == 413);
    CHECK(head("POST / HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n", &req) == 0);
    CHECK(head("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", &req) == 400);
    CHECK(head("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", &req) == 0);
    CHECK(head("get / HTTP/1.1\r\n\r\n", &req) == 400);
    CHECK(head("GET / HTTP/2.0\r\n\r\n", &req) == 400);
    CHECK(head("GET nopath HTTP/1.1\r\n\r\n", &req) == 400);
    CHECK(head("GET / HTTP/1.1\r\n folded\r\n\r\n", &req) == 400);
    CHECK(head("GET / HTTP/1.1\r\nnocolon\r\n\r\n", &req) == 400);
    CHECK(head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", &req) == 0 && req.expect_continue);
    CHECK(head("GET / HTTP/1.1\r\nExpect: magic\r\n\r\n", &req) == 417);
    char nul[] = "GET / HTTP/1.1\r\nA: \0b\r\n\r\n";
    char msg[256];
    CHECK(http_parse_head(nul, sizeof nul - 1, 1 << 20, &req, msg, sizeof msg) == 400);
    char long_path[HTTP_MAX_PATH + 64];
    snprintf(long_path, sizeof long_path, "GET /%0*d HTTP/1.1\r\n\r\n", HTTP_MAX_PATH, 0);
    CHECK(head(long_path, &req) == 414);
    char out[256];
    int n = http_response_head(out, sizeof out, 401, "application/json", "WWW-Authenticate: Bearer\r\n", 10);
    CHECK(n > 0 && strcmp(out, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
                               "Connection: close\r\nWWW-Authenticate: Bearer\r\n\r\n") == 0);
    n = http_response_head(out, sizeof out, 200, "text/event-stream", "", -1);
    CHECK(n > 0 && !strstr(out, "Content-Length"));
    CHECK(http_response_head(out, 20, 200, "text/plain", "", 1) == -1);
}

static void test_api_key(void) {
    HttpRequest req;
    memset(&req, 0, sizeof req);
    CHECK(authorized(NULL, &req));  // no key: open
    CHECK(!authorized("secret", &req));
    strcpy(req.authorization, "Bearer secret");
    CHECK(authorized("secret", &req));
    strcpy(req.authorization, "bearer secret");  // the scheme is case-insensitive (RFC 7235)
    CHECK(authorized("secret", &req));
    strcpy(req.authorization, "Bearer secreT");
    CHECK(!authorized("secret", &req));
    strcpy(req.authorization, "Bearer secret2");
    CHECK(!authorized("secret", &req));
    strcpy(req.authorization, "Bearer secre");
    CHECK(!authorized("secret", &req));
    strcpy(req.authorization, "Basic secret");
    CHECK(!authorized("secret", &req));
    strcpy(req.authorization, "Bearer secret");
    req.authorization_too_long = 1;
    CHECK(!authorized("secret", &req));
}

// ---------------------------------------------------------------------------------------------------
// request.c

static int parse(const Server *s, const char *json, Completion *c, const char **param) {
    char msg[256];
    Problem pb = {msg, sizeof msg, NULL};
    int status = parse_completion(s, json, strlen(json), c, &pb);
    *param = pb.param;
    return status;
}

static void test_request(const Server *s) {
    Completion c;
    const char *param;
    CHECK(parse(s, "{\"prompt\": \"Hello world\", \"max_tokens\": 5, \"temperature\": 0, \"stop\": [\"a\", \"bc\"]}", &c, &param) == 0);
    CHECK(c.n_prompts == 1 && c.prompt_len[0] == 2 && c.prompts[0][0] == 15496 && c.prompts[0][1] == 995);  // tiktoken's
    CHECK(c.max_tokens == 5 && c.temperature == 0 && c.n_stop == 2 && strcmp(c.stop[1], "bc") == 0 && c.logprobs == -1);
    completion_free(&c);
    CHECK(parse(s, "{\"prompt\": [[1, 2, 3], [4]], \"n\": 2, \"echo\": true, \"logprobs\": 3, \"seed\": 7}", &c, &param) == 0);
    CHECK(c.n_prompts == 2 && c.prompt_len[0] == 3 && c.prompt_len[1] == 1 && c.prompts[1][0] == 4);
    CHECK(c.n == 2 && c.echo && c.logprobs == 3 && c.seed == 7 && c.max_tokens == DEFAULT_MAX_TOKENS);
    completion_free(&c);
    CHECK(parse(s, "{\"prompt\": \"\"}", &c, &param) == 0 && c.prompt_len[0] == 0);
    completion_free(&c);
    static const struct { const char *json, *param; } bad[] = {
        {"{}", "prompt"}, {"{\"prompt\": []}", "prompt"}, {"{\"prompt\": [1, \"a\"]}", "prompt"},
        {"{\"prompt\": [-1]}", "prompt"}, {"{\"prompt\": [50257]}", "prompt"}, {"{\"prompt\": [1.5]}", "prompt"},
        {"{\"prompt\": \"a\", \"max_tokens\": -1}", "max_tokens"}, {"{\"prompt\": \"a\", \"max_tokens\": 1025}", "max_tokens"},
        {"{\"prompt\": \"a\", \"temperature\": 2.5}", "temperature"}, {"{\"prompt\": \"a\", \"top_p\": \"1\"}", "top_p"},
        {"{\"prompt\": \"a\", \"n\": 0}", "n"}, {"{\"prompt\": [[1], [2]], \"n\": 33}", "n"},
        {"{\"prompt\": \"a\", \"logprobs\": 6}", "logprobs"}, {"{\"prompt\": \"a\", \"stop\": [\"\"]}", "stop"},
        {"{\"prompt\": \"a\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "stop"}, {"{\"prompt\": \"a\", \"echo\": 1}", "echo"},
        {"{\"prompt\": \"a\", \"best_of\": 2}", "best_of"}, {"{\"prompt\": \"a\", \"suffix\": \"x\"}", "suffix"},
        {"[1]", NULL}, {"{\"prompt\": \"a\"", NULL}, {"", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int status = parse(s, bad[i].json, &c, &param);
        CHECK(status == 400 && (bad[i].param ? param && strcmp(param, bad[i].param) == 0 : param == NULL));
        if (status != 400) printf("  (%s)\n", bad[i].json);
        completion_free(&c);
    }
    char long_ids[4096] = "{\"prompt\": [";  // one id more than the context
    for (int i = 0; i <= s->model->config.block_size; i++) sprintf(long_ids + strlen(long_ids), "%s1", i ? "," : "");
    strcat(long_ids, "]}");
    CHECK(parse(s, long_ids, &c, &param) == 400 && strcmp(param, "prompt") == 0);
    completion_free(&c);
}

// ---------------------------------------------------------------------------------------------------
// response.c: what may be handed out of a growing text

static size_t release(const char *text, size_t gen_start, size_t sent, const char *stop, int *hit) {
    Completion c;
    memset(&c, 0, sizeof c);
    if (stop) {
        c.stop[0] = (char *)stop;
        c.stop_len[0] = strlen(stop);
        c.n_stop = 1;
    }
    Choice ch;
    memset(&ch, 0, sizeof ch);
    ch.text.data = (char *)text;
    ch.text.len = strlen(text);
    ch.gen_start = gen_start;
    ch.sent = sent;
    return releasable(&c, &ch, hit);
}

static void test_hold_back(void) {
    int hit;
    CHECK(release("Hello wor", 0, 0, "world", &hit) == 6 && !hit);  // "wor" may begin the stop string
    CHECK(release("Hello world!", 0, 6, "world", &hit) == 6 && hit);  // the stop string begins at 6
    CHECK(release("Hello w", 0, 0, NULL, &hit) == 7 && !hit);
    CHECK(release("world: ok", 6, 0, "world", &hit) == 9 && !hit);  // the echoed prompt is not searched
    CHECK(release("caf\xc3", 0, 0, NULL, &hit) == 3);  // half of an é waits for its second byte
    CHECK(release("caf\xc3\xa9", 0, 0, NULL, &hit) == 5);
    CHECK(release("\xe6\x97", 0, 0, NULL, &hit) == 0);
    CHECK(release("a\xff" "b", 0, 0, NULL, &hit) == 3);  // an invalid byte goes out (as U+FFFD), it will not complete
    CHECK(release("Stop he", 0, 0, "Stop here", &hit) == 0 && !hit);
}

static int offset(const char *text, size_t start) {
    Choice ch;
    memset(&ch, 0, sizeof ch);
    ch.text.data = (char *)text;
    ch.text.len = strlen(text);
    return text_offset(&ch, start);
}

static void test_text_offset(void) {
    CHECK(offset("abc", 0) == 0 && offset("abc", 2) == 2 && offset("abc", 3) == 3);
    CHECK(offset("caf\xc3\xa9!", 5) == 4);  // é is one character of two bytes
    CHECK(offset("caf\xc3\xa9!", 4) == 4);  // a token that starts inside é: after the 3 before, plus the one it is in
    CHECK(offset("\xf0\x9f\x98\x80x", 4) == 1);
    CHECK(offset("a\xff" "b", 2) == 2);  // an invalid byte counts as its U+FFFD
    Choice ch;  // calls in order of start move one cursor
    memset(&ch, 0, sizeof ch);
    ch.text.data = "\xe6\x97\xa5\xe6\x97\xa5";
    ch.text.len = 6;
    CHECK(text_offset(&ch, 0) == 0 && text_offset(&ch, 3) == 1 && text_offset(&ch, 6) == 2);
}

// ---------------------------------------------------------------------------------------------------
// flags.c

static void test_flags(void) {
    long port = 8080;
    float t = 1;
    const char *host = NULL, *model = NULL;
    int bench = 0;
    const Flag flags[] = {{"--port", FLAG_INT, &port, 0, 65535, "N", "port"}, {"-t", FLAG_FLOAT, &t, 0, 2, "T", "temp"},
                          {"--host", FLAG_TEXT, &host, 0, 0, "ADDR", "host"}, {"--bench", FLAG_SWITCH, &bench, 0, 0, NULL, "b"}};
    char *ok[] = {"x", "m.bin", "--port", "9000", "-t", "0.5", "--host", "::1", "--bench"};
    CHECK(flags_parse(flags, 4, 9, ok, &model, "usage") == 0);
    CHECK(port == 9000 && t == 0.5f && strcmp(host, "::1") == 0 && bench == 1 && strcmp(model, "m.bin") == 0);
    char *bads[][3] = {{"x", "--port", "65536"}, {"x", "--port", "9x"}, {"x", "-t", "3"}, {"x", "-t", "nan"},
                       {"x", "--frob", "1"}, {"x", "a.bin", "b.bin"}};
    fprintf(stderr, "(the error lines below are expected)\n");
    for (int i = 0; i < 6; i++) {
        model = NULL;
        CHECK(flags_parse(flags, 4, 3, bads[i], &model, "usage") == -1);
    }
    char *missing[] = {"x", "--port"};
    CHECK(flags_parse(flags, 4, 2, missing, &model, "usage") == -1);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: server_test MODEL.bin\n");
        return 2;
    }
    char err[256];
    GPTModel *model = gpt_open(argv[1], err, sizeof err);
    BPE *bpe = model ? bpe_open(model->tokenizer, model->tokenizer_size, err, sizeof err) : NULL;
    if (!bpe) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    Server s = {.model = model, .bpe = bpe, .alias = "test", .max_tokens_cap = 1024};
    test_http();
    test_api_key();
    test_request(&s);
    test_hold_back();
    test_text_offset();
    test_flags();
    bpe_close(bpe);
    gpt_close(model);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
