#pragma once
// ModelRegistry: the server's models by name, each with an explicit lifecycle.
//
//   StartLoad:   (new) -> LOADING -> READY            on success
//                                -> FAILED (reason)   on error
//   StartUnload: READY -> UNLOADING -> (gone)         after in-flight requests drain
//                FAILED -> (gone)
//
// Each entry has one owner of its state (the registry) and one named transition per arrow;
// any other move is refused with FAILED_PRECONDITION, and the state plus a reason string is
// what users see (ListModels, GetModel, the quantserve_model_state gauge, per-model
// grpc.health.v1 status). This is TF Serving's LoaderHarness, sized for one process.
//
// Loads run on a load pool, never on the caller's (RPC) thread: StartLoad validates, reserves
// the name and returns; progress and completion arrive through callbacks on the load thread.
// The model comes from an injected `ModelLoader`, so the server links the real engine while
// tests inject fakes.
//
// Requests pin a model with Acquire(): the returned ModelHandle keeps the model alive and
// counts as in flight until destroyed. Unloading first stops new handles (UNAVAILABLE), then
// waits for the in-flight ones up to a drain timeout; past it, it runs the cancellers that
// handles registered (generations stop within a decode step) and waits a short grace more.
// Only when no handle remains does it call ServableModel::Shutdown() and free the model, so a
// model never dies under a request. If handles still remain after the grace, the unload
// reports DEADLINE_EXCEEDED and the model is freed when the last of them goes.
//
// Thread-safety: every method may be called from any thread. Callbacks are never invoked with
// the registry's locks held, except `on_serving_changed` and the metrics updates, which are
// delivered in transition order under the entry's lock and must not call back into the
// registry.
// Ownership: the registry owns the models; it must outlive every ModelHandle it returned.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/engine_api.h"
#include "server/load_request.h"
#include "server/model_state.h"
#include "server/server_metrics.h"
#include "server/thread_pool.h"

namespace quantserve::server {

// How every loaded model batches its requests (engine::LoadOptions' batching fields).
struct BatchingOptions {
  int32_t max_batch_size = 32;         // sequences decoded together in one step
  int64_t max_prefill_tokens = 2048;   // prompt tokens prefilled per step / embed batch tokens
  int64_t kv_cache_bytes = 0;          // per model; 0 = max_batch_size full-context sequences
  int32_t max_queued = 256;            // waiting requests per model beyond: RESOURCE_EXHAUSTED
  bool deterministic = false;          // outputs independent of the batch (slower)
};

// Loads one model, blocking the calling (load pool) thread; `engine::LoadServableModel` in
// production, fakes in tests. Must call the progress callback on the calling thread only.
using ModelLoader = std::function<absl::StatusOr<std::unique_ptr<engine::ServableModel>>(
    const engine::LoadOptions&, const engine::LoadProgressCallback&)>;

// A point-in-time view of one entry.
struct ModelSnapshot {
  std::string name{};
  std::string path{};  // as requested (relative to --model_root)
  ModelState state = ModelState::kLoading;
  std::string reason{};  // FAILED: the error; LOADING: the current phase
  ModelLabels labels{};  // model + quant_method, as used in metrics
  std::optional<engine::ModelDescription> description{};  // READY and UNLOADING
  std::optional<engine::LoadProgress> progress{};         // latest (LOADING) or last reported
  double load_elapsed_seconds = 0;  // LOADING: so far; READY: the load's duration
  int64_t in_flight = 0;            // requests holding the model
};

struct UnloadResult {
  std::string name{};
  ModelState previous_state = ModelState::kReady;  // READY or FAILED
  double seconds = 0;                              // draining + shutdown
};

namespace internal {
struct ModelEntry;
}  // namespace internal

class ModelRegistry;

// Pins one READY model for the duration of a request. Movable, not copyable; destroying it
// releases the pin (from any thread, including an engine scheduler thread: releasing never
// blocks).
class ModelHandle {
 public:
  ModelHandle(ModelHandle&& other) noexcept;
  ModelHandle& operator=(ModelHandle&& other) noexcept;
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;
  ~ModelHandle();

