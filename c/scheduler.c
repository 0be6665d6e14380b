/*
 * scheduler.c: the generation thread. Continuous batching: up to --parallel choices in flight, one slot each. Each
 * round takes queued requests' choices into free slots, samples every running choice's next token, and runs all of
 * those tokens and up to --prefill_chunk tokens of the prompts still going in (oldest slot first) through one
 * gpt_step, which reads each weight once for all of them: a long prompt goes in over several steps while the others
 * keep streaming, as llama-server's batching does. A choice joins at the next round and leaves when it ends, so a
 * short answer never waits for a long one; a request's choices share the batch, and a request with more choices than
 * free slots has the rest taken in as slots free up, before any later request.
 *
 * This thread never touches a socket: answers go to the client's outbox (conn_send). A choice whose client has
 * OUTBOX_BYTES unsent waits, skipped by the steps, until the client reads or the I/O thread cuts it (--timeout):
 * a client that stops reading holds its own slots and nothing else.
 */
#define _GNU_SOURCE
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCORE_CHUNK 64  // prompt tokens prefilled at once when their logprobs are asked for

// One choice in flight: its request, its KV cache and sampler.
typedef struct {
    Job *job;              // NULL: the slot is free
    Choice *choice;
    GPTState *state;
    GPTSampler sampler;
    const float *logits;   // of the next token to sample; NULL once the choice ended or while its prompt goes in
    const int *prompt;     // while the prompt goes through in chunks (fed of n_prompt so far); NULL after
    int n_prompt, fed;
    // the prompt cache: the state keeps its tokens' KV rows after the choice ends (gpt_state_tokens)
    TokenLogprob *scores;  // (block_size,) scores[p]: token p's log-probability given those before it, with the
                           // MAX_LOGPROBS most likely, for the tokens the state holds; valid for p in [1, scored)
    int scored;
    unsigned long long used;  // when it last took a choice: of two slots no prompt shares, the older is reused
} Slot;

// The generation thread's own state.
typedef struct {
    int n;                 // slots (--parallel)
    Slot *slots;           // (n,)
    GPTState **states;     // (n,) the states of a step's rows' generations
    int *tokens;           // (n + prefill_chunk,) a step's tokens
    int *counts;           // (n,) tokens of each generation in the step
    Slot **running;        // (n,) the slots in the step
    GPTBatch *batch;
    float *scratch;        // prefill()'s logits of SCORE_CHUNK prompt tokens, allocated at the first such request
    Job *pending;          // a request some of whose choices wait for a slot
    int ok;                // the slots could be allocated
    unsigned long long admitted;  // choices taken in so far (Slot.used's clock)
} Generator;

// 1 when the job's client went away or was cut (the job is then marked so), else 0.
static int client_gone(Server *s, Job *job) {
    if (job->gone) return 1;
    int state = conn_state(s, job->conn);
    if (state == CONN_GONE || state == CONN_TOO_SLOW) {
        job->gone = 1;
        job->too_slow = state == CONN_TOO_SLOW;
    }
    return job->gone;
}

// The tokens a choice's prompt feeds: its ids, or <|endoftext|> alone for an empty prompt (as GPT-2 samples
// unconditionally).
static const int *prompt_tokens(const Server *s, const Job *job, const Choice *ch, int *n) {
    int len = job->c.prompt_len[ch->prompt];
    *n = len ? len : 1;
    return len ? job->c.prompts[ch->prompt] : &s->model->config.eot_token;
}

// How many first tokens of tokens[0..n) a state holds the KV rows of.
static int common_prefix(const GPTState *state, const int *tokens, int n) {
    int held, k = 0;
    const int *have = gpt_state_tokens(state, &held);
    while (have && k < n && k < held && have[k] == tokens[k]) k++;
    return k;
}

static void slot_end(Server *s, Slot *sl) {
    Job *job = sl->job;
    Choice *ch = sl->choice;
    if (job->error[0]) {  // a failed pass may have left rows half written: nothing of it is kept
        gpt_state_reset(sl->state);
        sl->scored = 0;
    }
    gpt_sampler_free(&sl->sampler);
    sl->job = NULL;
    sl->choice = NULL;
    sl->logits = NULL;
    sl->prompt = NULL;
    choice_end(s, job, ch);  // may free the job
}

