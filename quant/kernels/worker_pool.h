#pragma once
// WorkerPool: the threads behind the CPU kernels' matmuls, attention and GEMVs.
//
// A decode step runs ~160 short parallel loops (7 projections and attention per layer), each a
// few tens of microseconds long, with serial glue between them. Between such loops OpenMP's
// workers, as LibTorch ships them, fall asleep on a futex: measured on the 1B bench model, the
// worker slept ~180 times a token, and each wake-up costs tens of microseconds of the step.
// These workers spin for a short while after each range (longer than the glue between two
// loops of a step) and only then sleep, so the loops of a step find them awake; an idle server
// still sleeps.
//
// Up to min(at::get_num_threads(), ceil(range / grain)) threads, the caller one of them, claim
// contiguous pieces of at least `grain` items (about four per thread) from a shared counter, so
// a thread that starts late or reads memory more slowly takes fewer. Every kernel computes each
// output element the same way whatever piece it lands in, so results depend neither on the
// number of threads nor on who ran what. One caller at a time owns the workers: a concurrent caller falls back to
// at::parallel_for, and a call from inside a range runs inline.

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace quantserve::quant::kernels {

// Calls fn(b, e) over contiguous ranges covering [begin, end), in parallel on the process's
// workers. fn must not throw. Returns when every range is done.
void ParallelFor(int64_t begin, int64_t end, int64_t grain,
                 absl::FunctionRef<void(int64_t, int64_t)> fn);

namespace internal {
// Distinct threads the last ParallelFor over `tasks` one-item tasks ran on (tests).
int WorkerPoolThreads(int64_t tasks);
}  // namespace internal

}  // namespace quantserve::quant::kernels