  engine::ServableModel& model() const { return *model_; }
  const engine::ModelDescription& description() const;
  const std::string& name() const;
  // The model's metric labels (name and quant_method).
  const ModelLabels& labels() const { return labels_; }

  // Registers how to stop this request early if an unload's drain timeout passes while it is
  // still running (a generation's GenerationHandle::Cancel). Called at most once, from an
  // unload thread, possibly after the request has ended; must not block.
  void SetCanceller(std::function<void()> cancel);

 private:
  friend class ModelRegistry;
  ModelHandle(ModelRegistry* registry, std::shared_ptr<internal::ModelEntry> entry, uint64_t id,
              engine::ServableModel* model, ModelLabels labels);
  void Release();

  ModelRegistry* registry_ = nullptr;
  std::shared_ptr<internal::ModelEntry> entry_;
  uint64_t id_ = 0;
  engine::ServableModel* model_ = nullptr;
  ModelLabels labels_;
};

class ModelRegistry {
 public:
  struct Options {
    // Directory every model path is resolved inside. Required; must exist.
    std::string model_root{};
    // Loads may follow symlinks that lead outside model_root (ResolveModelPath).
    bool allow_symlinks_outside_root = false;
    // Loads a model (see ModelLoader). Required.
    ModelLoader loader{};
    // Threads running loads concurrently; >= 1.
    int load_threads = 2;
    // Threads running unloads (each waits for its model's requests to drain); >= 1.
    int unload_threads = 2;
    // Drain timeout of unloads that do not name one.
    absl::Duration default_drain_timeout = absl::Seconds(30);
    // How long an unload waits, after cancelling the requests still running at its drain
    // timeout, before giving up with DEADLINE_EXCEEDED (the model is freed later).
    absl::Duration cancel_grace = absl::Seconds(5);
    // LoadOptions::num_threads for requests that leave it 0 (0 = the library default).
    int default_num_threads = 0;
    // Batching settings every load gets.
    BatchingOptions batching{};
    // Where lifecycle metrics go; optional, must outlive the registry.
    ServerMetrics* metrics = nullptr;
    // Told when a model starts (true: READY) or stops (false: any other state or gone)
    // accepting requests; drives per-model grpc.health.v1 status. Optional.
    std::function<void(const std::string& name, bool serving)> on_serving_changed{};
  };

  // Errors: INVALID_ARGUMENT (missing loader, bad thread counts), NOT_FOUND (model_root is
  // not an existing directory).
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Create(Options options);
  // Shuts down (see Shutdown) with a zero drain timeout if nobody did.
  ~ModelRegistry();

  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Progress of a running load and the seconds since it started; called on the load thread.
  using ProgressCallback = std::function<void(const engine::LoadProgress&, double)>;
  // The READY model's snapshot, or the load's error (the entry is then FAILED); called
  // exactly once, on the load thread.
  using LoadDoneCallback = std::function<void(absl::StatusOr<ModelSnapshot>)>;

  // Validates `request`, resolves its path, reserves its name (LOADING) and queues the load.
  // Returns at once; on OK, `on_done` will be called. Errors (callbacks then never run):
  // INVALID_ARGUMENT naming the field, NOT_FOUND (no such directory), ALREADY_EXISTS (name
  // taken, in any state), UNAVAILABLE (shutting down).
  absl::Status StartLoad(const LoadRequest& request, ProgressCallback on_progress,
                         LoadDoneCallback on_done);
  // StartLoad, then waits for the result (for startup and tests; never on an RPC thread).
  absl::StatusOr<ModelSnapshot> Load(const LoadRequest& request,
                                     ProgressCallback on_progress = nullptr);