// A record of the prompt cache's into a choice's, cut to top_n alternatives: the same as score_token with top_n (its
// top_n most likely are the first of the MAX_LOGPROBS, in the same order; the token's own value is the same float).
static void cached_score(TokenLogprob *r, const TokenLogprob *cached, int top_n, int vocab) {
    int k = top_n < MAX_LOGPROBS ? top_n : MAX_LOGPROBS, listed = 0;
    if (k > vocab) k = vocab;
    r->logprob = cached->logprob;
    for (int j = 0; j < k; j++) {
        r->top[j] = cached->top[j];
        r->top_logprob[j] = cached->top_logprob[j];
        listed |= r->top[j] == r->token;
    }
    if (!listed) {
        r->top[k] = r->token;
        r->top_logprob[k++] = cached->logprob;
    }
    r->n_top = k;
}

/* The prompt through the model at once from position `from` (the rows before it are the prompt cache's), for the
   prompts that do not go in chunks beside the decodes (slot_start): one prefill, or with echo and logprobs, chunks
   of SCORE_CHUNK whose every row of logits scores the next prompt token (the records before `from` come from the
   slot's cache). The logits of the next token, or NULL with the request failed. */
static const float *prefill(Server *s, Slot *sl, float **scratch, int from) {
    const GPTModel *m = s->model;
    Job *job = sl->job;
    Choice *ch = sl->choice;
    const Completion *c = &job->c;
    int n, len = c->prompt_len[ch->prompt], score = c->echo && c->logprobs >= 0 && len > 0;
    const int *tokens = prompt_tokens(s, job, ch, &n);
    size_t V = (size_t)m->config.padded_vocab_size;
    if (score && !*scratch) *scratch = malloc(SCORE_CHUNK * V * sizeof **scratch);
    if (score && !*scratch) {
        job_fail(job, "out of memory for the prompt's logits", 1);
        return NULL;
    }
    uint64_t t0 = now_ns();
    const float *logits = NULL;
    int vocab = m->config.vocab_size;
    if (!score) logits = gpt_prefill(m, sl->state, tokens + from, n - from, NULL);
    for (int p = 1; score && p <= from; p++) cached_score(&ch->lp[p], &sl->scores[p], c->logprobs, vocab);
    for (int at = from; score && at < n; at += SCORE_CHUNK) {
        int k = n - at < SCORE_CHUNK ? n - at : SCORE_CHUNK;
        logits = gpt_prefill(m, sl->state, tokens + at, k, *scratch);
        if (!logits) break;
        for (int i = 0; i < k && at + i + 1 < n; i++) {  // row i predicts prompt token at + i + 1: record at + i + 1
            TokenLogprob *r = &sl->scores[at + i + 1];
            r->token = tokens[at + i + 1];
            score_token(*scratch + (size_t)i * V, vocab, MAX_LOGPROBS, r);
            cached_score(&ch->lp[at + i + 1], r, c->logprobs, vocab);
        }
        sl->scored = at + k;
    }
    if (!logits) job_fail(job, gpt_state_error(sl->state), 0);
    metrics_tokens(s, n - from, (double)(now_ns() - t0) / 1e9, 0, 0);
    return logits;
}

// The echo of a choice's prompt into its text (and its logprob records, filled by prefill).
static void echo_prompt(Server *s, Job *job, Choice *ch) {
    const Completion *c = &job->c;
    for (int i = 0; c->echo && i < c->prompt_len[ch->prompt]; i++) {
        int token = c->prompts[ch->prompt][i];
        size_t len = 0;
        const unsigned char *bytes = bpe_decode(s->bpe, token, &len);
        if (c->logprobs >= 0 && !new_record(ch, token, ch->text.len)) job_fail(job, "out of memory for logprobs", 1);
        if (bytes) buf_append(&ch->text, bytes, len);
    }
    if (ch->text.failed) job_fail(job, "out of memory for the echoed prompt", 1);
    ch->gen_start = ch->text.len;
}

