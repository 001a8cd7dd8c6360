#include "server/model_registry.h"

#include <algorithm>
#include <exception>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace quantserve::server {
namespace internal {

// One name's lifecycle. The fields after `mu` change only through the transitions below,
// under `mu`; the registry's own lock (if needed) is always taken first.
struct ModelEntry {
  ModelEntry(std::string name, std::string path, std::string resolved_path,
             std::string requested_quant_method)
      : name(std::move(name)),
        path(std::move(path)),
        resolved_path(std::move(resolved_path)),
        started(absl::Now()) {
    labels.model = this->name;
    labels.quant_method = std::move(requested_quant_method);
  }

  const std::string name;
  const std::string path;
  const std::string resolved_path;
  const absl::Time started;  // when the load was accepted

  mutable absl::Mutex mu;
  ModelState state ABSL_GUARDED_BY(mu) = ModelState::kLoading;
  bool gone ABSL_GUARDED_BY(mu) = false;  // removed from the registry
  std::string reason ABSL_GUARDED_BY(mu);
  ModelLabels labels ABSL_GUARDED_BY(mu);
  engine::LoadProgress progress ABSL_GUARDED_BY(mu);
  std::unique_ptr<engine::ServableModel> model ABSL_GUARDED_BY(mu);
  std::optional<engine::ModelDescription> description ABSL_GUARDED_BY(mu);
  double load_seconds ABSL_GUARDED_BY(mu) = 0;
  int64_t in_flight ABSL_GUARDED_BY(mu) = 0;
  std::map<uint64_t, std::function<void()>> cancellers ABSL_GUARDED_BY(mu);
  // An unload gave up waiting; whoever releases the last handle schedules the finalization.
  bool finalize_when_drained ABSL_GUARDED_BY(mu) = false;

  bool Drained() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return in_flight == 0; }

  absl::Status Illegal(absl::string_view transition) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", name, "' is ", ModelStateName(state), "; cannot ", transition));
  }

  // LOADING -> READY.
  absl::Status MarkReady(std::unique_ptr<engine::ServableModel> loaded, double seconds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (state != ModelState::kLoading) {
      return Illegal("become READY");
    }
    description = loaded->description();
    labels.quant_method = description->quant_method.empty() ? "none" : description->quant_method;
    load_seconds = description->load_seconds > 0 ? description->load_seconds : seconds;
    model = std::move(loaded);
    state = ModelState::kReady;
    reason.clear();
    return absl::OkStatus();
  }

  // LOADING -> FAILED.
  absl::Status MarkFailed(const absl::Status& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (state != ModelState::kLoading) {
      return Illegal("become FAILED");
    }
    state = ModelState::kFailed;
    reason = absl::StrCat(absl::StatusCodeToString(error.code()), ": ", error.message());
    return absl::OkStatus();
  }

  // READY -> UNLOADING.
  absl::Status BeginUnload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (state != ModelState::kReady) {
      return Illegal("unload it (only READY or FAILED models can be unloaded)");
    }
    state = ModelState::kUnloading;
    return absl::OkStatus();
  }

  // UNLOADING -> gone (once drained) or FAILED -> gone.
  absl::Status Remove() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (gone ||
        !((state == ModelState::kUnloading && in_flight == 0) || state == ModelState::kFailed)) {
      return Illegal("remove it");
    }
    gone = true;
    return absl::OkStatus();
  }

  ModelSnapshot Snapshot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ModelSnapshot s;
    s.name = name;
    s.path = path;
    s.state = state;
    s.reason = reason;
    s.labels = labels;
    s.description = description;
    s.progress = progress;
    if (state == ModelState::kLoading) {
      s.load_elapsed_seconds = absl::ToDoubleSeconds(absl::Now() - started);
    } else {
      s.load_elapsed_seconds = load_seconds;
    }
    s.in_flight = in_flight;
    return s;
  }
};

}  // namespace internal

namespace {

using common::Kv;
using internal::ModelEntry;

std::string LoadingReason(const engine::LoadProgress& progress) {
  if (progress.phase.empty()) {
    return "queued";
  }
  if (progress.tensors_total > 0) {
    return absl::StrCat(progress.phase, " ", progress.tensors_done, "/", progress.tensors_total,
                        " tensors");
  }
  return progress.phase;
}

}  // namespace

