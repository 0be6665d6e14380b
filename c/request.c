/*
 * request.c: a completion request's JSON body into a Completion, and POST /tokenize's and /detokenize's bodies:
 * every value checked, every problem a 400 in OpenAI's shape naming the field (Problem). Pure: no sockets, no
 * threads (tests/c/server_test.c calls it directly).
 */
#define _GNU_SOURCE
#include "server.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void completion_free(Completion *c) {
    for (int i = 0; c->prompts && i < c->n_prompts; i++) free(c->prompts[i]);
    free(c->prompts);
    free(c->prompt_len);
    for (int i = 0; i < c->n_stop; i++) free(c->stop[i]);
    memset(c, 0, sizeof *c);
}

int bad(Problem *pb, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pb->msg, pb->msg_size, fmt, ap);
    va_end(ap);
    pb->param = param;
    return 400;
}

// A number member between lo and hi (integral when asked); absent or null leaves *out as it is.
static int get_number(const JsonDoc *d, const JsonValue *root, const char *key, double lo, double hi, int integral,
                      double *out, Problem *pb) {
    const JsonValue *v = json_get(d, root, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_NUMBER) return bad(pb, key, "%s must be a number, not %s", key, json_type_name(v->type));
    if (integral && v->number != floor(v->number)) return bad(pb, key, "%s must be an integer", key);
    if (!(v->number >= lo && v->number <= hi)) {
        if (integral) return bad(pb, key, "%s must be between %.0f and %.0f", key, lo, hi);
        return bad(pb, key, "%s must be between %g and %g", key, lo, hi);
    }
    *out = v->number;
    return 0;
}

int get_bool(const JsonDoc *d, const JsonValue *root, const char *key, int *out, Problem *pb) {
    const JsonValue *v = json_get(d, root, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_TRUE && v->type != JSON_FALSE)
        return bad(pb, key, "%s must be true or false, not %s", key, json_type_name(v->type));
    *out = v->type == JSON_TRUE;
    return 0;
}

// The body as a JSON object: 0, or 400 with the problem. doc must be json_free'd either way.
int parse_body(const char *body, size_t len, JsonDoc *doc, const JsonValue **root, Problem *pb) {
    memset(doc, 0, sizeof *doc);
    if (len == 0) return bad(pb, NULL, "the request needs a JSON body");
    if (memchr(body, '\0', len)) return bad(pb, NULL, "the request body contains a NUL byte");
    if (utf8_invalid_at((const unsigned char *)body, len) != len) return bad(pb, NULL, "the request body is not valid UTF-8");
    if (json_parse(doc, body, len) != 0) return bad(pb, NULL, "%s", doc->error);
    *root = json_root(doc);
    if ((*root)->type != JSON_OBJECT) return bad(pb, NULL, "the body must be a JSON object");
    return 0;
}

int count_children(const JsonDoc *d, const JsonValue *list) {
    int n = 0;
    for (const JsonValue *v = json_child(d, list); v; v = json_next(d, v)) n++;
    return n;
}

// Token ids from a JSON list into out (room for all of them): each an integer in [0, vocab). The count, or -1.
int get_token_ids(const JsonDoc *d, const JsonValue *list, int vocab, int *out, const char *param, Problem *pb) {
    int n = 0;
    for (const JsonValue *v = json_child(d, list); v; v = json_next(d, v)) {
        if (v->type != JSON_NUMBER || v->number != floor(v->number) || !(v->number >= 0 && v->number < vocab)) {
            if (v->type == JSON_NUMBER) bad(pb, param, "token ids are integers in [0, %d), not %g", vocab, v->number);
            else bad(pb, param, "token ids are integers in [0, %d), not %s", vocab, json_type_name(v->type));
            return -1;
        }
        out[n++] = (int)v->number;
    }
    return n;
}

int client_vocab_size(const GPTModel *model, const BPE *bpe) {  // the token ids a client may send: the model's and the tokenizer's
    int vocab = model->config.vocab_size;
    return vocab < bpe_vocab_size(bpe) ? vocab : bpe_vocab_size(bpe);
}

