/*
 * response.c: the answers. OpenAI's error and completion JSON, a stream's server-sent events, logprobs (with
 * text_offset in characters), and the hold-back that never hands out the start of a stop string or half a UTF-8
 * character. Every byte goes to the client's outbox (conn_send), never to a socket: loop.c sends it.
 */
#define _GNU_SOURCE  // memmem
#include "server.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ----------------------------------------------------------------------------------------------------
// answers

// A whole answer: its head and body into the outbox; the connection closes once they are sent.
void send_body(Server *s, Conn *conn, int status, const char *content_type, const char *extra, const char *body, size_t len) {
    char head[512];
    int n = http_response_head(head, sizeof head, status, content_type, extra, (long long)len);
    if (n > 0) {
        conn_send(s, conn, head, (size_t)n);
        conn_send(s, conn, body, len);
    }
}

// OpenAI's error shape: {"error": {"message", "type", "param", "code"}}.
void send_error(Server *s, Conn *conn, int status, const char *message, const char *param, const char *code) {
    Buf b;
    buf_init(&b, 1 << 16);
    buf_puts(&b, "{\"error\":{\"message\":");
    json_write_string(&b, message, strlen(message));
    buf_printf(&b, ",\"type\":\"%s\",\"param\":", status >= 500 ? "server_error" : "invalid_request_error");
    if (param) json_write_string(&b, param, strlen(param));
    else buf_puts(&b, "null");
    buf_puts(&b, ",\"code\":");
    if (code) json_write_string(&b, code, strlen(code));
    else buf_puts(&b, "null");
    buf_puts(&b, "}}\n");
    const char *extra = status == 405 ? "Allow: GET, POST\r\n" : status == 401 ? "WWW-Authenticate: Bearer\r\n" : "";
    if (!b.failed) send_body(s, conn, status, "application/json", extra, b.data, b.len);
    buf_free(&b);
}

const char *code_of_status(int status) {
    switch (status) {
    case 401: return "invalid_api_key";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 411: return "length_required";
    case 413: return "request_too_large";
    case 414: return "uri_too_long";
    case 431: return "headers_too_large";
    case 503: return "server_busy";
    }
    return "invalid_request";
}

void send_json(Server *s, Conn *conn, Buf *b) {
    if (b->failed) send_error(s, conn, 500, "the answer did not fit in memory", NULL, "internal_error");
    else send_body(s, conn, 200, "application/json", "", b->data, b->len);
}

void model_object(Buf *b, const Server *s) {
    buf_puts(b, "{\"id\":");
    json_write_string(b, s->alias, strlen(s->alias));
    buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"gpt-server\"}", s->started);
}
// ----------------------------------------------------------------------------------------------------
// log-probabilities

/* log-softmax of one row of logits over the vocabulary: r->token's log-probability, and the top_n most likely
   tokens (most likely first; of equal logits the lower id first, as torch.topk), then r->token itself where it is
   not among them: OpenAI's "up to logprobs + 1" entries. The model's own distribution, whatever the request's
   temperature, top_k and top_p: what a harness scores. */
void score_token(const float *logits, int vocab, int top_n, TokenLogprob *r) {
    float max = logits[0];
    for (int i = 1; i < vocab; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) sum += expf(logits[i] - max);
    double lse = max + log(sum);
    r->logprob = (float)(logits[r->token] - lse);
    int k = 0;
    for (int i = 0; i < vocab && top_n > 0; i++) {
        if (k == top_n && !(logits[i] > logits[r->top[k - 1]])) continue;
        int j = k < top_n ? k++ : k - 1;
        while (j > 0 && logits[i] > logits[r->top[j - 1]]) {
            r->top[j] = r->top[j - 1];
            j--;
        }
        r->top[j] = i;
    }
    int listed = 0;
    for (int j = 0; j < k; j++) listed |= r->top[j] == r->token;
    if (!listed) r->top[k++] = r->token;  // less likely than every one above: the order stays
    // the same expression as r->logprob: a greedy token's two values are the same float (lm-eval compares them)
    for (int j = 0; j < k; j++) r->top_logprob[j] = (float)(logits[r->top[j]] - lse);
    r->n_top = k;
}

