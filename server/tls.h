#pragma once
// The gRPC port's transport security: plaintext, TLS, or mutual TLS.
//
// With a certificate and key the server speaks TLS only; with a client CA too, clients must
// present a certificate that CA signed (mutual TLS). The files are watched and re-read every
// `refresh_seconds`, so a rotated cert-manager Secret takes effect without a restart (gRPC's
// FileWatcherCertificateProvider; a half-written rotation keeps the previous credentials).
// The metrics endpoint is separate and stays plain HTTP.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace quantserve::server {

struct TlsOptions {
  std::string cert_file{};       // PEM certificate chain; "" = plaintext
  std::string key_file{};        // PEM private key; required with cert_file
  std::string client_ca_file{};  // PEM CA bundle; "" = no client certificates asked for
  unsigned refresh_seconds = 10;
};

// "plaintext", "tls" or "mutual_tls", for the startup line.
std::string TlsMode(const TlsOptions& options);

// Credentials for AddListeningPort. INVALID_ARGUMENT when only one of cert/key is set or a
// client CA comes without them; NOT_FOUND / INVALID_ARGUMENT naming the file when one cannot
// be read or holds no PEM block of the expected kind (checked here, so a bad file stops the
// server at startup instead of failing every handshake).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options);

}  // namespace quantserve::server
