// Pipeline parallelism, independent of the model: the schedules (1F1B and
// GPipe) as per-stage step lists, the communication plan derived from them,
// the executor that runs one stage's forward/backward callbacks in that order
// while exchanging activations and gradients with the neighbouring stages, the
// ideal bubble figures, and the partition of a model's units into stages.
//
// Stages and ranks: the stage of a rank is its rank in the pipeline group
// (ProcessGrid::pp_group()); stage s receives activations from s-1 and
// gradients from s+1, and sends to them, nobody else.
//
// What every rank must call: run_pipeline() on every rank of the pipeline
// group with the same schedule and micro-batch count. It is not a collective
// (each stage talks only to its neighbours) but a stage whose neighbour never
// calls it waits until the communicator's watchdog ends the job.
//
// Deadlock freedom: every communication of a stage is one Communicator::
// send_recv, which posts its sends and receives together. Where the schedule
// sends after one step and receives before the next, both go in one send_recv
// (Megatron's send_forward_recv_backward and send_backward_recv_forward in the
// 1F1B steady state). tests/unit/parallel/test_pipeline_schedule.cpp plays
// every stage's plan in lockstep under the worst case for blocking (a send
// completes only once the receiver has posted the matching receive) and shows
// it completes for every stage count and micro-batch count it tries.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel {

enum class PipelineSchedule { OneFOneB, GPipe };

// "1f1b" or "gpipe" (for logs and configs); parse throws std::invalid_argument
// naming the accepted values.
std::string schedule_name(PipelineSchedule schedule);
PipelineSchedule parse_schedule(const std::string& name);

enum class StepKind { Forward, Backward };

struct PipelineStep {
  StepKind kind;
  int64_t micro_batch;
  bool operator==(const PipelineStep& other) const { return kind == other.kind && micro_batch == other.micro_batch; }
};

// The ordered compute steps of `stage` (0-based) out of `stages` for
// `micro_batches` micro-batches. Every micro-batch is forwarded once and
// backwarded once, after its forward.
//
// GPipe: all forwards 0..m-1, then all backwards in the same order 0..m-1.
// The order is free (every activation is kept until the end either way);
// first-in-first-out matches 1F1B, so both schedules add each parameter's
// micro-batch gradients in the same order and give bitwise-equal gradients.
//
// 1F1B (PipeDream-flush, as Megatron): a warmup of min(stages - stage - 1, m)
// forwards, then a steady state of one forward followed by one backward while
// forwards remain, then the cooldown backwards. At most stages - stage
// micro-batches are in flight (forwarded, not yet backwarded) on a stage,
// whatever m, instead of GPipe's m. m < stages is fine (warmup is cut to m).
//
// With one stage both schedules are plain gradient accumulation: forward then
// backward per micro-batch, so only one micro-batch's activations live at a
// time. Throws std::invalid_argument for stages < 1, stage outside
// [0, stages) or micro_batches < 1.
std::vector<PipelineStep> pipeline_steps(PipelineSchedule schedule, int64_t stages, int64_t stage,
                                         int64_t micro_batches);

// One message of the plan: the activations of a micro-batch travel from stage
// s to s+1, its gradients from s+1 to s.
enum class MessageKind { Activation, Gradient };

struct PipelineMessage {
  MessageKind kind;
  int64_t micro_batch;
  int64_t peer;  // the stage sent to or received from
  bool operator==(const PipelineMessage& other) const {
    return kind == other.kind && micro_batch == other.micro_batch && peer == other.peer;
  }
};

// One action of a stage: a compute step, or one exchange (a send_recv) with at
// most one message each way.
struct PipelineAction {
  enum class Type { Compute, Exchange };
  Type type = Type::Compute;
  PipelineStep step{StepKind::Forward, 0};  // Compute only
  std::optional<PipelineMessage> send;      // Exchange only
  std::optional<PipelineMessage> recv;      // Exchange only
};

// pipeline_steps() with the communication put in: a receive right before each
// step that needs one (the activations before a forward on stages > 0, the
// output gradients before a backward on stages < last) and a send right after
// each step that produces one; a send followed by a receive becomes one
// exchange. This is exactly the sequence run_pipeline() executes.
std::vector<PipelineAction> pipeline_plan(PipelineSchedule schedule, int64_t stages, int64_t stage,
                                          int64_t micro_batches);

// The ideal bubble of both schedules with p stages and m micro-batches, when
// every stage takes the same time per micro-batch and communication is free:
// each stage idles for (p-1) micro-batch forward+backward times of a step of
// (m+p-1) such times.
//   ideal_bubble_ratio    = (p-1)/m       bubble time / ideal compute time (the
//                                         figure of the GPipe and Megatron papers)
//   ideal_bubble_fraction = (p-1)/(m+p-1) bubble time / whole step time
// Compare PipelineStats::bubble_ratio() with the first, idle_fraction() with
// the second. Throw std::invalid_argument for p < 1 or m < 1.
double ideal_bubble_ratio(int64_t stages, int64_t micro_batches);
double ideal_bubble_fraction(int64_t stages, int64_t micro_batches);