// The tokens a slot's cache spares a prompt of n: the shared prefix, less what must be fed again (the last token, at
// least; with scoring, from the first shared token whose record it lacks, and the one before, whose logits score it).
// *scored: the records still valid.
static int reusable(const Slot *other, const int *tokens, int n, int score, int *scored) {
    int k = common_prefix(other->state, tokens, n);
    *scored = other->scored < k ? other->scored : k;  // records of the tokens both sequences share
    int keep = score ? *scored - 1 : k;
    keep = keep < n - 1 ? keep : n - 1;
    return keep > 0 ? keep : 0;
}

/* The prompt cache, for a choice about to go into sl: the rows of its prompt's longest prefix that sl holds, or,
   longer, that another running slot holds (a request's n samples, or prompts sharing a context, prefill it once:
   the rows are copied). The state is cut to that prefix, less what the prompt must still feed (at least its last
   token, whose logits come next; with scoring, the first token whose record the cache does not have). The tokens
   kept, which the prompt does not prefill again. */
static int reuse_prefix(Server *s, Generator *g, Slot *sl, const int *tokens, int n, int score) {
    int scored, keep = reusable(sl, tokens, n, score, &scored);
    Slot *from = NULL;
    for (int i = 0; i < g->n; i++) {
        Slot *other = &g->slots[i];
        int other_scored = 0, other_keep = other != sl && other->job ? reusable(other, tokens, n, score, &other_scored) : 0;
        if (other_keep > keep) { keep = other_keep; scored = other_scored; from = other; }
    }
    if (from) {
        gpt_state_copy_prefix(s->model, sl->state, from->state, keep);
        memcpy(sl->scores, from->scores, (size_t)scored * sizeof *sl->scores);
    }
    if (keep == 0 || gpt_state_truncate(sl->state, keep) != 0) {
        gpt_state_reset(sl->state);
        keep = scored = 0;
    }
    sl->scored = scored;
    return keep;
}

/* Takes a choice into a free slot: its sampler, the echo of its prompt, and its prompt: to go through in chunks beside
   the other slots' decodes, so that a long prompt never stops their streams; or at once here, when its logprobs are
   asked for (every row's logits are kept) or it is longer than block_size (the window of its last block_size tokens
   is computed, as gpt_prefill does). */
static void slot_start(Server *s, Generator *g, Slot *sl, Job *job, Choice *ch) {
    const GPTModel *m = s->model;
    const Completion *c = &job->c;
    sl->job = job;
    sl->choice = ch;
    sl->logits = NULL;
    sl->used = ++g->admitted;
    if (gpt_sampler_init(&sl->sampler, m->config.vocab_size, c->temperature, c->top_k, c->top_p, ch->seed) != 0) {
        job_fail(job, "out of memory for the sampler", 1);
        slot_end(s, sl);
        return;
    }
    if (c->stream) job_head(s, job);
    echo_prompt(s, job, ch);
    int n, len = c->prompt_len[ch->prompt], score = c->echo && c->logprobs >= 0 && len > 0;
    const int *tokens = prompt_tokens(s, job, ch, &n);
    int cache = s->prompt_cache && c->cache_prompt && (c->max_tokens > 0 || score) && !job->gone && !job->error[0];
    if (cache) {
        ch->cached = reuse_prefix(s, g, sl, tokens, n, score);
        metrics_prefix_cache(s, n, ch->cached);
    } else {
        gpt_state_reset(sl->state);
        sl->scored = 0;
    }
    sl->prompt = NULL;
    if (c->max_tokens > 0 && !score && len <= m->config.block_size && !job->gone && !job->error[0]) {
        sl->prompt = tokens;
        sl->n_prompt = n;
        sl->fed = ch->cached;
    } else if ((c->max_tokens > 0 || score) && !job->gone && !job->error[0]) {
        sl->logits = prefill(s, sl, &g->scratch, ch->cached);
    }
    if (c->echo && !job->error[0]) {
        int stop_hit;
        choice_release(s, job, ch, releasable(c, ch, &stop_hit), NULL);
    }
    if ((!sl->logits && !sl->prompt) || c->max_tokens == 0) slot_end(s, sl);
}