static int add_stop(Completion *c, const JsonValue *v, Problem *pb) {
    if (v->type != JSON_STRING) return bad(pb, "stop", "stop must be a string or a list of strings");
    if (v->len == 0) return bad(pb, "stop", "a stop string must not be empty");
    if (v->len > MAX_STOP_BYTES) return bad(pb, "stop", "a stop string is at most %d bytes", MAX_STOP_BYTES);
    if (c->n_stop >= MAX_STOP) return bad(pb, "stop", "at most %d stop strings", MAX_STOP);
    c->stop[c->n_stop] = strdup(v->str);
    if (!c->stop[c->n_stop]) return bad(pb, "stop", "out of memory");
    c->stop_len[c->n_stop++] = v->len;
    return 0;
}

// One prompt, as text (tokenized here) or as a list of token ids: at most block_size tokens, as OpenAI refuses a
// prompt longer than the context.
static int add_prompt(const Server *s, const JsonDoc *d, Completion *c, const JsonValue *v, Problem *pb) {
    int block = s->model->config.block_size;
    size_t room = v->type == JSON_STRING ? (v->len < (size_t)block ? v->len : (size_t)block) : (size_t)count_children(d, v);
    if (v->type != JSON_STRING && room == 0) return bad(pb, "prompt", "a token-id prompt must not be empty");
    if (room > (size_t)block) return bad(pb, "prompt", "the prompt is longer than the model's context of %d tokens", block);
    int *tokens = malloc((room + 1) * sizeof *tokens);
    if (!tokens) return bad(pb, "prompt", "out of memory");
    c->prompts[c->n_prompts++] = tokens;
    int n = v->type == JSON_STRING ? bpe_encode(s->bpe, v->str, v->len, tokens, block)
                                   : get_token_ids(d, v, client_vocab_size(s->model, s->bpe), tokens, "prompt", pb);
    if (n < 0 && v->type == JSON_STRING) return bad(pb, "prompt", "the prompt is longer than the model's context of %d tokens", block);
    if (n < 0) return 400;
    c->prompt_len[c->n_prompts - 1] = n;
    return 0;
}

// prompt: a string, a list of strings, a list of token ids, or a list of token-id lists.
static int parse_prompts(const Server *s, const JsonDoc *d, const JsonValue *prompt, Completion *c, Problem *pb) {
    static const char *kinds = "a string, a list of strings, a list of token ids or a list of token-id lists";
    if (!prompt) return bad(pb, "prompt", "prompt is required");
    const JsonValue *first = prompt->type == JSON_ARRAY ? json_child(d, prompt) : NULL;
    if (prompt->type == JSON_ARRAY && !first) return bad(pb, "prompt", "prompt must not be an empty list");
    int lists = first && first->type != JSON_NUMBER;  // several prompts, each a string or a list of ids
    if (prompt->type != JSON_STRING && prompt->type != JSON_ARRAY)
        return bad(pb, "prompt", "prompt must be %s, not %s", kinds, json_type_name(prompt->type));
    if (first) {
        if (first->type != JSON_NUMBER && first->type != JSON_STRING && first->type != JSON_ARRAY)
            return bad(pb, "prompt", "prompt must be %s, not a list of %s", kinds, json_type_name(first->type));
        for (const JsonValue *v = first; v; v = json_next(d, v))
            if (v->type != first->type) return bad(pb, "prompt", "prompt must be %s, not a mix", kinds);
    }
    int count = lists ? count_children(d, prompt) : 1;
    if (count > MAX_PROMPTS) return bad(pb, "prompt", "at most %d prompts in one request, not %d", MAX_PROMPTS, count);
    c->prompts = calloc((size_t)count, sizeof *c->prompts);
    c->prompt_len = calloc((size_t)count, sizeof *c->prompt_len);
    if (!c->prompts || !c->prompt_len) return bad(pb, "prompt", "out of memory");
    if (!lists) return add_prompt(s, d, c, prompt, pb);
    for (const JsonValue *v = first; v; v = json_next(d, v)) {
        int status = add_prompt(s, d, c, v, pb);
        if (status) return status;
    }
    return 0;
}