// ---- ModelHandle ----

ModelHandle::ModelHandle(ModelRegistry* registry, std::shared_ptr<ModelEntry> entry, uint64_t id,
                         engine::ServableModel* model, ModelLabels labels)
    : registry_(registry),
      entry_(std::move(entry)),
      id_(id),
      model_(model),
      labels_(std::move(labels)) {}

ModelHandle::ModelHandle(ModelHandle&& other) noexcept
    : registry_(other.registry_),
      entry_(std::move(other.entry_)),
      id_(other.id_),
      model_(other.model_),
      labels_(std::move(other.labels_)) {
  other.model_ = nullptr;
}

ModelHandle& ModelHandle::operator=(ModelHandle&& other) noexcept {
  if (this != &other) {
    Release();
    registry_ = other.registry_;
    entry_ = std::move(other.entry_);
    id_ = other.id_;
    model_ = other.model_;
    labels_ = std::move(other.labels_);
    other.model_ = nullptr;
  }
  return *this;
}

ModelHandle::~ModelHandle() { Release(); }

const engine::ModelDescription& ModelHandle::description() const { return model_->description(); }

const std::string& ModelHandle::name() const { return entry_->name; }

void ModelHandle::SetCanceller(std::function<void()> cancel) {
  absl::MutexLock lock(&entry_->mu);
  entry_->cancellers[id_] = std::move(cancel);
}

void ModelHandle::Release() {
  if (entry_ == nullptr) {
    return;
  }
  bool finalize = false;
  std::function<void()> canceller;  // destroyed outside the lock: it may own anything
  {
    absl::MutexLock lock(&entry_->mu);
    --entry_->in_flight;
    if (auto it = entry_->cancellers.find(id_); it != entry_->cancellers.end()) {
      canceller = std::move(it->second);
      entry_->cancellers.erase(it);
    }
    if (entry_->in_flight == 0 && entry_->finalize_when_drained) {
      entry_->finalize_when_drained = false;
      finalize = true;
    }
  }
  if (finalize) {
    registry_->ScheduleFinalize(std::move(entry_));
  }
  entry_.reset();
  model_ = nullptr;
}

// ---- ModelRegistry ----

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Create(Options options) {
  if (!options.loader) {
    return absl::InvalidArgumentError("ModelRegistry: loader is required");
  }
  if (options.load_threads < 1 || options.unload_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("ModelRegistry: load_threads (",
                                                   options.load_threads, ") and unload_threads (",
                                                   options.unload_threads, ") must be >= 1"));
  }
  if (options.default_drain_timeout < absl::ZeroDuration() ||
      options.cancel_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ModelRegistry: default_drain_timeout and cancel_grace must be >= 0");
  }
  std::error_code ec;
  std::filesystem::path root = std::filesystem::canonical(options.model_root, ec);
  if (ec || !std::filesystem::is_directory(root, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model_root '", options.model_root, "' is not an existing directory"));
  }
  options.model_root = root.string();
  auto load_pool = ThreadPool::Create({.name = "load", .num_threads = options.load_threads});
  if (!load_pool.ok()) {
    return load_pool.status();
  }
  auto unload_pool = ThreadPool::Create({.name = "unload", .num_threads = options.unload_threads});
  if (!unload_pool.ok()) {
    return unload_pool.status();
  }
  auto registry = std::unique_ptr<ModelRegistry>(new ModelRegistry(std::move(options)));
  registry->load_pool_ = *std::move(load_pool);
  registry->unload_pool_ = *std::move(unload_pool);
  return registry;
}

ModelRegistry::ModelRegistry(Options options) : options_(std::move(options)) {}

ModelRegistry::~ModelRegistry() { Shutdown(absl::ZeroDuration()); }

void ModelRegistry::NotifyState(ModelEntry& entry) const {
  // Called with entry.mu held, so observers see transitions in order.
  if (options_.metrics != nullptr) {
    if (entry.gone) {
      options_.metrics->RemoveModel(entry.name);
    } else {
      options_.metrics->SetModelState(entry.labels, entry.state);
    }
  }
  if (options_.on_serving_changed) {
    options_.on_serving_changed(entry.name, !entry.gone && entry.state == ModelState::kReady);
  }
}

