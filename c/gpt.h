/*
 * gpt.h: the model, its forward pass and a sampler, over one memory-mapped file written by export.py.
 *
 * A model is opened once and shared read-only; everything that changes during a generation lives in a
 * GPTState (KV cache, activations, the window of tokens) that a caller allocates per request or per worker.
 * No function here exits or keeps state in globals: errors come back as NULL / -1 with a message.
 *
 *     char err[256];
 *     GPTModel *m = gpt_open("model.bin", err, sizeof err);        // NULL + err on failure
 *     GPTState *s = gpt_state_new(m, err, sizeof err);
 *     const float *logits = gpt_prefill(m, s, prompt, n_prompt, NULL);
 *     GPTSampler sampler;
 *     gpt_sampler_init(&sampler, m->config.vocab_size, 0.8f, 50, 0.95f, 42);
 *     for (int i = 0; i < 256 && logits; i++) {                     // the caller may stop between tokens
 *         int token = gpt_sample(&sampler, logits);
 *         if (token == m->config.eot_token) break;
 *         logits = gpt_decode(m, s, token);
 *     }
 *     gpt_sampler_free(&sampler); gpt_state_free(s); gpt_close(m);
 *
 * The file format is c/FORMAT.md.
 */
#ifndef GPT_H
#define GPT_H

#include <stddef.h>
#include <stdint.h>

#include "matmul.h"  // WeightMatrix: a weight matrix (out rows x in columns), fp32 or q8_0, and its packed copy

enum { GPT_POS_LEARNED = 0, GPT_POS_ROPE = 1 };
enum { GPT_MLP_GELU = 0, GPT_MLP_SWIGLU = 1, GPT_MLP_RELU2 = 2 };
enum { GPT_NORM_LAYERNORM = 0, GPT_NORM_RMSNORM = 1 };
enum { GPT_DTYPE_FP32 = 0, GPT_DTYPE_Q8_0 = 1, GPT_DTYPE_Q4_0 = 2, GPT_DTYPE_BF16 = 3 };

typedef struct {
    int n_layer, n_head, n_embd, block_size;
    int vocab_size;         // tokens the tokenizer knows (50257 for GPT-2); sample among these
    int padded_vocab_size;  // rows of the embedding and head (model.py's vocab_size, e.g. 50304): logits have this many
    int pos_emb, mlp, norm; // GPT_POS_*, GPT_MLP_*, GPT_NORM_*
    int hidden;             // MLP hidden width: 4*n_embd, or model.py's swiglu_hidden
    int qk_norm, tie_embeddings, bias;
    float logit_softcap;    // 0: off
    float rope_theta;
    float norm_eps;         // 1e-5 for LayerNorm, 1e-6 for RMSNorm
    float qk_norm_eps;      // 1e-6
    int dtype, group_size;  // GPT_DTYPE_*; group_size of q8_0 (32 or 64) and q4_0 (32); 0 for fp32 and bf16
    int eot_token;          // <|endoftext|>, 50256
    int doc_mask;           // 1: a token attends within its document only (from its last <|endoftext|> on)
    int attn_window;        // > 0: a token attends to the last attn_window positions only (itself included)
    int value_embeds;       // 1: value embedding tables mixed into the attention values (model.py's U-net order)
    int unet_skips;         // 1: block n_layer-1-i adds skip_weights[i] x the output of block i, i < n_layer/2
} GPTConfig;


typedef struct {
    const float *value_lambdas;  // 2: v = value_lambdas[0] v + value_lambdas[1] value embedding; NULL without
    const float *ln_1_w, *ln_1_b, *ln_2_w, *ln_2_b;  // b NULL without bias or with RMSNorm
    WeightMatrix c_attn, attn_proj, c_fc, c_gate, mlp_proj;  // c_gate only for SwiGLU
    const float *c_attn_b, *attn_proj_b, *c_fc_b, *c_gate_b, *mlp_proj_b;  // NULL without bias
} GPTLayer;

typedef struct {
    GPTConfig config;
    const float *wte;         // fp32 input embedding (padded_vocab_size x n_embd), or NULL when it is the q8_0 head
    const float *wpe;         // learned positions (block_size x n_embd), or NULL for RoPE
    const float *value_embeds;  // (n_layer+1)/2 tables of padded_vocab_size x n_embd, fp32; NULL without
    const float *skip_weights;  // n_layer/2, with unet_skips; else NULL
    GPTLayer *layers;         // n_layer
    const float *ln_f_w, *ln_f_b;
    WeightMatrix lm_head;        // padded_vocab_size x n_embd; shares wte's memory when tied and fp32
    float *rope_cos, *rope_sin;  // block_size x head_size, computed at open as model.py computes them
    const unsigned char *tokenizer;  // the tokenizer section of the file (bpe_open reads it)
    size_t tokenizer_size;
    size_t packed_bytes;      // the weights' copy in the matmul kernel's layout (0 with the portable kernel)
    void *map;                // the whole file, memory-mapped
    size_t map_size;
} GPTModel;

