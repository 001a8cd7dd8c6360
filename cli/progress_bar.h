#pragma once
// ProgressBar: renders LoadModel progress on a terminal (stderr).
//
// On a terminal it redraws one line in place:
//   weights       [############............]  12/30 tensors   412.3/1031.0 MB   3.2 s
// Elsewhere (pipes, logs, tests) it prints one plain line per phase instead.

#include <cstdint>
#include <ostream>
#include <string>

namespace quantserve::cli {

class ProgressBar {
 public:
  ProgressBar(std::ostream& out, bool interactive, int width = 24)
      : out_(out), interactive_(interactive), width_(width) {}

  void Update(const std::string& phase, int64_t tensors_done, int64_t tensors_total,
              int64_t bytes_done, int64_t bytes_total, double seconds);
  // Ends the bar's line (if one is open).
  void Finish();

 private:
  std::ostream& out_;
  const bool interactive_;
  const int width_;
  std::string last_phase_;
  bool line_open_ = false;
};

}  // namespace quantserve::cli
