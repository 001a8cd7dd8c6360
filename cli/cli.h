#pragma once
// quantserve-cli: a command-line client for quantserve's gRPC API.
//
//   quantserve-cli [--server=HOST:PORT] [--json] [--timeout_seconds=S] <verb> [args] [flags]
//
// Verbs: load, unload, list, get, generate, embed, score, tokenize (see `--help` and
// `<verb> --help`). Every verb prints human-readable output, or with --json the protobuf
// messages as JSON, one per line (streams print every message).
//
// Exit codes: 0 success, 1 the RPC failed (its code and message go to stderr), 2 usage error.
// The CLI talks to the server only through the public API (proto + gRPC).

#include <ostream>
#include <string>
#include <vector>

namespace quantserve::cli {

struct CliIo {
  std::ostream& out;         // results (generated text, tables, JSON)
  std::ostream& err;         // progress, summaries, errors
  bool interactive = false;  // err is a terminal: draw the load progress bar in place
};

// Runs the CLI on `args` (without the program name); returns the exit code.
int RunCli(const std::vector<std::string>& args, const CliIo& io);

}  // namespace quantserve::cli