// Options that would change what the answer means, and that this server does not do, are refused.
static int refuse_unsupported(const JsonDoc *d, const JsonValue *root, const Completion *c, Problem *pb) {
    const JsonValue *v = json_get(d, root, "best_of");
    if (v && v->type != JSON_NULL && !(v->type == JSON_NUMBER && v->number == c->n))
        return bad(pb, "best_of", "best_of must equal n: the n samples are returned, none is ranked or dropped");
    static const char *must_be_zero[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        v = json_get(d, root, must_be_zero[i]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_NUMBER && v->number == 0))
            return bad(pb, must_be_zero[i], "%s is not supported (only 0)", must_be_zero[i]);
    }
    v = json_get(d, root, "suffix");
    if (v && v->type != JSON_NULL) return bad(pb, "suffix", "suffix is not supported");
    v = json_get(d, root, "logit_bias");
    if (v && v->type != JSON_NULL && !(v->type == JSON_OBJECT && v->child < 0))
        return bad(pb, "logit_bias", "logit_bias is not supported");
    return 0;
}

// 0, or 400 with the problem; c is filled (and owns memory) either way.
int parse_completion(const Server *s, const char *body, size_t len, Completion *c, Problem *pb) {
    memset(c, 0, sizeof *c);
    c->n = 1;
    c->max_tokens = DEFAULT_MAX_TOKENS;
    c->temperature = 1.0f;
    c->top_p = 1.0f;
    c->logprobs = -1;
    c->cache_prompt = 1;
    JsonDoc doc;
    const JsonValue *root;
    int status = parse_body(body, len, &doc, &root, pb);
    if (status) goto done;

    const JsonValue *model = json_get(&doc, root, "model");
    if (model && model->type != JSON_STRING && model->type != JSON_NULL) {
        status = bad(pb, "model", "model must be a string");
        goto done;
    }
    double x = c->max_tokens;
    if ((status = get_number(&doc, root, "max_tokens", 0, s->max_tokens_cap, 1, &x, pb))) goto done;
    c->max_tokens = (int)x;
    x = c->temperature;
    if ((status = get_number(&doc, root, "temperature", 0, 2, 0, &x, pb))) goto done;
    c->temperature = (float)x;
    x = c->top_p;
    if ((status = get_number(&doc, root, "top_p", 0, 1, 0, &x, pb))) goto done;
    c->top_p = (float)x;
    x = 0;
    if ((status = get_number(&doc, root, "top_k", 0, 1e9, 1, &x, pb))) goto done;
    c->top_k = (int)x;
    const JsonValue *seed = json_get(&doc, root, "seed");
    x = 0;
    if ((status = get_number(&doc, root, "seed", -9.2e18, 9.2e18, 1, &x, pb))) goto done;
    if (seed && seed->type == JSON_NUMBER) c->seed = (uint64_t)(int64_t)x;
    else c->seed = splitmix64(now_ns() ^ (uint64_t)(uintptr_t)c);  // no seed: a different one every time
    x = 1;
    if ((status = get_number(&doc, root, "n", 1, MAX_CHOICES, 1, &x, pb))) goto done;
    c->n = (int)x;
    x = -1;
    if ((status = get_number(&doc, root, "logprobs", 0, MAX_LOGPROBS, 1, &x, pb))) goto done;
    c->logprobs = (int)x;
    if ((status = get_bool(&doc, root, "echo", &c->echo, pb))) goto done;
    if ((status = get_bool(&doc, root, "cache_prompt", &c->cache_prompt, pb))) goto done;
    if ((status = get_bool(&doc, root, "stream", &c->stream, pb))) goto done;
    const JsonValue *options = json_get(&doc, root, "stream_options");
    if (options && options->type != JSON_NULL) {
        if (options->type != JSON_OBJECT) { status = bad(pb, "stream_options", "stream_options must be an object"); goto done; }
        if ((status = get_bool(&doc, options, "include_usage", &c->include_usage, pb))) goto done;
    }
    const JsonValue *stop = json_get(&doc, root, "stop");
    if (stop && stop->type == JSON_ARRAY) {
        for (const JsonValue *v = json_child(&doc, stop); v; v = json_next(&doc, v))
            if ((status = add_stop(c, v, pb))) goto done;
    } else if (stop && stop->type != JSON_NULL) {
        if ((status = add_stop(c, stop, pb))) goto done;
    }
    if ((status = refuse_unsupported(&doc, root, c, pb))) goto done;
    if ((status = parse_prompts(s, &doc, json_get(&doc, root, "prompt"), c, pb))) goto done;
    if (c->n_prompts * c->n > MAX_CHOICES) {
        status = bad(pb, "n", "at most %d choices (prompts x n) in one request, not %d", MAX_CHOICES, c->n_prompts * c->n);
        goto done;
    }
done:
    json_free(&doc);
    return status;
}

