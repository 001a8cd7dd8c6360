#pragma once
// ServerStream: a server-streaming RPC fed from other threads.
//
// gRPC's ServerWriteReactor allows one write in flight and must be finished exactly once;
// our producers (the engine's scheduler thread for Generate, a load thread for LoadModel)
// must never block and may outlive the RPC. ServerStream sits between them:
//
//   producer (any thread) --Write/Finish--> queue --one StartWrite at a time--> client
//
// * Write() queues and returns at once; WriteLatest() replaces a queued, unsent message
//   instead (progress reports: only the newest matters, so a slow client cannot grow the
//   queue).
// * Finish() ends the stream after the queued messages are written; the first call wins.
// * If the client cancels or the deadline passes, queued messages are dropped, `on_cancel`
//   runs (once, on a gRPC thread; it must not block), and the RPC finishes with CANCELLED or
//   DEADLINE_EXCEEDED.
// * `on_finish` sees the final status exactly once, just before it goes to the client (for
//   metrics and logs).
//
// Lifetime: producers hold a shared_ptr<ServerStream>; the reactor gRPC owns holds one too
// and deletes itself in OnDone, after which every producer call is a harmless no-op. The
// hooks are dropped at OnDone, so they may capture shared state without leaking it.
// The status conversion happens here, once, through ToGrpcStatus.

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/status_conversion.h"

namespace quantserve::server {

template <typename Response>
class ServerStream : public std::enable_shared_from_this<ServerStream<Response>> {
 public:
  struct Hooks {
    // The client went away or the deadline passed. At most once, on a gRPC thread.
    std::function<void()> on_cancel;
    // The final status, exactly once, just before the RPC is finished.
    std::function<void(const absl::Status&)> on_finish;
  };

  // Creates the stream; return reactor() from the RPC method.
  static std::shared_ptr<ServerStream> Create(grpc::CallbackServerContext* context, Hooks hooks) {
    auto stream = std::shared_ptr<ServerStream>(new ServerStream(context, std::move(hooks)));
    auto* reactor = new Reactor(stream);  // deletes itself in OnDone
    stream->reactor_ptr_ = reactor;
    absl::MutexLock lock(&stream->mu_);
    stream->reactor_ = reactor;
    return stream;
  }

  grpc::ServerWriteReactor<Response>* reactor() const { return reactor_ptr_; }

  // Queues `message`. Returns false when the stream has already ended.
  bool Write(Response message) { return Enqueue(std::move(message), /*replace_last=*/false); }
  // Like Write, but replaces the newest queued, unsent message if there is one.
  bool WriteLatest(Response message) { return Enqueue(std::move(message), /*replace_last=*/true); }
  // Ends the stream with `status` once the queued messages are out. First call wins.
  void Finish(absl::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) {
        return;
      }
      finish_requested_ = true;
      final_status_ = std::move(status);
    }
    Pump();
  }
  // True once the client cancelled (or the deadline passed).
  bool cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  class Reactor final : public grpc::ServerWriteReactor<Response> {
   public:
    explicit Reactor(std::shared_ptr<ServerStream> stream) : stream_(std::move(stream)) {}
    void OnWriteDone(bool ok) override { stream_->WriteDone(ok); }
    void OnCancel() override { stream_->Cancelled(); }
    void OnDone() override {
      stream_->Done();
      delete this;
    }

   private:
    const std::shared_ptr<ServerStream> stream_;
  };

  ServerStream(grpc::CallbackServerContext* context, Hooks hooks)
      : context_(context), hooks_(std::move(hooks)) {}

  bool Enqueue(Response message, bool replace_last) {
    {
      absl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || cancelled_ || finish_requested_) {
        return false;
      }
      if (replace_last && !queue_.empty()) {
        queue_.back() = std::move(message);
      } else {
        queue_.push_back(std::move(message));
      }
    }
    Pump();
    return true;
  }

  void WriteDone(bool ok) {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The stream broke (client gone); OnCancel follows or has run. Stop writing.
        queue_.clear();
        broken_ = true;
      }
    }
    Pump();
  }

  void Cancelled() {
    std::function<void()> on_cancel;
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) {
        return;
      }
      cancelled_ = true;
      queue_.clear();
      on_cancel = hooks_.on_cancel;
    }
    if (on_cancel) {
      on_cancel();
    }
    Pump();
  }

  void Done() {
    Hooks hooks;
    {
      absl::MutexLock lock(&mu_);
      reactor_ = nullptr;
      hooks = std::move(hooks_);
      hooks_ = Hooks();
    }
    // `hooks` (and whatever they captured) is released here, outside the lock.
  }

  // Starts the next write, or the finish, if nothing is in flight.
  void Pump() {
    Reactor* reactor = nullptr;
    bool finish = false;
    absl::Status status;
    std::function<void(const absl::Status&)> on_finish;
    {
      absl::MutexLock lock(&mu_);
      if (reactor_ == nullptr || finish_issued_ || writing_) {
        return;
      }
      if (cancelled_ || broken_) {
        finish = true;
        status = DeadlinePassed() ? absl::DeadlineExceededError("deadline exceeded")
                                  : absl::CancelledError("cancelled by the client");
      } else if (!queue_.empty()) {
        in_flight_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = true;
      } else if (finish_requested_) {
        finish = true;
        status = final_status_;
      } else {
        return;
      }
      finish_issued_ = finish;
      reactor = reactor_;
      if (finish) {
        on_finish = hooks_.on_finish;
      }
    }
    // No Finish has been issued, so the reactor cannot have been deleted yet; once it is
    // issued, nothing touches the reactor again.
    if (!finish) {
      reactor->StartWrite(&in_flight_);
      return;
    }
    if (on_finish) {
      on_finish(status);
    }
    reactor->Finish(ToGrpcStatus(status));
  }

  bool DeadlinePassed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return context_->deadline() <= std::chrono::system_clock::now();
  }

  grpc::CallbackServerContext* const context_;  // valid until OnDone
  Reactor* reactor_ptr_ = nullptr;              // for reactor(); set once at creation
  mutable absl::Mutex mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;  // null after OnDone
  Hooks hooks_ ABSL_GUARDED_BY(mu_);
  std::deque<Response> queue_ ABSL_GUARDED_BY(mu_);
  Response in_flight_;  // the message being written; touched only while writing_
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_issued_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace quantserve::server
