#pragma once
// A throwaway PKI for TLS tests: a CA, a server certificate for localhost/127.0.0.1 and a
// client certificate, all P-256 and valid for two days, made with the openssl command
// (scripts/lib.sh installs it).

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

namespace quantserve::testing {

struct TestPki {
  std::string dir;
  std::string ca_crt() const { return dir + "/ca.crt"; }
  std::string server_crt() const { return dir + "/server.crt"; }
  std::string server_key() const { return dir + "/server.key"; }
  std::string client_crt() const { return dir + "/client.crt"; }
  std::string client_key() const { return dir + "/client.key"; }
  std::string Read(const std::string& path) const {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
};

// Writes the files into `dir` (which must exist). False when openssl failed; its output is
// in dir/openssl.log.
inline bool MakeTestPki(const std::string& dir, TestPki* out) {
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string sign = " -CA ca.crt -CAkey ca.key -CAcreateserial -days 2";
  const std::string script =
      "set -e; cd '" + dir + "'; exec >openssl.log 2>&1;" +
      "openssl req -x509" + ec + " -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca;" +
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext;" +
      "openssl req" + ec + " -keyout server.key -out server.csr -subj /CN=localhost;" +
      "openssl x509 -req -in server.csr" + sign + " -extfile san.ext -out server.crt;" +
      "openssl req" + ec + " -keyout client.key -out client.csr -subj /CN=client;" +
      "openssl x509 -req -in client.csr" + sign + " -out client.crt";
  out->dir = dir;
  return std::system(script.c_str()) == 0;
}

}  // namespace quantserve::testing
