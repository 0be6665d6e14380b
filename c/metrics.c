/*
 * metrics.c: the counters behind GET /metrics, and the page itself in Prometheus' text format (version 0.0.4), named
 * as vLLM's and llama-server's where they have one. Every counter is under the server's lock.
 */
#include "server.h"

#include <stdio.h>

static const char *outcome_names[N_OUTCOMES] = {"ok", "cancelled", "client_too_slow", "invalid", "rejected",
                                                "unauthorized", "error"};
static const double ttft_bounds[N_TTFT_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

void metrics_request(Server *s, int outcome, int prompt_tokens, int completion_tokens) {
    pthread_mutex_lock(&s->lock);
    s->metrics.requests[outcome]++;
    s->metrics.prompt_tokens += (unsigned long long)prompt_tokens;
    s->metrics.generation_tokens += (unsigned long long)completion_tokens;
    pthread_mutex_unlock(&s->lock);
}

void metrics_first_token(Server *s, double seconds) {
    pthread_mutex_lock(&s->lock);
    s->metrics.ttft_count++;
    s->metrics.ttft_sum += seconds;
    for (int i = 0; i < N_TTFT_BUCKETS; i++)
        if (seconds <= ttft_bounds[i]) { s->metrics.ttft_buckets[i]++; break; }
    pthread_mutex_unlock(&s->lock);
}

void metrics_tokens(Server *s, int prefill_tokens, double prefill_seconds, int decode_tokens, double decode_seconds) {
    pthread_mutex_lock(&s->lock);
    s->metrics.prefill_tokens += (unsigned long long)prefill_tokens;
    s->metrics.prefill_seconds += prefill_seconds;
    s->metrics.decode_tokens += (unsigned long long)decode_tokens;
    s->metrics.decode_seconds += decode_seconds;
    pthread_mutex_unlock(&s->lock);
}

void metrics_prefix_cache(Server *s, int queried, int hit) {
    pthread_mutex_lock(&s->lock);
    s->metrics.prefix_queries += (unsigned long long)queried;
    s->metrics.prefix_hits += (unsigned long long)hit;
    pthread_mutex_unlock(&s->lock);
}

void metrics_slots_busy(Server *s, int busy) {
    pthread_mutex_lock(&s->lock);
    s->metrics.slots_busy = busy;
    pthread_mutex_unlock(&s->lock);
}

void metrics_text(Server *s, Buf *b) {
    pthread_mutex_lock(&s->lock);
    Metrics m = s->metrics;
    int waiting = s->waiting, generating = s->generating;
    pthread_mutex_unlock(&s->lock);
    buf_puts(b, "# HELP gptserver:requests_total Completion requests by outcome: ok, cancelled (the client went away), "
                 "client_too_slow (cut: it left its answer unread past --timeout), invalid (400), rejected (503: queue "
                 "full or shutting down), unauthorized (401 on any endpoint: no or a wrong API key), error (500).\n"
                 "# TYPE gptserver:requests_total counter\n");
    for (int i = 0; i < N_OUTCOMES; i++)
        buf_printf(b, "gptserver:requests_total{outcome=\"%s\"} %llu\n", outcome_names[i], m.requests[i]);
    buf_printf(b, "# HELP gptserver:prompt_tokens_total Prompt tokens of finished requests, as their usage counts them.\n"
                   "# TYPE gptserver:prompt_tokens_total counter\ngptserver:prompt_tokens_total %llu\n", m.prompt_tokens);
    buf_printf(b, "# HELP gptserver:generation_tokens_total Generated tokens of finished requests, as their usage counts "
                   "them.\n# TYPE gptserver:generation_tokens_total counter\ngptserver:generation_tokens_total %llu\n",
               m.generation_tokens);
    buf_printf(b, "# HELP gptserver:prompt_tokens_seconds Prefill throughput since start: prompt tokens per second of "
                   "prefill.\n# TYPE gptserver:prompt_tokens_seconds gauge\ngptserver:prompt_tokens_seconds %.3f\n",
               m.prefill_seconds > 0 ? m.prefill_tokens / m.prefill_seconds : 0.0);
    buf_printf(b, "# HELP gptserver:predicted_tokens_seconds Decode throughput since start: tokens per second of batched "
                   "decode steps, all slots together.\n# TYPE gptserver:predicted_tokens_seconds gauge\n"
                   "gptserver:predicted_tokens_seconds %.3f\n", m.decode_seconds > 0 ? m.decode_tokens / m.decode_seconds : 0.0);
    buf_printf(b, "# HELP gptserver:slots_busy Generation slots decoding a choice now.\n# TYPE gptserver:slots_busy gauge\n"
                   "gptserver:slots_busy %d\n# HELP gptserver:slots_total Generation slots (--parallel).\n"
                   "# TYPE gptserver:slots_total gauge\ngptserver:slots_total %d\n", m.slots_busy, s->parallel);
    buf_printf(b, "# HELP gptserver:num_requests_running Requests taken in by the generation thread, not yet answered.\n"
                   "# TYPE gptserver:num_requests_running gauge\ngptserver:num_requests_running %d\n"
                   "# HELP gptserver:num_requests_waiting Requests in the queue (at most --queue beyond the slots).\n"
                   "# TYPE gptserver:num_requests_waiting gauge\ngptserver:num_requests_waiting %d\n", generating, waiting);
    buf_puts(b, "# HELP gptserver:time_to_first_token_seconds From a request read to its first generated token.\n"
                 "# TYPE gptserver:time_to_first_token_seconds histogram\n");
    unsigned long long cumulative = 0;
    for (int i = 0; i < N_TTFT_BUCKETS; i++) {
        cumulative += m.ttft_buckets[i];
        buf_printf(b, "gptserver:time_to_first_token_seconds_bucket{le=\"%g\"} %llu\n", ttft_bounds[i], cumulative);
    }
    buf_printf(b, "gptserver:time_to_first_token_seconds_bucket{le=\"+Inf\"} %llu\n"
                   "gptserver:time_to_first_token_seconds_sum %.6f\ngptserver:time_to_first_token_seconds_count %llu\n",
               m.ttft_count, m.ttft_sum, m.ttft_count);
    buf_printf(b, "# HELP gptserver:prefix_cache_queries_total Prompt tokens looked up in the prompt cache (vLLM's "
                  "meaning).\n# TYPE gptserver:prefix_cache_queries_total counter\ngptserver:prefix_cache_queries_total %llu\n"
                  "# HELP gptserver:prefix_cache_hits_total Of them, tokens whose KV rows a slot held already: not "
                  "prefilled.\n# TYPE gptserver:prefix_cache_hits_total counter\ngptserver:prefix_cache_hits_total %llu\n",
               m.prefix_queries, m.prefix_hits);
    buf_printf(b, "# HELP gptserver:slots_waiting_for_client Generation slots paused: their client has not read %d KiB "
                  "of its answer.\n# TYPE gptserver:slots_waiting_for_client gauge\ngptserver:slots_waiting_for_client %d\n",
               OUTBOX_BYTES >> 10, m.slots_waiting);
    buf_printf(b, "# HELP gptserver:connections Client connections open now (at most --max_connections).\n"
                  "# TYPE gptserver:connections gauge\ngptserver:connections %d\n", m.connections);
}