absl::Status ModelRegistry::StartLoad(const LoadRequest& request, ProgressCallback on_progress,
                                      LoadDoneCallback on_done) {
  if (absl::Status s = ValidateLoadRequest(request); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::string> resolved = ResolveModelPath(options_.model_root, request.path,
                                                              options_.allow_symlinks_outside_root);
  if (!resolved.ok()) {
    return resolved.status();
  }
  auto entry = std::make_shared<ModelEntry>(request.name, request.path, *resolved,
                                            RequestedQuantMethod(request.quantization_config_json));
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return absl::UnavailableError("server is shutting down; not loading new models");
    }
    auto it = entries_.find(request.name);
    if (it != entries_.end()) {
      absl::MutexLock entry_lock(&it->second->mu);
      return absl::AlreadyExistsError(absl::StrCat(
          "name: model '", request.name, "' already exists (", ModelStateName(it->second->state),
          it->second->state == ModelState::kFailed ? "; unload it to reuse the name" : "", ")"));
    }
    entries_.emplace(request.name, entry);
    ++loads_running_;
    absl::MutexLock entry_lock(&entry->mu);
    NotifyState(*entry);
  }
  const std::string requested_method = RequestedQuantMethod(request.quantization_config_json);
  QS_LOG(INFO) << "model load queued" << Kv("model", request.name) << Kv("path", *resolved)
               << Kv("quant_method",
                     requested_method.empty() ? "(checkpoint's)" : requested_method);
  engine::LoadOptions load_options;
  load_options.name = request.name;
  load_options.path = *resolved;
  load_options.quantization_config_json = request.quantization_config_json;
  load_options.dtype = request.dtype.empty() ? "auto" : request.dtype;
  load_options.device_map = request.device_map.empty() ? "cpu" : request.device_map;
  load_options.max_memory_json = request.max_memory_json;
  load_options.num_threads =
      request.num_threads > 0 ? request.num_threads : options_.default_num_threads;
  load_options.calibration_texts = request.calibration_texts;
  load_options.activation_bits = request.kernel_activations == "int8" ? 8 : 16;
  load_options.max_batch_size = options_.batching.max_batch_size;
  load_options.max_prefill_tokens = options_.batching.max_prefill_tokens;
  load_options.kv_cache_bytes = options_.batching.kv_cache_bytes;
  load_options.max_queued = options_.batching.max_queued;
  load_options.deterministic = options_.batching.deterministic;
  bool queued = load_pool_->TrySchedule([this, entry, load_options = std::move(load_options),
                                         on_progress = std::move(on_progress),
                                         on_done = std::move(on_done)]() mutable {
    RunLoad(std::move(entry), std::move(load_options), std::move(on_progress), std::move(on_done));
  });
  if (!queued) {
    // The pool only refuses work while the registry is being destroyed.
    absl::MutexLock lock(&mu_);
    entries_.erase(request.name);
    --loads_running_;
    return absl::UnavailableError("server is shutting down; not loading new models");
  }
  return absl::OkStatus();
}

absl::Status ModelRegistry::StartSave(absl::string_view name, absl::string_view path,
                                      int64_t max_shard_bytes, SaveDoneCallback on_done) {
  QS_ASSIGN_OR_RETURN(std::string resolved, ResolveNewModelPath(options_.model_root, path));
  QS_ASSIGN_OR_RETURN(ModelHandle handle, Acquire(name));
  // The pin keeps the model (and an unload's drain) waiting until the files are written.
  auto pinned = std::make_shared<ModelHandle>(std::move(handle));
  QS_LOG(INFO) << "model save queued" << Kv("model", std::string(name)) << Kv("path", resolved);
  const bool queued = load_pool_->TrySchedule(
      [pinned, resolved, max_shard_bytes, requested = std::string(path),
       on_done = std::move(on_done)]() mutable {
        engine::SaveOptions o{.output_dir = resolved, .max_shard_bytes = max_shard_bytes};
        absl::StatusOr<engine::SaveResult> result = pinned->model().Save(o);
        pinned.reset();
        if (!result.ok()) {
          on_done(result.status());
          return;
        }
        on_done(SaveDone{.path = std::move(requested), .result = *std::move(result)});
      });
  if (!queued) return absl::UnavailableError("server is shutting down; not saving models");
  return absl::OkStatus();
}