// POST /tokenize, llama-server's: {"content": "text", "with_pieces": false} -> {"tokens": [ids]}; with_pieces,
// {"tokens": [{"id": 464, "piece": " The"}]} (a piece that is not UTF-8 on its own: its bytes as a list of numbers).
// <|endoftext|> in the content is plain text, as in a prompt. POST /detokenize: {"tokens": [ids]} -> {"content": "text"}.
void tokenize(Server *s, Conn *conn, const char *body, size_t len, int detokenize) {
    char msg[256];
    Problem pb = {msg, sizeof msg, NULL};
    JsonDoc doc;
    const JsonValue *root = NULL;
    int *tokens = NULL, n = 0, with_pieces = 0, add_special = 0;
    Buf b;
    buf_init(&b, MAX_TEXT_BYTES);
    int status = parse_body(body, len, &doc, &root, &pb);
    const JsonValue *v = status ? NULL : json_get(&doc, root, detokenize ? "tokens" : "content");
    if (!status && detokenize && (!v || v->type != JSON_ARRAY)) status = bad(&pb, "tokens", "tokens must be a list of token ids");
    if (!status && !detokenize && (!v || v->type != JSON_STRING)) status = bad(&pb, "content", "content must be a string");
    if (!status) status = get_bool(&doc, root, "with_pieces", &with_pieces, &pb);
    if (!status) status = get_bool(&doc, root, "add_special", &add_special, &pb);  // GPT-2 has no BOS: nothing to add
    if (!status) {
        size_t room = detokenize ? (size_t)count_children(&doc, v) : v->len;
        tokens = malloc((room + 1) * sizeof *tokens);
        if (!tokens) status = bad(&pb, NULL, "out of memory");
    }
    if (!status) {
        n = detokenize ? get_token_ids(&doc, v, client_vocab_size(s->model, s->bpe), tokens, "tokens", &pb)
                       : bpe_encode(s->bpe, v->str, v->len, tokens, (int)(v->len < INT32_MAX ? v->len : INT32_MAX));
        if (n < 0) status = detokenize ? 400 : bad(&pb, NULL, "out of memory");
    }
    if (!status && detokenize) {
        Buf text;
        buf_init(&text, MAX_TEXT_BYTES);
        for (int i = 0; i < n; i++) {
            size_t len = 0;
            const unsigned char *bytes = bpe_decode(s->bpe, tokens[i], &len);
            if (bytes) buf_append(&text, bytes, len);
        }
        buf_puts(&b, "{\"content\":");
        json_write_string(&b, text.data ? text.data : "", text.len);  // invalid UTF-8 as U+FFFD, as tiktoken's decode
        buf_puts(&b, "}\n");
        if (text.failed) b.failed = 1;
        buf_free(&text);
    } else if (!status) {
        buf_puts(&b, "{\"tokens\":[");
        for (int i = 0; i < n; i++) {
            if (i) buf_puts(&b, ",");
            if (!with_pieces) { buf_printf(&b, "%d", tokens[i]); continue; }
            size_t len = 0;
            const unsigned char *bytes = bpe_decode(s->bpe, tokens[i], &len);
            buf_printf(&b, "{\"id\":%d,\"piece\":", tokens[i]);
            if (utf8_invalid_at(bytes, len) == len) {
                json_write_string(&b, (const char *)bytes, len);
            } else {
                for (size_t k = 0; k < len; k++) buf_printf(&b, "%s%d", k ? "," : "[", bytes[k]);
                buf_puts(&b, "]");
            }
            buf_puts(&b, "}");
        }
        buf_puts(&b, "]}\n");
    }
    if (status) {
        fprintf(stderr, "POST %s 400: %s\n", detokenize ? "/detokenize" : "/tokenize", msg);
        send_error(s, conn, 400, msg, pb.param, "invalid_value");
    } else {
        send_json(s, conn, &b);
    }
    buf_free(&b);
    free(tokens);
    json_free(&doc);
}