// A new record at the end of the choice's list, or NULL out of memory.
TokenLogprob *new_record(Choice *ch, int token, size_t start) {
    if (ch->n_lp == ch->cap_lp) {
        int cap = ch->cap_lp ? 2 * ch->cap_lp : 64;
        TokenLogprob *grown = realloc(ch->lp, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        ch->lp = grown;
        ch->cap_lp = cap;
    }
    TokenLogprob *r = &ch->lp[ch->n_lp++];
    memset(r, 0, sizeof *r);
    r->token = token;
    r->start = start;
    r->logprob = NAN;
    return r;
}

// A token as OpenAI's logprobs name it: its text, or "bytes:\xNN..." when its bytes are not UTF-8 on their own.
static void token_text(Buf *b, const BPE *bpe, int token) {
    size_t len = 0;
    const unsigned char *bytes = bpe_decode(bpe, token, &len);
    if (!bytes) len = 0;
    if (utf8_invalid_at(bytes ? bytes : (const unsigned char *)"", len) == len) {
        json_write_string(b, bytes ? (const char *)bytes : "", len);
        return;
    }
    Buf t;
    buf_init(&t, 16 + 4 * len);
    buf_puts(&t, "bytes:");
    for (size_t i = 0; i < len; i++) buf_printf(&t, "\\x%02x", bytes[i]);
    json_write_string(b, t.data ? t.data : "", t.len);
    buf_free(&t);
}

static void write_logprob(Buf *b, float x) {
    if (isfinite(x)) buf_printf(b, "%.9g", x);  // 9 digits: the float itself comes back
    else buf_puts(b, "null");                     // JSON has no infinities; the first prompt token has no context
}

/* The character (code point) of the choice's text at which a byte begins, for text_offset: the characters wholly
   before it, plus one when it is inside a character. A cut-short or invalid sequence counts as the one U+FFFD it
   becomes in the text. Calls must come in order of start. */
int text_offset(Choice *ch, size_t start) {
    const unsigned char *t = (const unsigned char *)ch->text.data;
    while (t && ch->offset_byte < start) {
        int k = utf8_next(t + ch->offset_byte, start - ch->offset_byte);
        if (k == 0) break;
        ch->offset_byte += (size_t)(k < 0 ? -k : k);
        ch->offset_chars++;
    }
    return ch->offset_chars + (ch->offset_byte < start);
}

// OpenAI's logprobs object of records [from, to) of a choice.
static void logprobs_object(Buf *b, const Server *s, Choice *ch, int from, int to) {
    buf_puts(b, "{\"tokens\":[");
    for (int i = from; i < to; i++) {
        if (i > from) buf_puts(b, ",");
        token_text(b, s->bpe, ch->lp[i].token);
    }
    buf_puts(b, "],\"token_logprobs\":[");
    for (int i = from; i < to; i++) {
        if (i > from) buf_puts(b, ",");
        write_logprob(b, ch->lp[i].logprob);
    }
    buf_puts(b, "],\"top_logprobs\":[");
    for (int i = from; i < to; i++) {
        if (i > from) buf_puts(b, ",");
        if (isnan(ch->lp[i].logprob)) {
            buf_puts(b, "null");
            continue;
        }
        buf_puts(b, "{");
        for (int j = 0; j < ch->lp[i].n_top; j++) {
            if (j) buf_puts(b, ",");
            token_text(b, s->bpe, ch->lp[i].top[j]);
            buf_puts(b, ":");
            write_logprob(b, ch->lp[i].top_logprob[j]);
        }
        buf_puts(b, "}");
    }
    buf_puts(b, "],\"text_offset\":[");
    for (int i = from; i < to; i++) buf_printf(b, "%s%d", i > from ? "," : "", text_offset(ch, ch->lp[i].start));
    buf_puts(b, "]}");
}

// ----------------------------------------------------------------------------------------------------
// answers of completions

/* How much of the choice's text can be handed to the client, given that text[0..sent) already was: never the
   start of a stop string (the next token may complete it), never a UTF-8 character the next token may
   complete. Stop strings are looked for in the completion only, not in the echoed prompt. *stop_hit: a stop
   string begins at the returned offset, and generation ends there. */
size_t releasable(const Completion *c, const Choice *ch, int *stop_hit) {
    const char *text = ch->text.data;
    size_t len = ch->text.len, sent = ch->sent;
    *stop_hit = 0;
    if (!text) return 0;
    // a stop string cannot begin before sent: any text that could begin one was held back
    size_t from = sent > ch->gen_start ? sent : ch->gen_start, first = len;
    for (int i = 0; i < c->n_stop; i++) {
        const char *p = memmem(text + from, len - from, c->stop[i], c->stop_len[i]);
        if (p && (size_t)(p - text) < first) { first = (size_t)(p - text); *stop_hit = 1; }
    }
    if (*stop_hit) return first;
    size_t hold = 0;
    for (int i = 0; i < c->n_stop; i++) {
        size_t k = c->stop_len[i] - 1;
        if (k > len - from) k = len - from;
        for (; k > hold; k--)
            if (memcmp(text + len - k, c->stop[i], k) == 0) { hold = k; break; }
    }
    size_t end = len - hold, i = sent;
    while (i < end) {
        int k = utf8_next((const unsigned char *)text + i, end - i);
        if (k == 0) break;
        i += (size_t)(k < 0 ? -k : k);
    }
    return i;
}

void job_fail(Job *job, const char *why, int out_of_memory) {
    if (job->error[0]) return;  // the first failure is the one reported
    snprintf(job->error, sizeof job->error, "%s", why && why[0] ? why : "a forward pass failed");
    job->out_of_memory = out_of_memory;
}

// The streamed answer's status line and headers, once.
void job_head(Server *s, Job *job) {
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                               "Connection: close\r\n\r\n";
    if (job->head_sent || job->gone) return;
    job->head_sent = 1;
    conn_send(s, job->conn, head, sizeof head - 1);
}

static void event_head(Buf *b, const Server *s, const Job *job) {
    buf_printf(b, "data: {\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,\"model\":", job->id, job->created);
    json_write_string(b, s->alias, strlen(s->alias));
}

static void send_event(Server *s, Job *job, Buf *b) {
    if (b->failed) job_fail(job, "an event did not fit in memory", 1);
    else conn_send(s, job->conn, b->data, b->len);
}

/* Hands out text[sent..upto) of a choice and the logprobs of the tokens that begin in it (at the end, finish set,
   all that are left): streaming, as one event, the choice's last one with its finish_reason; else the text stays in
   the choice for the answer. */
void choice_release(Server *s, Job *job, Choice *ch, size_t upto, const char *finish) {
    const Completion *c = &job->c;
    int to = ch->lp_sent;
    while (to < ch->n_lp && (finish || ch->lp[to].start < upto)) to++;
    int nothing = upto == ch->sent && to == ch->lp_sent && !finish;
    if (c->stream && !nothing && !job->gone && !job->error[0]) {
        job_head(s, job);
        Buf b;
        buf_init(&b, MAX_TEXT_BYTES);
        event_head(&b, s, job);
        buf_printf(&b, ",\"choices\":[{\"index\":%d,\"text\":", (int)(ch - job->choices));
        json_write_string(&b, ch->text.data ? ch->text.data + ch->sent : "", upto - ch->sent);
        if (finish) buf_printf(&b, ",\"finish_reason\":\"%s\",\"logprobs\":", finish);
        else buf_puts(&b, ",\"finish_reason\":null,\"logprobs\":");
        if (c->logprobs >= 0) logprobs_object(&b, s, ch, ch->lp_sent, to);
        else buf_puts(&b, "null");
        buf_puts(&b, "}]}\n\n");
        send_event(s, job, &b);
        buf_free(&b);
    }
    ch->sent = upto;
    ch->lp_sent = to;
}

// OpenAI's usage, with the prompt tokens that came from the prompt cache as its prompt_tokens_details.cached_tokens
static void usage_object(Buf *b, int prompt_tokens, int completion_tokens, int cached_tokens) {
    buf_printf(b, "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":%d}}", prompt_tokens, completion_tokens,
               prompt_tokens + completion_tokens, cached_tokens);
}

