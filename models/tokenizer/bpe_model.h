#pragma once
// Byte-pair encoding (tokenizer.json model.type "BPE"), as in GPT-2, Llama-3 and Qwen2.
//
// A piece starts as one symbol per character and pairs are merged by rank (lowest first, the
// leftmost on ties) with a priority queue, so a word of n characters costs O(n log n). Results
// for short pieces are cached (bounded; thread-safe). Options read from the JSON: vocab, merges
// (both "a b" strings and ["a","b"] pairs), unk_token, fuse_unk, continuing_subword_prefix,
// end_of_word_suffix, byte_fallback, ignore_merges. BPE dropout is training-only and rejected.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "models/tokenizer/model.h"
#include "models/tokenizer/vocab.h"

namespace quantserve::models::internal {

class BpeModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const Json& config,
                                                          absl::string_view path);

  void Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const override;
  std::optional<int32_t> TokenToId(absl::string_view token) const override {
    return vocab_.Find(token);
  }
  const std::string* IdToToken(int32_t id) const override { return vocab_.Token(id); }
  int32_t vocab_size() const override { return vocab_.size(); }
  std::optional<int32_t> unk_id() const override { return unk_id_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  // Pieces at least this long are not cached (HF's limit too).
  static constexpr size_t kMaxCachedPieceBytes = 256;
  static constexpr size_t kCacheCapacity = 10000;

  explicit BpeModel(Vocab vocab) : vocab_(std::move(vocab)) {}
  std::vector<int32_t> MergeWord(absl::string_view piece) const;
  const Merge* FindMerge(int32_t left, int32_t right) const;

  const Vocab vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  int32_t byte_ids_[256];  // byte_fallback: id of "<0xXX>", -1 when absent

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace quantserve::models::internal