void ModelRegistry::RunLoad(EntryPtr entry, engine::LoadOptions load_options,
                            ProgressCallback on_progress, LoadDoneCallback on_done) {
  auto report = [&](const engine::LoadProgress& progress) {
    double elapsed = absl::ToDoubleSeconds(absl::Now() - entry->started);
    bool new_phase = false;
    {
      absl::MutexLock lock(&entry->mu);
      new_phase = entry->progress.phase != progress.phase;
      entry->progress = progress;
      entry->reason = LoadingReason(progress);
    }
    if (new_phase) {
      QS_LOG(INFO) << "model load phase" << Kv("model", entry->name) << Kv("phase", progress.phase)
                   << Kv("seconds", elapsed);
    }
    if (on_progress) {
      on_progress(progress, elapsed);
    }
  };
  absl::StatusOr<std::unique_ptr<engine::ServableModel>> loaded;
  try {
    loaded = options_.loader(load_options, report);
  } catch (const std::exception& e) {
    loaded = absl::InternalError(absl::StrCat("loader threw: ", e.what()));
  }
  if (loaded.ok() && *loaded == nullptr) {
    loaded = absl::InternalError("loader returned no model");
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - entry->started);

  absl::StatusOr<ModelSnapshot> outcome;
  {
    absl::MutexLock lock(&entry->mu);
    absl::Status transition = loaded.ok() ? entry->MarkReady(*std::move(loaded), seconds)
                                          : entry->MarkFailed(loaded.status());
    if (!transition.ok()) {
      outcome = transition;  // cannot happen: nothing else moves a LOADING entry
    } else if (entry->state == ModelState::kReady) {
      if (options_.metrics != nullptr) {
        options_.metrics->RecordModelLoad(entry->labels, absl::StatusCode::kOk,
                                          entry->load_seconds);
        options_.metrics->SetModelFacts(entry->labels, entry->description->memory_footprint_bytes,
                                        entry->description->parameters,
                                        entry->description->peak_load_memory_bytes);
        options_.metrics->SetModelKernels(entry->labels, entry->description->kernels,
                                          entry->description->kv_cache_budget_bytes);
      }
      outcome = entry->Snapshot();
    } else {
      if (options_.metrics != nullptr) {
        options_.metrics->RecordModelLoad(entry->labels, loaded.status().code(), seconds);
      }
      outcome = loaded.status();
    }
    NotifyState(*entry);
  }
  if (outcome.ok()) {
    const engine::ModelDescription& d = *outcome->description;
    QS_LOG(INFO) << "model ready" << Kv("model", entry->name) << Kv("phase", "ready")
                 << Kv("seconds", outcome->load_elapsed_seconds)
                 << Kv("architecture", d.architecture) << Kv("quant_method", d.quant_method)
                 << Kv("dtype", d.dtype) << Kv("device", d.device)
                 << Kv("memory_bytes", d.memory_footprint_bytes) << Kv("parameters", d.parameters);
  } else {
    QS_LOG(ERROR) << "model load failed" << Kv("model", entry->name) << Kv("phase", "failed")
                  << Kv("seconds", seconds)
                  << Kv("code", absl::StatusCodeToString(outcome.status().code()))
                  << Kv("error", outcome.status().message());
  }
  if (on_done) {
    on_done(std::move(outcome));
  }
  absl::MutexLock lock(&mu_);
  --loads_running_;
}

namespace {

// Runs an asynchronous Start*(..., done) call and blocks until `done` has fired.
template <typename T, typename Start>
absl::StatusOr<T> StartAndWait(Start start) {
  absl::Notification done;
  absl::StatusOr<T> result;
  absl::Status started = start([&](absl::StatusOr<T> outcome) {
    result = std::move(outcome);
    done.Notify();
  });
  if (!started.ok()) {
    return started;
  }
  done.WaitForNotification();
  return result;
}

}  // namespace

absl::StatusOr<ModelSnapshot> ModelRegistry::Load(const LoadRequest& request,
                                                  ProgressCallback on_progress) {
  return StartAndWait<ModelSnapshot>([&](LoadDoneCallback done) {
    return StartLoad(request, std::move(on_progress), std::move(done));
  });
}