// What one stage computes. Tensors of one micro-batch travel as a list (e.g.
// the decoder hidden states and the encoder output); the list a stage's
// forward returns must match the next stage's input_buffers in count, shape
// and dtype. Gradients travel back for the floating-point tensors of the list
// only (a mask or token ids travel forward and get no gradient).
struct PipelineStageCallbacks {
  // Empty tensors (right shape, dtype, device; contiguous) to receive this
  // micro-batch's inputs from the previous stage into. Not called on the first
  // stage.
  std::function<std::vector<torch::Tensor>(int64_t micro_batch)> input_buffers;
  // Forward of this stage. `inputs` are the received tensors, leaves with
  // requires_grad set where floating-point (empty on the first stage). Returns
  // the tensors to send to the next stage (on the last stage: whatever the
  // backward needs, e.g. the loss; nothing is sent).
  std::function<std::vector<torch::Tensor>(int64_t micro_batch, const std::vector<torch::Tensor>& inputs)> forward;
  // Backward of this stage: `outputs` are what forward returned,
  // `output_grads` their gradients received from the next stage (same length,
  // undefined for non-floating outputs; empty on the last stage). The callback
  // runs autograd (it may add its own loss terms); afterwards the executor
  // sends each floating input's grad() (zeros if undefined) to the previous
  // stage.
  std::function<void(int64_t micro_batch, const std::vector<torch::Tensor>& outputs,
                     const std::vector<torch::Tensor>& output_grads)>
      backward;
};

// For backward callbacks of stages that send to a next stage: runs autograd
// from the outputs that require grad, seeded with their received gradients
// (outputs[i] with output_grads[i]; outputs that do not require grad or have
// no gradient are skipped). An output that is one of the stage's own inputs
// passed through unchanged (an encoder output every decoder stage reads)
// simply adds its received gradient to that input's grad(), which is how such
// a gradient sums over every stage that uses it. Throws std::invalid_argument
// when the lists differ in length.
void backward_from_outputs(const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& output_grads);

// Measured by run_pipeline() on one stage. Times are wall seconds.
struct PipelineStats {
  int64_t stage = 0;
  int64_t stages = 1;
  int64_t micro_batches = 0;
  double forward_s = 0;   // inside the forward callback
  double backward_s = 0;  // inside the backward callback and reading input grads
  double wait_s = 0;      // inside send_recv: blocked on a neighbour or moving data
  double total_s = 0;     // the whole run_pipeline() call
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  int64_t exchanges = 0;      // send_recv calls
  int64_t max_in_flight = 0;  // most micro-batches forwarded and not yet backwarded at once

  // Stage 0 runs from the first forward to the last backward of the step;
  // later stages finish earlier (the cooldown gradients travel back to stage
  // 0), so their idle share of their own call is smaller than the bubble.
  double compute_s() const { return forward_s + backward_s; }
  // Time not spent computing, relative to the whole step (compare with
  // ideal_bubble_fraction) and to the compute time (compare with
  // ideal_bubble_ratio). 0 when nothing was timed.
  double idle_fraction() const;
  double bubble_ratio() const;
};

// Runs this rank's stage of the pipeline over `micro_batches` micro-batches in
// the order of pipeline_plan(). Each micro-batch's inputs, outputs and
// received gradients are held from its forward until its backward (and, for
// the input gradients, until they are sent), then released. With a pipeline
// group of one rank it runs forward then backward per micro-batch and does not
// communicate. Throws std::invalid_argument for micro_batches < 1 or a missing
// callback, std::runtime_error when a callback returns an undefined tensor,
// and passes on CommunicatorError (e.g. a non-contiguous input buffer) and
// whatever the callbacks throw.
PipelineStats run_pipeline(PipelineSchedule schedule, int64_t micro_batches, Communicator& pp_group,
                           const PipelineStageCallbacks& callbacks);

// Forward only (evaluation, typically under torch::NoGradGuard): each
// micro-batch in turn, its inputs received from the previous stage into
// input_buffers(mb), forward(mb, inputs) run, and its outputs sent to the
// next stage. The backward callback is not used. Stages overlap as in a
// pipeline's warmup: stage s forwards micro-batch i while s+1 forwards i-1.
// Every rank of the pipeline group must call it with the same micro-batch
// count. Throws as run_pipeline.
PipelineStats run_forward_pipeline(int64_t micro_batches, Communicator& pp_group,
                                   const PipelineStageCallbacks& callbacks);

// Stage partition of a model given as a sequence of units (for the
// encoder-decoder: [embed, enc_0..enc_E-1, enc_norm, dec_0..dec_D-1, dec_norm,
// lm_head]) with a non-negative cost each (e.g. parameter counts). A
// partition is the first unit index of each stage: starts[0] == 0, strictly
// increasing, every stage non-empty.

// The partition into `stages` contiguous non-empty stages minimising the
// largest stage cost (exact). Among optimal partitions, the one whose start
// indices are lexicographically smallest: each stage from the first takes as
// few units as the optimum allows, leaving the remainder to later stages,
// which under 1F1B hold fewer micro-batches' activations (stage s holds up to
// stages - s). Throws std::invalid_argument for a negative cost, stages < 1
// or more stages than units.
std::vector<int64_t> partition_stages(const std::vector<int64_t>& unit_costs, int64_t stages);

// Checks explicit cut points (the unit indices where stages 1..stages-1
// begin) against `units` units and returns the partition {0, cuts...}.
// Throws std::invalid_argument naming the problem: fewer units than stages,
// the wrong number of cut points, a cut point out of [0, units], one below the
// one before, or one that would leave a stage empty (0, units, or equal to
// the one before).
std::vector<int64_t> partition_from_cuts(const std::vector<int64_t>& cuts, int64_t units, int64_t stages);

// The summed cost of each stage of `starts`; throws std::invalid_argument if
// `starts` is not a partition of unit_costs.size() units.
std::vector<int64_t> stage_costs(const std::vector<int64_t>& unit_costs, const std::vector<int64_t>& starts);

}  // namespace moetrain::parallel
