/* The RoBERTa byte-level BPE tokenizer of CLAP's text tower (roberta-base's vocab.json and
 * merges.txt), giving the same ids as transformers' RobertaTokenizer called the way MusicLDM's
 * CLAP calls it: tokenizer(text, padding="max_length", truncation=True, max_length=L).
 *
 *   ids  = <s> t1 t2 ... tk </s> <pad> ... <pad>        (max_len of them)
 *   mask =  1  1  1  ...  1   1    0   ...   0
 *
 * with k = min(number of text tokens, max_len - 2): truncation drops text tokens from the
 * right and always keeps </s>. (MusicLDM's CLAP uses max_len 512; 77 is HTSAT's unused
 * context_length.) With max_len 2 and a non-empty text, transformers' slow tokenizer logs an
 * error and returns the text untruncated; mcm gives <s></s>, as RobertaTokenizerFast does.
 *
 * How a text becomes tokens (add_prefix_space=False, as in roberta-base):
 *  1. the special tokens <s> </s> <unk> <pad> <mask> written in the text are split out and
 *     kept as their ids; <mask> also removes the whitespace (Python's str.isspace()) before it;
 *  2. every other stretch is cut by GPT-2's pattern
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     (case-sensitive; letter / number / whitespace classes from data/unicode_tables.c);
 *  3. each piece's UTF-8 bytes become GPT-2's byte-level characters (printable Latin-1 bytes
 *     stand for themselves, the others for U+0100 + k), which BPE merges by rank (the lowest
 *     ranked adjacent pair first, all its occurrences left to right, until none applies);
 *  4. each resulting token maps to its vocab id, or to <unk> when the vocabulary lacks it.
 *
 * Thread safety: a loaded Tokenizer is never modified; any number of threads may call
 * tokenizer_encode / tokenizer_token_to_id on it at once.
 */
#pragma once
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Tokenizer Tokenizer;

/* Loads vocab.json (a JSON object: token -> non-negative integer id, no repeated keys) and
 * merges.txt (an optional "#version" first line, then one "left right" pair per line, ranked
 * by order; blank lines are skipped; CRLF line ends are accepted). The vocabulary must hold
 * the five RoBERTa special tokens. Errors (NULL, with the file and line in err): a missing or
 * unreadable file, malformed JSON, a non-integer or out-of-range id, a merges line that is
 * not two tokens, a repeated merge, text that is not UTF-8. */
Tokenizer *tokenizer_load(const char *vocab_json, const char *merges_txt, McmErr *err);
void tokenizer_free(Tokenizer *t); /* NULL is a no-op */

/* Encodes a NUL-terminated UTF-8 text into exactly max_len ids and mask values (see the top
 * of this file); mask may be NULL. Returns the number of real tokens (<s> and </s>
 * included, 2..max_len), or -1 with err set for text that is not valid UTF-8 (overlong forms,
 * surrogates and code points above U+10FFFF included) or max_len < 2; ids and mask are then
 * left unspecified. */
int tokenizer_encode(const Tokenizer *t, const char *text, int max_len, int32_t *ids, int32_t *mask,
                     McmErr *err);

/* The id of a vocabulary entry, spelled as in vocab.json (byte-level form: "Ġthe" for " the"),
 * or -1 when the vocabulary has no such token. */
int tokenizer_token_to_id(const Tokenizer *t, const char *token);

/* The largest id in the vocabulary plus one (the text tower's embedding rows). */
int tokenizer_vocab_size(const Tokenizer *t);

/* Pre-tokenisation alone (steps 1-2 above), for building vocabularies (data/bpe_train.h):
 * calls piece(ctx, s, n) with the UTF-8 bytes of each piece of plain text, in order; the
 * special tokens written in the text are left out (with the whitespace <mask> eats). Returns
 * 0, or -1 with err for a NULL text or text that is not valid UTF-8. */
int tokenizer_pretokenize(const char *text, void (*piece)(void *ctx, const char *s, size_t n), void *ctx,
                          McmErr *err);

/* GPT-2's byte-to-unicode map (step 3): the code point that stands for byte b (0..255). */
uint32_t tokenizer_byte_char(int b);

/* The special tokens' ids: roberta-base has <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> 50264. */
typedef struct TokenizerSpecials {
  int32_t bos, pad, eos, unk, mask;
} TokenizerSpecials;
TokenizerSpecials tokenizer_specials(const Tokenizer *t);

#ifdef __cplusplus
}
#endif
