#include "models/tokenizer/model.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/tokenizer/bpe_model.h"
#include "models/tokenizer/word_piece_model.h"

namespace quantserve::models::internal {

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const Json& config, absl::string_view path) {
  // Old files omit model.type; like HF, tell the two apart by their fields.
  std::string type;
  if (config.is_object() && !config.contains("type") && config.contains("merges")) {
    type = "BPE";
  } else if (config.is_object() && !config.contains("type") &&
             config.contains("continuing_subword_prefix")) {
    type = "WordPiece";
  } else {
    QS_ASSIGN_OR_RETURN(type, GetType(config, path));
  }
  if (type == "BPE") {
    QS_ASSIGN_OR_RETURN(auto model, BpeModel::Create(config, path));
    return std::unique_ptr<Model>(std::move(model));
  }
  if (type == "WordPiece") {
    QS_ASSIGN_OR_RETURN(auto model, WordPieceModel::Create(config, path));
    return std::unique_ptr<Model>(std::move(model));
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: unsupported model type '", type,
                                                 "' at ", path, " (supported: BPE, WordPiece)"));
}

}  // namespace quantserve::models::internal