absl::Status ModelRegistry::StartUnload(absl::string_view name, absl::Duration drain_timeout,
                                        UnloadDoneCallback on_done) {
  if (drain_timeout <= absl::ZeroDuration()) {
    drain_timeout = options_.default_drain_timeout;
  }
  const absl::Time deadline = absl::Now() + drain_timeout;
  EntryPtr entry;
  ModelState previous;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return absl::UnavailableError("server is shutting down; models are being unloaded");
    }
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' not found"));
    }
    entry = it->second;
    absl::MutexLock entry_lock(&entry->mu);
    previous = entry->state;
    if (previous == ModelState::kFailed) {
      if (absl::Status s = entry->Remove(); !s.ok()) {
        return s;
      }
      entries_.erase(it);
    } else if (absl::Status s = entry->BeginUnload(); !s.ok()) {
      return s;
    }
    NotifyState(*entry);
  }
  QS_LOG(INFO) << "model unload started" << Kv("model", name)
               << Kv("previous_state", ModelStateName(previous))
               << Kv("drain_timeout_seconds", absl::ToDoubleSeconds(drain_timeout));
  std::function<void()> work;
  if (previous == ModelState::kFailed) {
    work = [on_done = std::move(on_done), name = std::string(name)] {
      if (on_done) {
        on_done(UnloadResult{.name = name, .previous_state = ModelState::kFailed});
      }
    };
  } else {
    work = [this, entry, deadline, on_done = std::move(on_done)]() mutable {
      RunUnload(std::move(entry), deadline, std::move(on_done));
    };
  }
  if (!unload_pool_->TrySchedule(work)) {
    work();  // only while the registry is being destroyed
  }
  return absl::OkStatus();
}

int64_t ModelRegistry::Drain(ModelEntry& entry, absl::Time deadline) {
  std::vector<std::function<void()>> cancellers;
  int64_t remaining = 0;
  {
    bool drained =
        entry.mu.LockWhenWithDeadline(absl::Condition(&entry, &ModelEntry::Drained), deadline);
    remaining = entry.in_flight;
    if (!drained) {
      for (auto& [id, cancel] : entry.cancellers) {
        cancellers.push_back(cancel);
      }
    }
    entry.mu.Unlock();
    if (drained) {
      return 0;
    }
  }
  QS_LOG(WARNING) << "drain timeout; cancelling in-flight requests" << Kv("model", entry.name)
                  << Kv("in_flight", remaining) << Kv("cancellable", cancellers.size());
  for (auto& cancel : cancellers) {
    cancel();
  }
  entry.mu.LockWhenWithTimeout(absl::Condition(&entry, &ModelEntry::Drained),
                               options_.cancel_grace);
  remaining = entry.in_flight;
  entry.mu.Unlock();
  return remaining;
}

void ModelRegistry::RunUnload(EntryPtr entry, absl::Time drain_deadline,
                              UnloadDoneCallback on_done) {
  const absl::Time start = absl::Now();
  if (Drain(*entry, drain_deadline) > 0) {
    int64_t remaining = 0;
    {
      absl::MutexLock lock(&entry->mu);
      remaining = entry->in_flight;
      entry->finalize_when_drained = remaining > 0;
    }
    if (remaining > 0) {
      QS_LOG(WARNING) << "model unload gave up waiting; freeing it when its requests finish"
                      << Kv("model", entry->name) << Kv("in_flight", remaining);
      if (on_done) {
        on_done(absl::DeadlineExceededError(absl::StrCat(
            "model '", entry->name, "' still has ", remaining,
            " request(s) in flight after the drain timeout and cancellation; it stays UNLOADING "
            "and is freed once they finish")));
      }
      return;
    }
  }
  Finalize(entry);
  if (on_done) {
    on_done(UnloadResult{.name = entry->name,
                         .previous_state = ModelState::kReady,
                         .seconds = absl::ToDoubleSeconds(absl::Now() - start)});
  }
}

void ModelRegistry::Finalize(const EntryPtr& entry) {
  std::unique_ptr<engine::ServableModel> model;
  {
    absl::MutexLock lock(&entry->mu);
    if (absl::Status s = entry->Remove(); !s.ok()) {
      QS_LOG(ERROR) << "model finalize refused" << Kv("model", entry->name)
                    << Kv("error", s.message());
      return;
    }
    model = std::move(entry->model);
    NotifyState(*entry);
  }
  const absl::Time start = absl::Now();
  if (model != nullptr) {
    model->Shutdown();
    model.reset();
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(entry->name);
    if (it != entries_.end() && it->second == entry) {
      entries_.erase(it);
    }
  }
  QS_LOG(INFO) << "model unloaded" << Kv("model", entry->name)
               << Kv("shutdown_seconds", absl::ToDoubleSeconds(absl::Now() - start));
}

