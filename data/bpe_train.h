/* Builds a RoBERTa-style byte-level BPE vocabulary (vocab.json + merges.txt, the files
 * data/tokenizer.h loads) from a set of texts: the demo text tower's vocabulary is built from
 * the demo captions this way (tools/build_vocab).
 *
 * Training, as HuggingFace's ByteLevelBPETokenizer does it:
 *  1. every text is pre-tokenised exactly as tokenizer_encode reads it
 *     (tokenizer_pretokenize: special tokens left out, GPT-2's pattern), and the pieces are
 *     counted as words;
 *  2. each word starts as its bytes, spelled with GPT-2's byte-level characters;
 *  3. repeatedly, the adjacent pair of symbols with the highest count over all words
 *     (weighted by word frequency) is merged everywhere (left to right, non-overlapping), and
 *     the merge is recorded; ties go to the pair whose (left, right) strings come first in
 *     byte order, so the result never depends on hashing or input order of equal counts
 *     (HuggingFace breaks ties on internal ids instead, so equal-count merges may come in a
 *     different order there);
 *  4. it stops when the vocabulary holds vocab_size entries or no pair occurs at least
 *     min_frequency times.
 *
 * Layout of vocab.json (that of tests/fixtures/tokenizer/ and roberta-base): <s> 0, <pad> 1,
 * </s> 2, <unk> 3; then all 256 byte-level characters in code-point order (ids 4..259, so
 * any text encodes without <unk>); then the merged tokens in the order of their first merge;
 * <mask> last. Two merges can spell the same token ("a"+"bc", "ab"+"c"): both are kept in
 * merges.txt and the token has one id. merges.txt is "#version: 0.2" and one "left right"
 * line per merge, by rank.
 */
#pragma once
#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The smallest vocab_size: 4 specials + 256 bytes + <mask>. */
#define BPE_MIN_VOCAB 261

/* Trains on texts[0..n) (NUL-terminated UTF-8) and writes out_dir/vocab.json and
 * out_dir/merges.txt, each atomically (core/io.h); out_dir and its parents are created when
 * missing. vocab_size counts every entry (specials, bytes, merges, <mask>): at least
 * BPE_MIN_VOCAB. min_frequency >= 1. Returns the number of merges written (>= 0), or -1 with
 * err naming the text or value at fault (NULL text, invalid UTF-8, a size out of range, a
 * directory or file that cannot be written); nothing is written then, or the old files stay. */
int bpe_train(const char *const *texts, int n, int vocab_size, int min_frequency, const char *out_dir, McmErr *err);

#ifdef __cplusplus
}
#endif
