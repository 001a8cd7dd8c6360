#include "models/tokenizer/post_processor.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace quantserve::models::internal {
namespace {

// One element of a template: the sequence itself, or a special token's ids.
struct Piece {
  bool is_sequence = false;
  std::vector<int32_t> ids;
};

// Covers TemplateProcessing, BertProcessing and RobertaProcessing: special ids around $A.
class TemplateProcessor final : public PostProcessor {
 public:
  explicit TemplateProcessor(std::vector<Piece> pieces) : pieces_(std::move(pieces)) {}

  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    if (!add_special_tokens) {
      return;
    }
    std::vector<int32_t> out;
    for (const Piece& piece : pieces_) {
      const std::vector<int32_t>& part = piece.is_sequence ? *ids : piece.ids;
      out.insert(out.end(), part.begin(), part.end());
    }
    ids->swap(out);
  }

 private:
  const std::vector<Piece> pieces_;
};

class NoOpProcessor final : public PostProcessor {
 public:
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}

  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const override {
    for (const auto& step : steps_) {
      step->Process(ids, add_special_tokens);
    }
  }

 private:
  const std::vector<std::unique_ptr<PostProcessor>> steps_;
};

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", path, ": ", what));
}

// Reads ["[CLS]", 101] (BertProcessing / RobertaProcessing "cls" and "sep").
absl::StatusOr<int32_t> TokenIdPair(const Json& config, absl::string_view key,
                                    absl::string_view path) {
  const std::string field = FieldPath(path, key);
  if (!config.contains(key)) {
    return Invalid(field, "missing");
  }
  const Json& pair = config[std::string(key)];
  if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() ||
      !pair[1].is_number_integer() || pair[1].get<int64_t>() < 0 ||
      pair[1].get<int64_t>() > INT32_MAX) {
    return Invalid(field, "must be [token, id]");
  }
  return static_cast<int32_t>(pair[1].get<int64_t>());
}

absl::StatusOr<std::vector<int32_t>> SpecialTokenIds(const Json& specials, const std::string& id,
                                                     absl::string_view path) {
  const std::string field = FieldPath(path, "special_tokens");
  if (!specials.is_object() || !specials.contains(id)) {
    return Invalid(field, absl::StrCat("template uses '", id, "' which is not defined here"));
  }
  const Json& entry = specials[id];
  const std::string entry_path = absl::StrCat(field, ".", id);
  QS_ASSIGN_OR_RETURN(const Json* ids_json, GetArray(entry, "ids", entry_path));
  std::vector<int32_t> ids;
  for (const Json& v : *ids_json) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      return Invalid(entry_path, "ids must be non-negative 32-bit integers");
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

// One template element: {"Sequence": {"id": "A", ...}}, {"SpecialToken": {"id": ...}}, or the
// string shorthand "$A" / "$B" / "$0" / "[CLS]" (optionally ":type_id").
absl::StatusOr<Piece> ParsePiece(const Json& item, const Json& specials, absl::string_view path) {
  std::optional<std::string> special;
  std::string sequence;
  if (item.is_string()) {
    std::string text = item.get<std::string>();
    if (size_t colon = text.rfind(':'); colon != std::string::npos && colon > 0) {
      uint32_t unused_type_id;
      if (absl::SimpleAtoi(absl::string_view(text).substr(colon + 1), &unused_type_id)) {
        text.resize(colon);
      }
    }
    if (!text.empty() && text[0] == '$') {
      uint32_t unused_type_id;
      const std::string rest = text.substr(1);
      sequence = rest.empty() || absl::SimpleAtoi(rest, &unused_type_id) ? "A" : rest;
    } else {
      special = text;
    }
  } else if (item.is_object() && item.contains("Sequence")) {
    QS_ASSIGN_OR_RETURN(sequence, GetString(item["Sequence"], "id", "A", path));
  } else if (item.is_object() && item.contains("SpecialToken")) {
    QS_ASSIGN_OR_RETURN(std::string id, GetString(item["SpecialToken"], "id", "", path));
    special = std::move(id);
  } else {
    return Invalid(path, "template items must be Sequence or SpecialToken");
  }
  Piece piece;
  if (special.has_value()) {
    QS_ASSIGN_OR_RETURN(piece.ids, SpecialTokenIds(specials, *special, path));
    return piece;
  }
  if (sequence != "A" && sequence != "a") {
    return Invalid(path, absl::StrCat("a single-sequence template cannot use $", sequence));
  }
  piece.is_sequence = true;
  return piece;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> CreatePostProcessor(const Json& config,
                                                                   absl::string_view path) {
  QS_ASSIGN_OR_RETURN(const std::string type, GetType(config, path));
  if (type == "TemplateProcessing") {
    QS_ASSIGN_OR_RETURN(const Json* single, GetArray(config, "single", path));
    const Json empty = Json::object();
    const Json& specials = config.contains("special_tokens") ? config["special_tokens"] : empty;
    std::vector<Piece> pieces;
    for (size_t i = 0; i < single->size(); ++i) {
      QS_ASSIGN_OR_RETURN(
          Piece piece,
          ParsePiece((*single)[i], specials, absl::StrCat(FieldPath(path, "single"), "[", i, "]")));
      pieces.push_back(std::move(piece));
    }
    return std::make_unique<TemplateProcessor>(std::move(pieces));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    QS_ASSIGN_OR_RETURN(const int32_t cls, TokenIdPair(config, "cls", path));
    QS_ASSIGN_OR_RETURN(const int32_t sep, TokenIdPair(config, "sep", path));
    std::vector<Piece> pieces(3);
    pieces[0].ids = {cls};
    pieces[1].is_sequence = true;
    pieces[2].ids = {sep};
    return std::make_unique<TemplateProcessor>(std::move(pieces));
  }
  if (type == "ByteLevel") {
    return std::make_unique<NoOpProcessor>();
  }
  if (type == "Sequence") {
    QS_ASSIGN_OR_RETURN(
        auto steps, ParseSequence<PostProcessor>(config, "processors", path, &CreatePostProcessor));
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer.json: unsupported post_processor type '", type, "' at ", path));
}

}  // namespace quantserve::models::internal