void ModelRegistry::ScheduleFinalize(EntryPtr entry) {
  if (!unload_pool_->TrySchedule([this, entry] { Finalize(entry); })) {
    QS_LOG(ERROR) << "cannot schedule model finalization; doing it inline"
                  << Kv("model", entry->name);
    Finalize(entry);
  }
}

absl::StatusOr<UnloadResult> ModelRegistry::Unload(absl::string_view name,
                                                   absl::Duration drain_timeout) {
  return StartAndWait<UnloadResult>([&](UnloadDoneCallback done) {
    return StartUnload(name, drain_timeout, std::move(done));
  });
}

absl::StatusOr<ModelHandle> ModelRegistry::Acquire(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' not found"));
  }
  const EntryPtr& entry = it->second;
  absl::MutexLock entry_lock(&entry->mu);
  switch (entry->state) {
    case ModelState::kReady:
      ++entry->in_flight;
      return ModelHandle(this, entry, next_handle_id_++, entry->model.get(), entry->labels);
    case ModelState::kLoading:
      return absl::UnavailableError(
          absl::StrCat("model '", name, "' is LOADING (", LoadingReason(entry->progress), ")"));
    case ModelState::kUnloading:
      return absl::UnavailableError(absl::StrCat("model '", name, "' is UNLOADING"));
    case ModelState::kFailed:
      return absl::UnavailableError(absl::StrCat("model '", name, "' is FAILED: ", entry->reason));
  }
  return absl::InternalError("unknown model state");
}

absl::StatusOr<ModelSnapshot> ModelRegistry::Get(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' not found"));
  }
  absl::MutexLock entry_lock(&it->second->mu);
  return it->second->Snapshot();
}

std::vector<ModelSnapshot> ModelRegistry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelSnapshot> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) {
    absl::MutexLock entry_lock(&entry->mu);
    out.push_back(entry->Snapshot());
  }
  return out;
}

bool ModelRegistry::NoLoadsRunning() const { return loads_running_ == 0; }
bool ModelRegistry::NoEntries() const { return entries_.empty(); }

void ModelRegistry::Shutdown(absl::Duration drain_timeout) {
  const absl::Time deadline = absl::Now() + std::max(drain_timeout, absl::ZeroDuration());
  std::vector<EntryPtr> to_drain;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      mu_.Await(absl::Condition(&shut_down_));
      return;
    }
    shutting_down_ = true;
    if (loads_running_ > 0) {
      QS_LOG(INFO) << "shutdown waits for running model loads" << Kv("loads", loads_running_);
    }
    mu_.Await(absl::Condition(this, &ModelRegistry::NoLoadsRunning));
    for (auto it = entries_.begin(); it != entries_.end();) {
      EntryPtr entry = it->second;
      absl::MutexLock entry_lock(&entry->mu);
      if (entry->state == ModelState::kFailed) {
        (void)entry->Remove();
        NotifyState(*entry);
        it = entries_.erase(it);
        continue;
      }
      if (entry->state == ModelState::kReady) {
        (void)entry->BeginUnload();
        NotifyState(*entry);
        to_drain.push_back(entry);
      }
      ++it;
    }
  }
  for (const EntryPtr& entry : to_drain) {
    if (Drain(*entry, deadline) > 0) {
      entry->mu.Lock();
      while (!entry->mu.AwaitWithTimeout(absl::Condition(entry.get(), &ModelEntry::Drained),
                                         absl::Seconds(10))) {
        QS_LOG(WARNING) << "shutdown still waiting for requests" << Kv("model", entry->name)
                        << Kv("in_flight", entry->in_flight);
      }
      entry->mu.Unlock();
    }
    Finalize(entry);
  }
  absl::MutexLock lock(&mu_);
  while (
      !mu_.AwaitWithTimeout(absl::Condition(this, &ModelRegistry::NoEntries), absl::Seconds(10))) {
    QS_LOG(WARNING) << "shutdown still waiting for unloads" << Kv("models", entries_.size());
  }
  shut_down_ = true;
}

}  // namespace quantserve::server
