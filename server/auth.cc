#include "server/auth.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"

namespace quantserve::server {
namespace {

using common::Kv;

struct ScopeRow {
  const char* rpc;
  RpcScope scope;
};
// Every RPC of ModelService and InferenceService. Reads of the model service share the
// inference scope: whoever may use the models may list them.
constexpr ScopeRow kScopes[] = {
    {"LoadModel", RpcScope::kAdmin},      {"UnloadModel", RpcScope::kAdmin},
    {"SaveModel", RpcScope::kAdmin},      {"SetRoute", RpcScope::kAdmin},
    {"DeleteRoute", RpcScope::kAdmin},    {"ListModels", RpcScope::kInference},
    {"GetModel", RpcScope::kInference},   {"ListRoutes", RpcScope::kInference},
    {"Generate", RpcScope::kInference},   {"Embed", RpcScope::kInference},
    {"Score", RpcScope::kInference},      {"Tokenize", RpcScope::kInference},
    {"Compare", RpcScope::kInference},
};

constexpr absl::string_view kBearer = "Bearer ";

}  // namespace

absl::StatusOr<RpcScope> ScopeOfRpc(absl::string_view rpc) {
  for (const ScopeRow& row : kScopes) {
    if (rpc == row.rpc) return row.scope;
  }
  return absl::NotFoundError(absl::StrCat("no authorization scope for RPC '", rpc, "'"));
}

absl::StatusOr<std::vector<std::string>> ParseTokenFile(absl::string_view text) {
  std::vector<std::string> tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    for (char c : line) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
        // The line number only: the token itself is never repeated in an error.
        return absl::InvalidArgumentError(absl::StrCat(
            "line ", line_no, ": a token may not contain whitespace or control characters"));
      }
    }
    tokens.emplace_back(line);
  }
  if (tokens.empty()) return absl::InvalidArgumentError("holds no token");
  return tokens;
}

bool ContainsTokenConstantTime(const std::vector<std::string>& set, absl::string_view a) {
  // Every token is compared in full, whatever matched before; per token the loop runs over
  // the longer of the two and folds the length difference into the result.
  unsigned found = 0;
  for (const std::string& token : set) {
    unsigned diff = token.size() != a.size() ? 1u : 0u;
    const size_t n = std::max(token.size(), a.size());
    for (size_t i = 0; i < n; ++i) {
      const unsigned char x = i < token.size() ? static_cast<unsigned char>(token[i]) : 0;
      const unsigned char y = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
      diff |= static_cast<unsigned>(x ^ y);
    }
    found |= static_cast<unsigned>(diff == 0);
  }
  return found != 0;
}

absl::Status Authenticator::Reload(TokenFile& file) {
  struct stat st {};
  if (::stat(file.path.c_str(), &st) != 0) {
    const int err = errno;
    return absl::Status(err == ENOENT ? absl::StatusCode::kNotFound
                                      : absl::StatusCode::kPermissionDenied,
                        absl::StrCat(file.path, ": ", std::strerror(err)));
  }
  const int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  const int64_t size = static_cast<int64_t>(st.st_size);
  if (!file.tokens.empty() && mtime_ns == file.mtime_ns && size == file.size) {
    return absl::OkStatus();
  }
  std::ifstream in(file.path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(file.path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::vector<std::string>> tokens = ParseTokenFile(text.str());
  // Remember what was seen, so a bad file is reported once, not on every request.
  file.mtime_ns = mtime_ns;
  file.size = size;
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file.path, ": ", tokens.status().message()));
  }
  const bool first = file.tokens.empty();
  file.tokens = *std::move(tokens);
  if (!first) {
    QS_LOG(INFO) << "token file reloaded" << Kv("path", file.path)
                 << Kv("tokens", static_cast<int64_t>(file.tokens.size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(const Options& options) {
  std::unique_ptr<Authenticator> auth(new Authenticator(options));
  absl::MutexLock lock(&auth->mu_);
  for (auto [path, file] : {std::pair{&options.admin_token_file, &auth->admin_},
                            std::pair{&options.inference_token_file, &auth->inference_}}) {
    if (path->empty()) continue;
    file->path = *path;
    if (absl::Status s = Reload(*file); !s.ok()) return s;
  }
  auth->next_check_ = absl::Now() + options.reload_interval;
  return auth;
}

void Authenticator::MaybeReload() {
  const absl::Time now = absl::Now();
  if (now < next_check_) return;
  next_check_ = now + options_.reload_interval;
  for (TokenFile* file : {&admin_, &inference_}) {
    if (file->path.empty()) continue;
    const int64_t seen_mtime = file->mtime_ns, seen_size = file->size;
    absl::Status s = Reload(*file);
    if (!s.ok() && (file->mtime_ns != seen_mtime || file->size != seen_size ||
                    s.code() == absl::StatusCode::kNotFound)) {
      // A Secret being swapped can be missing for a moment: the old tokens stay in force.
      QS_LOG(WARNING) << "token file not reloaded; the previous tokens stay in force"
                      << Kv("error", s.message());
    }
  }
}

absl::Status Authenticator::Check(absl::string_view rpc, absl::string_view authorization) {
  absl::StatusOr<RpcScope> scope = ScopeOfRpc(rpc);
  if (!scope.ok()) return absl::InternalError(scope.status().message());
  const bool required = *scope == RpcScope::kAdmin ? admin_required() : inference_required();
  if (!required) return absl::OkStatus();
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat(rpc, " needs an 'authorization: Bearer <token>' header"));
  }
  // The scheme is case-insensitive (RFC 7235); the token is not.
  if (!absl::StartsWithIgnoreCase(authorization, kBearer) ||
      authorization.size() == kBearer.size()) {
    return absl::UnauthenticatedError("authorization: expected 'Bearer <token>'");
  }
  const absl::string_view token = authorization.substr(kBearer.size());
  absl::MutexLock lock(&mu_);
  MaybeReload();
  // Admin tokens are accepted everywhere; inference tokens for inference RPCs only.
  bool ok = ContainsTokenConstantTime(admin_.tokens, token);
  if (*scope == RpcScope::kInference) {
    ok = ContainsTokenConstantTime(inference_.tokens, token) || ok;
  }
  if (!ok) {
    return absl::PermissionDeniedError(absl::StrCat("the token does not grant ", rpc));
  }
  return absl::OkStatus();
}

absl::Status Authorize(Authenticator* auth, const grpc::CallbackServerContext* context,
                       absl::string_view rpc) {
  if (auth == nullptr) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  const absl::string_view header =
      it == metadata.end() ? absl::string_view() : absl::string_view(it->second.data(), it->second.size());
  return auth->Check(rpc, header);
}

}  // namespace quantserve::server
