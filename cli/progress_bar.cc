#include "cli/progress_bar.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quantserve::cli {

void ProgressBar::Update(const std::string& phase, int64_t tensors_done, int64_t tensors_total,
                         int64_t bytes_done, int64_t bytes_total, double seconds) {
  constexpr double kMB = 1024.0 * 1024.0;
  if (!interactive_) {
    if (phase != last_phase_) {
      out_ << absl::StrFormat("load: %s (%.1f s)\n", phase, seconds);
      last_phase_ = phase;
    }
    return;
  }
  double fraction = 0;
  if (bytes_total > 0) {
    fraction = static_cast<double>(bytes_done) / static_cast<double>(bytes_total);
  } else if (tensors_total > 0) {
    fraction = static_cast<double>(tensors_done) / static_cast<double>(tensors_total);
  }
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * width_ + 0.5);
  std::string line = absl::StrFormat("\r%-13s [%s%s]", phase, std::string(filled, '#'),
                                     std::string(width_ - filled, '.'));
  if (tensors_total > 0) {
    absl::StrAppend(&line, absl::StrFormat("  %d/%d tensors", tensors_done, tensors_total));
  }
  if (bytes_total > 0) {
    absl::StrAppend(&line, absl::StrFormat("  %.1f/%.1f MB", bytes_done / kMB, bytes_total / kMB));
  }
  absl::StrAppend(&line, absl::StrFormat("  %.1f s\x1b[K", seconds));
  out_ << line << std::flush;
  line_open_ = true;
  last_phase_ = phase;
}

void ProgressBar::Finish() {
  if (line_open_) {
    out_ << "\n";
    line_open_ = false;
  }
}

}  // namespace quantserve::cli