// Lets go of the connection (the I/O thread sends what is left, then closes it) and frees a request taken by the
// generation thread.
void job_free(Server *s, Job *job) {
    conn_done(s, job->conn);
    for (int i = 0; i < job->n_choices; i++) {
        buf_free(&job->choices[i].text);
        free(job->choices[i].lp);
    }
    free(job->choices);
    completion_free(&job->c);
    free(job);
    pthread_mutex_lock(&s->lock);
    s->generating--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

// Every choice of the request has ended: the answer (streaming: its end), or the error; then the request is freed.
static void job_finish(Server *s, Job *job) {
    Completion *c = &job->c;
    int prompt_tokens = 0, completion_tokens = 0;
    for (int i = 0; i < c->n_prompts; i++) prompt_tokens += c->prompt_len[i];
    int cached_tokens = 0;  // each prompt's once, as prompt_tokens counts it: its first sample's
    for (int i = 0; i < job->n_choices; i++) completion_tokens += job->choices[i].generated;
    for (int i = 0; i < job->n_choices; i += c->n) cached_tokens += job->choices[i].cached;
    // counted before the answer goes out, so that a client that reads /metrics after its answer finds it counted
    metrics_request(s, job->error[0] ? OUTCOME_ERROR : job->too_slow ? OUTCOME_TOO_SLOW : job->gone ? OUTCOME_CANCELLED
                       : OUTCOME_OK, prompt_tokens, completion_tokens);
    Buf b;
    buf_init(&b, MAX_TEXT_BYTES);
    if (job->gone) {
        // nobody to answer
    } else if (job->error[0]) {
        if (c->stream && job->head_sent) {
            buf_puts(&b, "data: {\"error\":{\"message\":");
            json_write_string(&b, job->error, strlen(job->error));
            buf_puts(&b, ",\"type\":\"server_error\",\"param\":null,\"code\":\"internal_error\"}}\n\ndata: [DONE]\n\n");
            send_event(s, job, &b);
        } else {
            send_error(s, job->conn, job->out_of_memory ? 503 : 500, job->error, NULL,
                       job->out_of_memory ? "out_of_memory" : "internal_error");
        }
    } else if (c->stream) {
        job_head(s, job);
        if (c->include_usage) {
            event_head(&b, s, job);
            buf_puts(&b, ",\"choices\":[],");
            usage_object(&b, prompt_tokens, completion_tokens, cached_tokens);
            buf_puts(&b, "}\n\n");
        }
        buf_puts(&b, "data: [DONE]\n\n");
        send_event(s, job, &b);
    } else {
        buf_printf(&b, "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,\"model\":", job->id, job->created);
        json_write_string(&b, s->alias, strlen(s->alias));
        buf_puts(&b, ",\"choices\":[");
        for (int i = 0; i < job->n_choices; i++) {
            Choice *ch = &job->choices[i];
            buf_printf(&b, "%s{\"index\":%d,\"text\":", i ? "," : "", i);
            json_write_string(&b, ch->text.data ? ch->text.data : "", ch->sent);
            buf_printf(&b, ",\"finish_reason\":\"%s\",\"logprobs\":", ch->finish);
            if (c->logprobs >= 0) logprobs_object(&b, s, ch, 0, ch->n_lp);
            else buf_puts(&b, "null");
            buf_puts(&b, "}");
        }
        buf_puts(&b, "],");
        usage_object(&b, prompt_tokens, completion_tokens, cached_tokens);
        buf_puts(&b, "}\n");
        send_json(s, job->conn, &b);
    }
    buf_free(&b);
    const char *finish = job->n_choices > 0 ? job->choices[0].finish : "";
    fprintf(stderr, "POST /v1/completions %s: %d prompt + %d completion tokens, %d choice%s, %s, %lld ms%s\n",
            !job->error[0] ? "200" : job->out_of_memory ? "503" : "500", prompt_tokens, completion_tokens,
            job->n_choices, job->n_choices == 1 ? "" : "s", job->error[0] ? job->error : finish, now_ms() - job->t0,
            job->too_slow ? " (client too slow: cut)" : job->gone ? " (client went away)" : job->cut ? " (cut by shutdown)" : "");
    job_free(s, job);
}

// A choice has ended: its last event (streaming), and the request's answer when it was the last choice.
void choice_end(Server *s, Job *job, Choice *ch) {
    size_t end = ch->stop_hit ? ch->sent : ch->text.len;
    while (ch->stop_hit && ch->n_lp > 0 && ch->lp[ch->n_lp - 1].start >= end) ch->n_lp--;  // the stop string's tokens
    choice_release(s, job, ch, end, ch->finish);
    if (++job->ended == job->n_choices) job_finish(s, job);
}