// Samples the slot's next token and hands out its text: the token to decode next, or -1 when the choice ended
// (the slot is then free).
static int slot_sample(Server *s, Slot *sl) {
    const GPTModel *m = s->model;
    Job *job = sl->job;
    Choice *ch = sl->choice;
    const Completion *c = &job->c;
    if (job->error[0] || ch->generated >= c->max_tokens || client_gone(s, job)) { slot_end(s, sl); return -1; }
    if (stop_requested) { job->cut = 1; slot_end(s, sl); return -1; }  // SIGTERM: end with what was made so far
    int token = gpt_sample(&sl->sampler, sl->logits);
    ch->generated++;
    if (!job->first_token) {
        job->first_token = 1;
        metrics_first_token(s, (double)(now_ms() - job->t0) / 1000.0);
    }
    if (c->logprobs >= 0) {  // <|endoftext|> too: lm-eval drops the last record, whatever it is
        TokenLogprob *r = new_record(ch, token, ch->text.len);
        if (!r) { job_fail(job, "out of memory for logprobs", 1); slot_end(s, sl); return -1; }
        score_token(sl->logits, m->config.vocab_size, c->logprobs, r);
    }
    if (token == m->config.eot_token) { ch->finish = "stop"; slot_end(s, sl); return -1; }
    size_t len = 0;
    const unsigned char *bytes = bpe_decode(s->bpe, token, &len);
    if (bytes) buf_append(&ch->text, bytes, len);
    if (ch->text.failed) { job_fail(job, "the completion outgrew the server's text buffer", 0); slot_end(s, sl); return -1; }
    choice_release(s, job, ch, releasable(c, ch, &ch->stop_hit), NULL);
    if (ch->stop_hit) { ch->finish = "stop"; slot_end(s, sl); return -1; }
    if (ch->generated >= c->max_tokens) { slot_end(s, sl); return -1; }
    return token;
}

// The next queued request, now the generation thread's; NULL when none waits.
static Job *take_job(Server *s) {
    pthread_mutex_lock(&s->lock);
    Job *job = s->head;
    if (job) {
        s->head = job->next;
        if (!s->head) s->tail = NULL;
        s->waiting--;
        s->generating++;
    }
    pthread_mutex_unlock(&s->lock);
    return job;
}

static int generator_init(Server *s, Generator *g) {
    char err[256] = "";
    memset(g, 0, sizeof *g);
    int n = g->n = s->parallel;
    g->slots = calloc((size_t)n, sizeof *g->slots);
    g->states = malloc((size_t)n * sizeof *g->states);
    g->tokens = malloc(((size_t)n + s->prefill_chunk) * sizeof *g->tokens);
    g->counts = malloc((size_t)n * sizeof *g->counts);
    g->running = malloc((size_t)n * sizeof *g->running);
    g->batch = gpt_batch_new(s->model, n, err, sizeof err);
    g->ok = g->slots && g->states && g->tokens && g->counts && g->running && g->batch;
    for (int i = 0; g->ok && i < n; i++) {
        g->slots[i].state = gpt_state_new(s->model, err, sizeof err);
        g->slots[i].scores = calloc((size_t)s->model->config.block_size, sizeof *g->slots[i].scores);
        g->ok = g->slots[i].state && g->slots[i].scores;
    }
    if (!g->ok) fprintf(stderr, "gpt-server: %s\n", err[0] ? err : "out of memory for the generation slots");
    return g->ok;
}

static void generator_free(Generator *g) {
    for (int i = 0; g->slots && i < g->n; i++) {
        gpt_state_free(g->slots[i].state);
        free(g->slots[i].scores);
    }
    gpt_batch_free(g->batch);
    free(g->slots); free(g->states); free(g->tokens); free(g->counts); free(g->running); free(g->scratch);
}

// A running slot waits for its client: it has a token to sample and its client's outbox is full (under the lock).
// The one rule for both the wait (wait_for_work) and the step (gather_step), which skips such a slot.
static int waits_for_client(const Slot *sl) {
    return sl->job && !sl->prompt && !sl->job->gone && !stop_requested && conn_state_locked(sl->job->conn) == CONN_FULL;
}

