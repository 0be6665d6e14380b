/*
 * bpe.h: GPT-2's byte-pair encoding (tiktoken's r50k_base), byte for byte, over tables export.py writes
 * into the model file (token bytes in rank order, and the Unicode letter and number ranges of the
 * pre-tokenization regex).
 *
 *     BPE *bpe = bpe_open(model->tokenizer, model->tokenizer_size, err, sizeof err);
 *     int n = bpe_encode(bpe, text, strlen(text), tokens, max_tokens);   // -1: more than max_tokens
 *     size_t len; const unsigned char *bytes = bpe_decode(bpe, tokens[0], &len);
 *
 * Encoding is tiktoken's Encoding._encode_bytes: valid UTF-8 exactly as encode_ordinary (so
 * "<|endoftext|>" in the text is plain text); where the bytes stop being valid UTF-8, the regex piece
 * before them and every byte after go through BPE as one piece, as tiktoken does. decode(encode(x)) == x
 * for any bytes. A BPE is read-only after bpe_open: many threads may encode with one at once.
 */
#ifndef BPE_H
#define BPE_H

#include <stddef.h>

typedef struct BPE BPE;

/* NULL on a malformed table, with one line in err. The table must outlive the BPE (it points into it). */
BPE *bpe_open(const unsigned char *table, size_t size, char *err, size_t err_size);
void bpe_close(BPE *bpe);

/* Token ids of len bytes of text into tokens (never more than len of them): the count, or -1 if more
   than max_tokens would be needed, or out of memory. */
int bpe_encode(const BPE *bpe, const char *text, size_t len, int *tokens, int max_tokens);

/* The bytes of one token (not NUL-terminated), or NULL for an id the tokenizer does not have. */
const unsigned char *bpe_decode(const BPE *bpe, int token, size_t *len);

int bpe_vocab_size(const BPE *bpe);  // 50257
int bpe_eot_token(const BPE *bpe);   // 50256, <|endoftext|>

#endif
