#pragma once
// Fakes for server tests: a ServableModel with deterministic output and controllable timing,
// and a ModelLoader that picks its behaviour from the model directory's name.
//
// FakeModel::Generate produces `max_new_tokens` tokens on a thread of its own (standing in for
// the engine's scheduler thread), one chunk per token: token i of a prompt of n bytes has id
// 1000 + n + i and text "t<i> ". A prompt containing "[block]" blocks after its first token
// until cancelled or until FakeStats::Unblock(); "[eos]" ends after 2 tokens with kEos.
// FakeModel::Embed returns {bytes, 1, 0} per text (normalized when asked) and blocks on
// "[block]" texts the same way.
//
// The loader looks at the last path component: "broken*" fails with DATA_LOSS after the
// config phase, "slow*" waits in the weights phase until FakeStats::ReleaseLoads(), "embed*"
// gives an embedding model; anything else a generation model. quant_method comes from the
// request's quantization_config (default "none").

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine_api.h"
#include "server/model_registry.h"

namespace quantserve::server::testing {

// Score with full_distributions: every position's log-softmax row over kFakeVocab entries,
// from logits sharpness * ((j * 37) % 11) / 3 with sharpness 1 for quant_method "none" and
// 0.8 otherwise (so a quantized fake differs from an unquantized one).
inline constexpr int kFakeVocab = 256;
std::vector<float> FakeDistribution(const std::string& quant_method);

// What the fakes did, shared between a test and every model its loader made.
struct FakeStats {
  std::atomic<int> loads{0};
  std::atomic<int> generations{0};
  std::atomic<int> cancels{0};
  std::atomic<int> shutdowns{0};
  std::atomic<int> blocked{0};  // generations/embeds currently waiting on "[block]"
  absl::Duration token_delay = absl::ZeroDuration();

  // Lets every "[block]" request go on.
  void Unblock() {
    absl::MutexLock lock(&mu);
    unblocked = true;
  }
  // Lets every "slow*" load go on.
  void ReleaseLoads() {
    absl::MutexLock lock(&mu);
    loads_released = true;
  }
  // Waits until `n` requests are blocked; false after the timeout.
  bool WaitForBlocked(int n, absl::Duration timeout = absl::Seconds(5)) const;

  mutable absl::Mutex mu;
  bool unblocked ABSL_GUARDED_BY(mu) = false;
  bool loads_released ABSL_GUARDED_BY(mu) = false;
  // LoadOptions::calibration_texts of the latest load.
  std::vector<std::string> last_calibration_texts ABSL_GUARDED_BY(mu);
};

ModelLoader MakeFakeLoader(std::shared_ptr<FakeStats> stats);

}  // namespace quantserve::server::testing