  using UnloadDoneCallback = std::function<void(absl::StatusOr<UnloadResult>)>;
  // Begins unloading `name` (READY -> UNLOADING, or removes a FAILED entry) and finishes on an
  // unload thread, calling `on_done` exactly once there. A zero `drain_timeout` means the
  // default. Errors returned at once: NOT_FOUND, FAILED_PRECONDITION (LOADING or already
  // UNLOADING), UNAVAILABLE (shutting down). `on_done` may get DEADLINE_EXCEEDED.
  absl::Status StartUnload(absl::string_view name, absl::Duration drain_timeout,
                           UnloadDoneCallback on_done);
  // StartUnload, then waits for the result.
  absl::StatusOr<UnloadResult> Unload(absl::string_view name,
                                      absl::Duration drain_timeout = absl::ZeroDuration());

  struct SaveDone {
    std::string path;  // as requested
    engine::SaveResult result;
  };
  using SaveDoneCallback = std::function<void(absl::StatusOr<SaveDone>)>;
  // Pins READY model `name` and writes it (engine::ServableModel::Save) to `path`, a new
  // directory inside model_root, on a load thread; `on_done` is called exactly once there.
  // `max_shard_bytes` 0 = the default. Errors returned at once (callback never runs):
  // NOT_FOUND/UNAVAILABLE (as Acquire), INVALID_ARGUMENT/ALREADY_EXISTS (path, see
  // ResolveNewModelPath), UNAVAILABLE (shutting down).
  absl::Status StartSave(absl::string_view name, absl::string_view path, int64_t max_shard_bytes,
                         SaveDoneCallback on_done);

  // Pins a READY model. Errors: NOT_FOUND (unknown name), UNAVAILABLE (LOADING, UNLOADING or
  // FAILED, with the reason).
  absl::StatusOr<ModelHandle> Acquire(absl::string_view name);

  // Errors: NOT_FOUND.
  absl::StatusOr<ModelSnapshot> Get(absl::string_view name) const;
  // Every entry, sorted by name.
  std::vector<ModelSnapshot> List() const;

  // Refuses new loads, waits for running loads, then unloads every model: READY ones drain
  // (up to `drain_timeout`, then their requests are cancelled) and the call returns only once
  // every model is freed. Idempotent.
  void Shutdown(absl::Duration drain_timeout);

  const Options& options() const { return options_; }

 private:
  friend class ModelHandle;
  using EntryPtr = std::shared_ptr<internal::ModelEntry>;

  explicit ModelRegistry(Options options);
  void RunLoad(EntryPtr entry, engine::LoadOptions load_options, ProgressCallback on_progress,
               LoadDoneCallback on_done);
  void RunUnload(EntryPtr entry, absl::Time drain_deadline, UnloadDoneCallback on_done);
  // Waits for `entry`'s requests: until `deadline`, then cancels the rest and waits the grace.
  // Returns the number of requests still in flight after that.
  int64_t Drain(internal::ModelEntry& entry, absl::Time deadline);
  // UNLOADING -> gone: shuts the model down, frees it and forgets the name.
  void Finalize(const EntryPtr& entry);
  // Called when a handle's release leaves an abandoned unload with nothing in flight.
  void ScheduleFinalize(EntryPtr entry);
  bool NoLoadsRunning() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool NoEntries() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells metrics and the health callback about `entry`'s state; caller holds entry.mu.
  void NotifyState(internal::ModelEntry& entry) const ABSL_NO_THREAD_SAFETY_ANALYSIS;

  const Options options_;
  mutable absl::Mutex mu_;  // guards the name map; taken before any entry's lock
  std::map<std::string, EntryPtr, std::less<>> entries_ ABSL_GUARDED_BY(mu_);
  int loads_running_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_handle_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Last members: destroyed first, while everything their closures touch is still alive.
  std::unique_ptr<ThreadPool> load_pool_;
  std::unique_ptr<ThreadPool> unload_pool_;
};

}  // namespace quantserve::server