/* Map and check a file written by export.py. NULL on failure, with one line in err. */
/* "fp32", "q8_0", "q4_0" or "bf16": the name of a GPT_DTYPE_* (the dtype of c/FORMAT.md's header). */
const char *gpt_dtype_name(int dtype);
GPTModel *gpt_open(const char *path, char *err, size_t err_size);
void gpt_close(GPTModel *m);

/* The state of one generation: KV cache for block_size positions, activations for a batched prefill,
   and the last block_size tokens (to recompute the window past block_size, as model.py does). */
typedef struct GPTState GPTState;

GPTState *gpt_state_new(const GPTModel *m, char *err, size_t err_size);
void gpt_state_free(GPTState *s);
void gpt_state_reset(GPTState *s);  // forget the tokens so far: the next prefill starts at position 0
int gpt_state_length(const GPTState *s);  // tokens seen so far (may exceed block_size)
const char *gpt_state_error(const GPTState *s);  // why the last prefill/decode returned NULL

/* A prompt cache: a state's tokens are a prefix whose KV rows any state may reuse, as long as its positions never
   moved (it never passed block_size). Each row depends on the tokens up to it alone (document masks and windows
   too), so the rows a state holds for a prefix are bit for bit those a fresh prefill of that prefix computes.
   gpt_state_tokens: the tokens whose rows the state holds (*n of them), or NULL once it passed block_size.
   gpt_state_truncate: keep the first n (0 <= n <= length): the next prefill goes on from position n. 0, or -1
   (past block_size, or n out of range). gpt_state_copy_prefix: dst takes src's first n tokens and their rows. */
const int *gpt_state_tokens(const GPTState *s, int *n);
int gpt_state_truncate(GPTState *s, int n);
int gpt_state_copy_prefix(const GPTModel *m, GPTState *dst, const GPTState *src, int n);

/* Where a state's forward passes spent their time, in seconds summed since gpt_state_new: the layers' matrix
   products, attention, the head's product, and the whole passes (the rest: norms, activations, embeddings). */
typedef struct {
    double matmul, attention, head, total;
} GPTProfile;
GPTProfile gpt_state_profile(const GPTState *s);

/* Append n tokens (batched, matrix-matrix) and return the logits of the last one: padded_vocab_size floats,
   owned by s and valid until the next call. all_logits, if not NULL, receives n x padded_vocab_size logits,
   one row per new token (only while the tokens fit in block_size). Past block_size the model conditions on
   the last block_size tokens, recomputing that window, exactly as model.generate does.
   NULL on bad input (a token outside [0, padded_vocab_size), n < 1, ...): gpt_state_error says why. */
const float *gpt_prefill(const GPTModel *m, GPTState *s, const int *tokens, int n, float *all_logits);
/* One token against the KV cache: gpt_prefill of n = 1. */
const float *gpt_decode(const GPTModel *m, GPTState *s, int token);

/* Decoding many generations at once: one token for each of n distinct states, in one pass that reads every
   weight once for all of them (decoding is bound by reading the weights). A GPTBatch holds the activations
   for up to max_batch generations and a prompt of up to block_size tokens beside them; one per thread that
   decodes. Returns 0, and each state's logits are then gpt_state_logits(state), what gpt_decode would have
   returned (bit for bit: each row's sums run in the same order whatever else the pass carries); a state already
   holding block_size positions recomputes its window alone, as gpt_decode does. -1 on bad input (n outside
   [1, max_batch], a token outside the vocabulary): no state is changed, and the first bad state's
   gpt_state_error says why.
   gpt_step is the general step: state i takes counts[i] tokens (tokens holds them one state after another), so
   that prompt chunks go through the same pass as the decodes, as a server's continuous batching mixes them; each
   state's logits are its last token's. A state's tokens must fit in its cache, except a single token of a full
   one; all of them together in max_batch + block_size rows. */
typedef struct GPTBatch GPTBatch;

GPTBatch *gpt_batch_new(const GPTModel *m, int max_batch, char *err, size_t err_size);
void gpt_batch_free(GPTBatch *b);
int gpt_decode_batch(const GPTModel *m, GPTBatch *b, GPTState **states, const int *tokens, int n);
int gpt_step(const GPTModel *m, GPTBatch *b, GPTState **states, const int *tokens, const int *counts, int n);
const float *gpt_state_logits(const GPTState *s);  // the logits of the state's last token

/* Sampling: greedy at temperature 0, else softmax(logits / temperature) cut to the top_k most likely
   (top_k <= 0: all) and to the smallest set whose probability reaches top_p (top_p >= 1: all). */
typedef struct {
    int n;              // sample among logits[0..n-1] (config.vocab_size: no padding token)
    float temperature;
    int top_k;
    float top_p;
    uint64_t rng;       // xorshift64* state: the same seed gives the same tokens
    float *probs;       // n
    int *index;         // n
} GPTSampler;

int gpt_sampler_init(GPTSampler *s, int n, float temperature, int top_k, float top_p, uint64_t seed);  // 0, or -1 out of memory
void gpt_sampler_free(GPTSampler *s);
int gpt_sample(GPTSampler *s, const float *logits);

/* Threads for the matmuls (OpenMP; a no-op without it). */
void gpt_set_threads(int n);

#endif