// Sleeps until there is work: a queued request, or a slot that can step. 0 when stopping and nothing is left.
static int wait_for_work(Server *s, Generator *g) {
    pthread_mutex_lock(&s->lock);
    for (;;) {
        int active = 0, runnable = 0;
        for (int i = 0; g->ok && i < g->n; i++) {
            active += g->slots[i].job != NULL;
            runnable += g->slots[i].job && !waits_for_client(&g->slots[i]);
        }
        s->metrics.slots_busy = active;
        s->metrics.slots_waiting = active - runnable;
        if (!active && !g->pending && !s->head && stop_requested) break;
        if (runnable || g->pending || s->head) break;
        // wake up now and then: the signal handler cannot signal a condition variable
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&s->changed, &s->lock, &ts);
    }
    int work = g->pending || s->head || !stop_requested;
    for (int i = 0; g->ok && i < g->n; i++) work |= g->slots[i].job != NULL;
    pthread_mutex_unlock(&s->lock);
    return work;
}

/* The free slot for a prompt: the one whose cached tokens share the longest prefix with it, else the one that took a
   choice longest ago (llama-server chooses by prompt similarity, then by age). -1 when none is free, or when a
   running slot is still prefilling a longer shared prefix (a request's n samples of one prompt): the choice waits
   for it and then copies its rows (reuse_prefix) instead of prefilling them beside it. */
static int choose_slot(Generator *g, const int *tokens, int n, int use_cache) {
    int best = -1, best_k = -1, waiting = 0;
    for (int i = 0; i < g->n; i++) {
        Slot *sl = &g->slots[i];
        if (sl->job) {
            int shared = 0;
            while (use_cache && sl->prompt && shared < n && shared < sl->n_prompt && sl->prompt[shared] == tokens[shared])
                shared++;
            waiting |= sl->prompt && (shared < n - 1 ? shared : n - 1) > sl->fed;
            continue;
        }
        int k = use_cache ? common_prefix(sl->state, tokens, n) : 0;
        if (k > best_k || (k == best_k && sl->used < g->slots[best].used)) { best = i; best_k = k; }
    }
    return waiting ? -1 : best;
}

// Queued requests' choices into free slots, in order. A request not begun is refused at shutdown (or without slots)
// and dropped when its client went away while it waited.
static void admit(Server *s, Generator *g) {
    for (;;) {
        if (!g->pending) g->pending = take_job(s);
        if (!g->pending) break;
        Job *job = g->pending;
        if (job->admitted == 0 && (stop_requested || !g->ok || client_gone(s, job))) {
            g->pending = NULL;
            int refused = stop_requested || !g->ok;
            metrics_request(s, refused ? OUTCOME_REJECTED : job->too_slow ? OUTCOME_TOO_SLOW : OUTCOME_CANCELLED, 0, 0);
            if (refused) send_error(s, job->conn, 503, stop_requested ? "the server is shutting down" : "the server "
                                    "could not allocate its generation slots", NULL,
                                    stop_requested ? "server_shutting_down" : "out_of_memory");
            job_free(s, job);
            continue;
        }
        Choice *ch = &job->choices[job->admitted];
        int n;
        const int *tokens = prompt_tokens(s, job, ch, &n);
        int i = choose_slot(g, tokens, n, s->prompt_cache && job->c.cache_prompt);
        if (i < 0) break;
        job->admitted++;
        if (job->admitted == job->n_choices) g->pending = NULL;
        if (stop_requested) job->cut = 1;
        if (client_gone(s, job) || job->error[0] || stop_requested) choice_end(s, job, ch);  // ends without a slot
        else slot_start(s, g, &g->slots[i], job, ch);
    }
}

// The step's rows: a decode row for every running choice whose client keeps up, then the next chunks of the prompts
// going in. The number of generations in it; *rows and *prompt_rows count its tokens.
static int gather_step(Server *s, Generator *g, int *rows, int *prompt_rows) {
    int m = 0;
    *rows = *prompt_rows = 0;
    for (int i = 0; i < g->n; i++) {
        Slot *sl = &g->slots[i];
        if (!sl->job || sl->prompt) continue;
        pthread_mutex_lock(&s->lock);
        int waits = waits_for_client(sl);
        pthread_mutex_unlock(&s->lock);
        if (waits) continue;
        int token = slot_sample(s, sl);
        if (token < 0) continue;
        g->running[m] = sl;
        g->states[m] = sl->state;
        g->counts[m++] = 1;
        g->tokens[(*rows)++] = token;
    }
    for (int i = 0; i < g->n && *prompt_rows < s->prefill_chunk; i++) {
        Slot *sl = &g->slots[i];
        if (!sl->job || !sl->prompt) continue;
        if (client_gone(s, sl->job) || sl->job->error[0] || stop_requested) {
            if (stop_requested) sl->job->cut = 1;
            slot_end(s, sl);
            continue;
        }
        int left = sl->n_prompt - sl->fed, room = s->prefill_chunk - *prompt_rows, take = left < room ? left : room;
        memcpy(g->tokens + *rows, sl->prompt + sl->fed, (size_t)take * sizeof *g->tokens);
        g->running[m] = sl;
        g->states[m] = sl->state;
        g->counts[m++] = take;
        *rows += take;
        *prompt_rows += take;
    }
    return m;
}

