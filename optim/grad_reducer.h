// GradReducer: reduces a backward pass's gradients over the data-parallel
// group bucket by bucket while the backward is still running, the overlap
// PyTorch DDP and Megatron get from their gradient buckets.
//
// A bucket is a run of whole FlatParameters units. Each trainable parameter
// carries a gradient hook. While the reducer is armed, the hook adds the
// parameter's gradient into a flat fp32 target buffer (exactly the addition
// FlatParameters::accumulate_grads_into does, so results are bitwise the same
// as reducing after the backward) and, once every parameter of a bucket has
// reported, hands the bucket to the caller's reduce function.
//
// Order: buckets are reduced in one fixed order on every rank, the reverse of
// the flat layout (the output side of the model first, as the backward
// produces it). A bucket that is complete early waits for the buckets before
// it, so collectives always pair up across ranks even when ranks see their
// gradients in different orders. Parameters that got no gradient (an expert
// no token reached) are settled by finish(), which reduces what is left.
//
// Where the reduce function runs:
//   - on a communication thread (async_thread = true; MPI on CPU): the thread
//     runs the blocking collectives while the backward computes on; the
//     caller must make no call on the same communicator until finish() (MPI
//     must provide MPI_THREAD_MULTIPLE when other communicators are used
//     meanwhile, e.g. expert all-to-alls in the backward);
//   - inline in the hook (async_thread = false; NCCL): the collective is
//     only enqueued, from a side stream (parallel/side_stream.h) so that the
//     backward's later kernels do not wait for it; finish() makes the
//     caller's stream wait for the side stream.
//
// Why the expert-DP reductions and the expert all-to-alls cannot deadlock
// (an expert no token reached has its bucket settled only by finish(), while
// the same bucket is complete early on the other ranks of its expert-DP
// group): a rank never waits for a reduction before finish(). The reductions
// run beside the backward (on the thread, or on the side stream), never in
// its way, so every rank's backward, with its expert all-to-alls in the EP
// group, runs to the end whatever the reductions are doing; then every rank
// calls finish(), which issues its remaining buckets in the same fixed order.
// Each group (DP, expert-DP, EP) thus sees its collectives in one order on
// every rank, and no collective of one group waits on a collective of
// another group that waits on it.
//
// Between arm() and finish() the parameters' .grad fields are filled by
// autograd as usual; finish() releases them (the target holds the values).
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "optim/flat_parameters.h"
#include "parallel/side_stream.h"

namespace moetrain::optim {

struct GradBucket {
  size_t first_unit = 0;  // units [first_unit, last_unit] of the FlatParameters
  size_t last_unit = 0;
  int64_t begin = 0;  // the flat range they cover (padded units)
  int64_t end = 0;
  bool expert = false;  // expert units (reduced over the expert-data-parallel group)
};

class GradReducer {
 public:
  using ReduceFn = std::function<void(const GradBucket&)>;

  // Buckets of consecutive whole units, each at least `min_elems` elements
  // (the last one may be smaller), in reduction order (the end of the flat
  // space first). min_elems <= 0: one bucket per unit. A bucket never mixes
  // expert units with the others (they are reduced over different groups).
  static std::vector<GradBucket> make_buckets(const FlatParameters& params, int64_t min_elems);

  // `buckets` as make_buckets returns them; they must cover every unit.
  GradReducer(FlatParameters& params, std::vector<GradBucket> buckets, bool async_thread);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Arms the hooks for the next backward: gradients go into `target` (fp32,
  // the full flat space, not zeroed here) and complete buckets to `reduce`.
  void arm(torch::Tensor target, ReduceFn reduce);
  // After the backward: reduces the buckets still open, waits for every
  // reduction to finish, disarms, releases .grad. Rethrows a reduce failure.
  void finish();

  const std::vector<GradBucket>& buckets() const { return buckets_; }

 private:
  void on_gradient(size_t entry, const torch::Tensor& grad);
  void mark_ready_locked(size_t bucket);
  // Reduces bucket next_ with the lock released meanwhile; records a failure.
  void reduce_next(std::unique_lock<std::mutex>& lock);
  bool next_is_ready() const;  // mutex_ held
  void run_ready_inline(std::unique_lock<std::mutex>& lock);
  void worker_loop();

  FlatParameters& params_;
  std::vector<GradBucket> buckets_;
  std::vector<size_t> bucket_of_entry_;
  std::vector<int64_t> entries_in_bucket_;
  std::vector<unsigned> hooks_;  // hook handles, one per entry
  bool async_thread_;

  std::mutex mutex_;
  std::condition_variable cv_;
  bool armed_ = false;
  bool stopping_ = false;
  torch::Tensor target_;
  ReduceFn reduce_;
  std::vector<int64_t> pending_;  // gradients still missing, per bucket
  std::vector<bool> ready_;
  size_t next_ = 0;     // the next bucket to reduce, in order
  size_t reduced_ = 0;  // buckets whose reduction has finished
  bool running_inline_ = false;
  std::exception_ptr error_;
  std::thread worker_;
  // The inline (asynchronous communicator) mode's stream for reductions.
  std::unique_ptr<parallel::SideStream> side_stream_;
};

}  // namespace moetrain::optim
