#include "models/tokenizer/bpe_model.h"

#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "models/tokenizer/unicode.h"

namespace quantserve::models::internal {
namespace {

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Reads "merges" in either serialization: ["a b", ...] (legacy) or [["a", "b"], ...].
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseMerges(
    const Json& config, absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const Json* items, GetArray(config, "merges", path));
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(items->size());
  for (size_t i = 0; i < items->size(); ++i) {
    const Json& item = (*items)[i];
    if (item.is_string()) {
      const std::string& line = item.get_ref<const std::string&>();
      if (i == 0 && line.rfind("#version", 0) == 0) {
        continue;
      }
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      if (parts.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, ".merges[", i,
                                                       "] must be two tokens separated by one "
                                                       "space, got '",
                                                       line, "'"));
      }
      merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
    } else if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string()) {
      merges.emplace_back(item[0].get<std::string>(), item[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, ".merges[", i,
                                                     "] must be \"a b\" or [\"a\", \"b\"]"));
    }
  }
  return merges;
}

// A symbol of the word being merged; a merged-away symbol has len 0.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  uint32_t len;
};

struct Candidate {
  uint32_t rank;
  int32_t pos;
  int32_t new_id;
};

// Orders the priority queue so the lowest rank, then the leftmost position, pops first.
struct CandidateAfter {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const Json& config,
                                                           absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const Json* vocab_json, GetObject(config, "vocab", path));
  QS_ASSIGN_OR_RETURN(Vocab vocab, ParseVocab(*vocab_json, FieldPath(path, "vocab")));
  auto model = std::unique_ptr<BpeModel>(new BpeModel(std::move(vocab)));

  const Json* dropout = config.contains("dropout") ? &config["dropout"] : nullptr;
  if (dropout != nullptr && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", FieldPath(path, "dropout"),
                                                   ": BPE dropout is training-only and not "
                                                   "supported; set it to null"));
  }
  QS_ASSIGN_OR_RETURN(model->fuse_unk_, GetBool(config, "fuse_unk", false, path));
  QS_ASSIGN_OR_RETURN(model->byte_fallback_, GetBool(config, "byte_fallback", false, path));
  QS_ASSIGN_OR_RETURN(model->ignore_merges_, GetBool(config, "ignore_merges", false, path));
  QS_ASSIGN_OR_RETURN(model->continuing_subword_prefix_,
                      GetString(config, "continuing_subword_prefix", "", path));
  QS_ASSIGN_OR_RETURN(model->end_of_word_suffix_,
                      GetString(config, "end_of_word_suffix", "", path));
  QS_ASSIGN_OR_RETURN(const std::optional<std::string> unk,
                      GetOptionalString(config, "unk_token", path));
  if (unk.has_value()) {
    model->unk_id_ = model->vocab_.Find(*unk);
    if (!model->unk_id_.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: ", FieldPath(path, "unk_token"), " '", *unk,
                       "' is not in the vocabulary"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    model->byte_ids_[b] = model->vocab_.Find(absl::StrFormat("<0x%02X>", b)).value_or(-1);
  }

  QS_ASSIGN_OR_RETURN(const auto merges, ParseMerges(config, path));
  const size_t prefix_len = model->continuing_subword_prefix_.size();
  model->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const std::optional<int32_t> left_id = model->vocab_.Find(left);
    const std::optional<int32_t> right_id = model->vocab_.Find(right);
    // The merged token drops the right side's continuing-subword prefix.
    const std::optional<int32_t> new_id =
        right.size() >= prefix_len
            ? model->vocab_.Find(absl::StrCat(left, absl::string_view(right).substr(prefix_len)))
            : std::nullopt;
    if (!left_id || !right_id || !new_id) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, ".merges[", rank,
                                                     "] ('", left, "', '", right,
                                                     "') uses a token that is not in the "
                                                     "vocabulary"));
    }
    // A repeated pair keeps its last rank, as HF's map does.
    model->merges_[PairKey(*left_id, *right_id)] = Merge{static_cast<uint32_t>(rank), *new_id};
  }
  return model;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

std::vector<int32_t> BpeModel::MergeWord(absl::string_view piece) const {
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  auto add = [&symbols](int32_t id, uint32_t len) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) {
      symbols.back().next = index;
    }
    symbols.push_back(Symbol{id, index - 1, -1, len});
  };

  // Pending run of unknown characters (byte length; 0 = none), flushed before the next known
  // symbol. Like HF, byte-fallback symbols do not flush it.
  uint32_t unk_len = 0;
  auto flush_unk = [&] {
    if (unk_len > 0) {
      add(*unk_id_, unk_len);
      unk_len = 0;
    }
  };
  std::string text;
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t begin = pos;
    NextCodepoint(piece, &pos);
    const auto byte_len = static_cast<uint32_t>(pos - begin);
    absl::string_view ch = piece.substr(begin, pos - begin);
    text.clear();
    if (begin != 0) {
      text += continuing_subword_prefix_;
    }
    text.append(ch.data(), ch.size());
    if (pos == piece.size()) {
      text += end_of_word_suffix_;
    }
    if (std::optional<int32_t> id = vocab_.Find(text)) {
      flush_unk();
      add(*id, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : text) {
        all_bytes = all_bytes && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      }
      if (all_bytes) {
        for (char c : text) {
          add(byte_ids_[static_cast<unsigned char>(c)], 1);
        }
        continue;
      }
    }
    if (!unk_id_.has_value()) {
      continue;  // no unk token: HF drops the character
    }
    if (!fuse_unk_) {
      flush_unk();
    }
    unk_len += byte_len;
  }
  flush_unk();

  std::priority_queue<Candidate, std::vector<Candidate>, CandidateAfter> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = FindMerge(symbols[i].id, symbols[i + 1].id)) {
      queue.push(Candidate{m->rank, static_cast<int32_t>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& current = symbols[top.pos];
    if (current.len == 0 || current.next == -1) {
      continue;  // stale: merged away, or nothing to its right any more
    }
    const int32_t next_pos = current.next;
    const Symbol right = symbols[next_pos];
    const Merge* m = FindMerge(current.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) {
      continue;  // stale: the pair at this position changed since it was queued
    }
    current.id = top.new_id;
    current.len += right.len;
    current.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0) {
      symbols[right.next].prev = top.pos;
    }
    if (current.prev >= 0) {
      if (const Merge* pm = FindMerge(symbols[current.prev].id, current.id)) {
        queue.push(Candidate{pm->rank, current.prev, pm->new_id});
      }
    }
    if (current.next >= 0) {
      if (const Merge* nm = FindMerge(current.id, symbols[current.next].id)) {
        queue.push(Candidate{nm->rank, top.pos, nm->new_id});
      }
    }
  }

  std::vector<int32_t> ids;
  for (const Symbol& s : symbols) {
    if (s.len != 0) {
      ids.push_back(s.id);
    }
  }
  return ids;
}

void BpeModel::Tokenize(absl::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) {
    return;
  }
  if (ignore_merges_) {
    if (std::optional<int32_t> id = vocab_.Find(piece)) {
      ids->push_back(*id);
      return;
    }
  }
  const bool cacheable = piece.size() < kMaxCachedPieceBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word = MergeWord(piece);
  ids->insert(ids->end(), word.begin(), word.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheCapacity) {
      cache_.emplace(piece, std::move(word));
    }
  }
}

}  // namespace quantserve::models::internal