// One gpt_step over the gathered rows; each generation's logits, or its prompt's progress, into its slot.
static void run_step(Server *s, Generator *g, int m, int rows, int prompt_rows) {
    uint64_t t0 = now_ns();
    int failed = gpt_step(s->model, g->batch, g->states, g->tokens, g->counts, m) != 0;
    double seconds = (double)(now_ns() - t0) / 1e9;  // split between the prompt and decode rows by their count
    metrics_tokens(s, prompt_rows, seconds * prompt_rows / rows, rows - prompt_rows, seconds * (rows - prompt_rows) / rows);
    for (int k = 0; k < m; k++) {
        Slot *sl = g->running[k];
        if (failed) {
            const char *why = gpt_state_error(g->states[k]);
            job_fail(sl->job, why[0] ? why : "a batched step failed", 0);
            slot_end(s, sl);
            continue;
        }
        if (sl->prompt) {
            sl->fed += g->counts[k];
            if (sl->fed < sl->n_prompt) continue;  // more of it in the next step
            sl->prompt = NULL;
        }
        sl->logits = gpt_state_logits(g->states[k]);
    }
}

void *generation_thread(void *arg) {
    Server *s = arg;
    Generator g;
    generator_init(s, &g);
    while (wait_for_work(s, &g)) {
        admit(s, &g);
        if (!g.ok) continue;
        int rows, prompt_rows, m = gather_step(s, &g, &rows, &prompt_rows);
        metrics_slots_busy(s, m);
        if (m > 0) run_step(s, &g, m, rows, prompt_rows);
    }
    generator_free(&g);
    return NULL;
}

// Queues a completion for the generation thread, which then owns c and answers on conn. 0, or -1 after answering
// 503 (c is still the caller's).
int enqueue(Server *s, Conn *conn, Completion *c) {
    Job *job = calloc(1, sizeof *job);
    int n_choices = c->n_prompts * c->n;
    Choice *choices = job ? calloc((size_t)n_choices, sizeof *choices) : NULL;
    for (int i = 0; choices && i < n_choices; i++) {
        int sample = i % c->n;  // each sample its own seed stream; a prompt's first is the request's seed itself
        choices[i].prompt = i / c->n;
        choices[i].seed = sample == 0 ? c->seed : splitmix64(c->seed + (uint64_t)sample);
        choices[i].finish = "length";
        buf_init(&choices[i].text, MAX_TEXT_BYTES);
    }
    pthread_mutex_lock(&s->lock);
    const char *why = !choices ? "out of memory"
                    : stop_requested ? "the server is shutting down"
                    : s->waiting + s->generating >= s->parallel + s->queue_size ? "the queue is full: try again later" : NULL;
    if (!why) {
        job->conn = conn;
        job->c = *c;
        job->choices = choices;
        job->n_choices = n_choices;
        job->created = (long long)time(NULL);
        job->t0 = now_ms();
        snprintf(job->id, sizeof job->id, "cmpl-%016llx", (unsigned long long)splitmix64(++s->requests ^ (uint64_t)s->started));
        if (s->tail) s->tail->next = job;
        else s->head = job;
        s->tail = job;
        s->waiting++;
        pthread_cond_broadcast(&s->changed);
    } else {
        s->metrics.requests[OUTCOME_REJECTED]++;
    }
    pthread_mutex_unlock(&s->lock);
    if (!why) return 0;
    const char *code = stop_requested ? "server_shutting_down" : !choices ? "out_of_memory" : "queue_full";
    free(choices);
    free(job);
    send_error(s, conn, 503, why, NULL, code);
    return -1;
}
