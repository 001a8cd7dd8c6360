#pragma once
// Bearer-token authorization of the gRPC services.
//
// Every RPC has a scope (RpcScopes): admin RPCs change what the server serves (LoadModel,
// UnloadModel, SaveModel, SetRoute, DeleteRoute), inference RPCs use it (Generate, Embed,
// Score, Tokenize, Compare) and so do the model service's reads (GetModel, ListModels,
// ListRoutes); health and reflection are separate services and never checked. With an admin
// token file, admin RPCs need `authorization: Bearer <token>` naming one of its tokens; with an
// inference token file, inference RPCs need one of its tokens or an admin token. A missing or
// malformed header is UNAUTHENTICATED, a token not in the set PERMISSION_DENIED. Without a
// file, that scope is open (the default: a server behind a private network or a mesh).
//
// Token files hold one token per line; blank lines and lines starting with '#' are ignored.
// They are re-read when their modification time or size changes (checked at most once per
// `reload_interval`), so a rotated Kubernetes Secret takes effect without a restart; a file
// that cannot be read or holds no token keeps the previous tokens and is logged. Tokens are
// compared in time independent of their content and never logged.
//
// Thread-safety: Check may be called concurrently.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"

namespace quantserve::server {

enum class RpcScope { kAdmin, kInference };

// The scope of an RPC by its short name ("LoadModel"); NOT_FOUND for a name not in the table
// (a test keeps the table in step with the services' descriptors).
absl::StatusOr<RpcScope> ScopeOfRpc(absl::string_view rpc);

// Parses a token file's text. INVALID_ARGUMENT when it holds no token or a token with
// whitespace or control characters inside.
absl::StatusOr<std::vector<std::string>> ParseTokenFile(absl::string_view text);

// True when `a` equals one of `set`, in time that depends only on the sizes involved.
bool ContainsTokenConstantTime(const std::vector<std::string>& set, absl::string_view a);

class Authenticator {
 public:
  struct Options {
    std::string admin_token_file{};      // "" = admin RPCs are open
    std::string inference_token_file{};  // "" = inference RPCs are open
    absl::Duration reload_interval = absl::Seconds(1);
  };

  // Reads the files. INVALID_ARGUMENT/NOT_FOUND naming the file when one cannot be read or
  // holds no token: a server told to require tokens never starts open.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const Options& options);

  // OK when `rpc`'s scope is open or `authorization` (the header's value, "" when absent)
  // names one of its tokens. UNAUTHENTICATED / PERMISSION_DENIED otherwise.
  absl::Status Check(absl::string_view rpc, absl::string_view authorization);

  bool admin_required() const { return !options_.admin_token_file.empty(); }
  bool inference_required() const { return !options_.inference_token_file.empty(); }

 private:
  struct TokenFile {
    std::string path;
    int64_t mtime_ns = 0;
    int64_t size = -1;
    std::vector<std::string> tokens;
  };

  explicit Authenticator(const Options& options) : options_(options) {}
  // Re-reads `file` when it changed. On failure keeps the old tokens (logged once per change).
  static absl::Status Reload(TokenFile& file);
  void MaybeReload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  absl::Mutex mu_;
  absl::Time next_check_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  TokenFile admin_ ABSL_GUARDED_BY(mu_);
  TokenFile inference_ ABSL_GUARDED_BY(mu_);
};

// Check() with the call's authorization header; OK when `auth` is null (no tokens set).
absl::Status Authorize(Authenticator* auth, const grpc::CallbackServerContext* context,
                       absl::string_view rpc);

}  // namespace quantserve::server
