#include "server/tls.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace quantserve::server {
namespace {

// OK when `path` reads and holds a PEM block whose label contains `label` ("CERTIFICATE",
// "PRIVATE KEY"). The contents are never echoed.
absl::Status CheckPem(const std::string& flag, const std::string& path, const char* label) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read '", path, "'"));
  std::ostringstream text;
  text << in.rdbuf();
  const std::string& pem = text.str();
  size_t begin = 0;
  while ((begin = pem.find("-----BEGIN ", begin)) != std::string::npos) {
    const size_t end = pem.find("-----", begin + 11);
    if (end == std::string::npos) break;
    if (absl::StrContains(pem.substr(begin + 11, end - begin - 11), label)) {
      return absl::OkStatus();
    }
    begin = end;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, ": '", path, "' holds no PEM ", label, " block"));
}

}  // namespace

std::string TlsMode(const TlsOptions& options) {
  if (options.cert_file.empty()) return "plaintext";
  return options.client_ca_file.empty() ? "tls" : "mutual_tls";
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  if (options.cert_file.empty()) {
    if (!options.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (absl::Status s = CheckPem("--tls_cert_file", options.cert_file, "CERTIFICATE"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckPem("--tls_key_file", options.key_file, "PRIVATE KEY"); !s.ok()) {
    return s;
  }
  if (!options.client_ca_file.empty()) {
    if (absl::Status s = CheckPem("--tls_client_ca_file", options.client_ca_file, "CERTIFICATE");
        !s.ok()) {
      return s;
    }
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.key_file, options.cert_file, options.client_ca_file,
      std::max(1u, options.refresh_seconds));
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (!options.client_ca_file.empty()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace quantserve::server
