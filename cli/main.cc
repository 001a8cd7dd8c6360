// quantserve-cli: see cli/cli.h.

#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return quantserve::cli::RunCli(
      args, {.out = std::cout, .err = std::cerr, .interactive = isatty(STDERR_FILENO) == 1});
}
