// run_pipeline() on 2 and 4 ranks with the toy model of toy_pipeline.h: the
// loss and every parameter's gradient (gathered over the stages) equal the
// single-process computation of the same model on the same micro-batches
// under 1F1B and GPipe, with fewer and more micro-batches than stages; the
// two schedules agree bitwise; messages of several MB do not deadlock; two
// pipelines run side by side; a one-rank group does not communicate; the
// executor releases each micro-batch after its backward; and the stats add
// up.
#include <gtest/gtest.h>

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "parallel/pipeline.h"
#include "tests/multirank/pipeline/pipeline_test_world.h"
#include "tests/multirank/pipeline/toy_pipeline.h"

namespace moetrain::parallel::pipeline_test {
namespace {

constexpr PipelineSchedule kSchedules[] = {PipelineSchedule::OneFOneB, PipelineSchedule::GPipe};

struct ToyRunOptions {
  double forward_sleep_s = 0;
  double backward_sleep_s = 0;
  bool tag = false;            // also send an int64 tensor holding the micro-batch index
  bool check_release = false;  // check that inputs are released after their backward
};

struct ToyRun {
  PipelineStats stats;
  torch::Tensor grads;  // every parameter's gradient, summed over the stages
  double loss = 0;      // the summed loss, on every rank
};

void sleep_for(double seconds) {
  if (seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

// Runs `model` as a pipeline over `group`, stage = group rank, the units split
// by partition_stages() on parameter counts.
ToyRun run_toy(const ToyModel& model, PipelineSchedule schedule, int64_t m, Communicator& group,
               const ToyRunOptions& options = {}) {
  const int64_t p = group.size(), s = group.rank();
  const bool last = s == p - 1;
  const std::vector<int64_t> starts = partition_stages(model.parameter_counts(), p);
  const int64_t begin = starts[s];
  const int64_t end = s + 1 < p ? starts[s + 1] : model.unit_count();

  double loss_sum = 0;
  int64_t forwards = 0, backwards = 0;
  std::vector<c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>> seen_inputs;

  PipelineStageCallbacks callbacks;
  callbacks.input_buffers = [&](int64_t) {
    std::vector<torch::Tensor> buffers{torch::empty({model.rows, model.width}),
                                       torch::empty({model.rows, model.width})};
    if (options.tag) buffers.push_back(torch::empty({1}, torch::kLong));
    return buffers;
  };
  callbacks.forward = [&](int64_t mb, const std::vector<torch::Tensor>& inputs) {
    sleep_for(options.forward_sleep_s);
    torch::Tensor h, e;
    if (s > 0) {
      EXPECT_EQ(inputs.size(), options.tag ? 3u : 2u);
      EXPECT_TRUE(inputs[0].requires_grad() && inputs[0].is_leaf());
      h = inputs[0];
      e = inputs[1];
      if (options.tag) {
        EXPECT_FALSE(inputs[2].requires_grad());
        EXPECT_EQ(inputs[2].item<int64_t>(), mb) << "stage " << s << " got another micro-batch's tensors";
      }
      if (options.check_release) {
        int64_t alive = 0;
        for (const auto& w : seen_inputs) alive += w.expired() ? 0 : 1;
        EXPECT_EQ(alive, forwards - backwards) << "stage " << s << " keeps inputs of finished micro-batches";
        seen_inputs.emplace_back(inputs[0].getIntrusivePtr());
      }
    } else {
      EXPECT_TRUE(inputs.empty());
    }
    torch::Tensor loss = model.run_units(begin, end, mb, m, h, e);
    ++forwards;
    if (last) {
      loss_sum += loss.item<double>();
      return std::vector<torch::Tensor>{loss};
    }
    std::vector<torch::Tensor> outputs{h, e};
    if (options.tag) outputs.push_back(torch::full({1}, mb, torch::kLong));
    return outputs;
  };
  callbacks.backward = [&](int64_t, const std::vector<torch::Tensor>& outputs,
                           const std::vector<torch::Tensor>& output_grads) {
    sleep_for(options.backward_sleep_s);
    if (last) {
      EXPECT_TRUE(output_grads.empty());
      outputs[0].backward();
    } else {
      EXPECT_EQ(output_grads.size(), outputs.size());
      if (options.tag) {
        EXPECT_FALSE(output_grads[2].defined());
      }
      backward_from_outputs(outputs, output_grads);
    }
    ++backwards;
  };

  ToyRun run;
  run.stats = run_pipeline(schedule, m, group, callbacks);
  EXPECT_EQ(forwards, m);
  EXPECT_EQ(backwards, m);
  run.grads = model.flat_grads(begin, end);
  group.all_reduce(run.grads);
  torch::Tensor loss = torch::full({1}, last ? loss_sum : 0.0, torch::kDouble);
  group.all_reduce(loss);
  run.loss = loss.item<double>();
  return run;
}

void expect_matches_reference(const ToyRun& run, int64_t layers, int64_t width, int64_t rows, bool dense, uint64_t seed,
                              int64_t m) {
  ToyModel reference(layers, width, rows, dense, seed);
  const double loss = reference_step(reference, m);
  const torch::Tensor grads = reference.flat_grads();
  EXPECT_TRUE(torch::allclose(run.grads, grads, 1e-5, 1e-7))
      << "largest difference " << (run.grads - grads).abs().max().item<double>() << " of "
      << grads.abs().max().item<double>();
  EXPECT_NEAR(run.loss, loss, 1e-5 * std::abs(loss));
  // The second tensor's gradient reaches the input unit's We only through
  // every later stage: it must not be zero.
  EXPECT_GT(reference.units[0][1].grad().abs().sum().item<double>(), 0.0);
}

TEST(PipelineExecutor, GradientsAndLossMatchSingleProcess) {
  Communicator& world = test_world();
  const int64_t layers = 6, width = 8, rows = 4;
  const uint64_t seed = 11;
  for (int64_t m : {1, 3, 6}) {
    std::vector<ToyRun> runs;
    for (auto schedule : kSchedules) {
      SCOPED_TRACE(schedule_name(schedule) + " m=" + std::to_string(m));
      ToyModel model(layers, width, rows, true, seed);
      ToyRunOptions options;
      options.check_release = true;
      runs.push_back(run_toy(model, schedule, m, world, options));
      expect_matches_reference(runs.back(), layers, width, rows, true, seed, m);
    }
    // Same micro-batch order per parameter under both schedules: bitwise equal.
    EXPECT_TRUE(torch::equal(runs[0].grads, runs[1].grads)) << "m=" << m;
    EXPECT_EQ(runs[0].loss, runs[1].loss) << "m=" << m;
  }
}

// Forward only (evaluation): the last stage's losses equal the
// single-process forward, micro-batch by micro-batch, in order.
TEST(PipelineExecutor, ForwardOnlyMatchesSingleProcess) {
  Communicator& world = test_world();
  const int64_t layers = 6, width = 8, rows = 4, m = 5;
  ToyModel model(layers, width, rows, true, 23);
  const int64_t p = world.size(), s = world.rank();
  const std::vector<int64_t> starts = partition_stages(model.parameter_counts(), p);
  const int64_t begin = starts[s];
  const int64_t end = s + 1 < p ? starts[s + 1] : model.unit_count();
  torch::NoGradGuard no_grad;
  std::vector<int64_t> order;
  std::vector<double> losses;
  PipelineStageCallbacks callbacks;
  callbacks.input_buffers = [&](int64_t) {
    return std::vector<torch::Tensor>{torch::empty({rows, width}), torch::empty({rows, width})};
  };
  callbacks.forward = [&](int64_t mb, const std::vector<torch::Tensor>& inputs) {
    order.push_back(mb);
    torch::Tensor h, e;
    if (s > 0) {
      h = inputs.at(0);
      e = inputs.at(1);
    }
    torch::Tensor loss = model.run_units(begin, end, mb, m, h, e);
    if (s == p - 1) {
      losses.push_back(loss.item<double>());
      return std::vector<torch::Tensor>{};
    }
    return std::vector<torch::Tensor>{h, e};
  };
  const PipelineStats stats = run_forward_pipeline(m, world, callbacks);
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(stats.exchanges, (s > 0 ? m : 0) + (s < p - 1 ? m : 0));
  EXPECT_EQ(stats.bytes_sent, s < p - 1 ? m * 2 * rows * width * 4 : 0);
  if (s == p - 1) {
    ASSERT_EQ(static_cast<int64_t>(losses.size()), m);
    for (int64_t mb = 0; mb < m; ++mb) {
      torch::Tensor h, e;
      const double expected = model.run_units(0, model.unit_count(), mb, m, h, e).item<double>();
      EXPECT_NEAR(losses[mb], expected, 1e-6 * std::abs(expected)) << "micro-batch " << mb;
    }
  }
}

TEST(PipelineExecutor, LargeMessagesDoNotDeadlock) {
  Communicator& world = test_world();
  // 1024 x 512 fp32 = 2 MiB per tensor, 4 MiB per message each way.
  const int64_t layers = 4, width = 1024, rows = 512, m = 5;
  const uint64_t seed = 23;
  for (auto schedule : kSchedules) {
    SCOPED_TRACE(schedule_name(schedule));
    ToyModel model(layers, width, rows, false, seed);
    world.reset_stats();
    const ToyRun run = run_toy(model, schedule, m, world);
    expect_matches_reference(run, layers, width, rows, false, seed, m);
    const int64_t message = 2 * rows * width * 4;
    const int64_t p = world.size(), s = world.rank();
    EXPECT_EQ(run.stats.bytes_sent, ((s < p - 1) + (s > 0)) * m * message);
    EXPECT_EQ(run.stats.bytes_received, run.stats.bytes_sent);
  }
}

TEST(PipelineExecutor, NonFloatingTensorsTravelForwardWithoutGradients) {
  Communicator& world = test_world();
  const int64_t m = 4;
  ToyModel model(5, 6, 3, true, 5);
  ToyRunOptions options;
  options.tag = true;
  const ToyRun run = run_toy(model, PipelineSchedule::OneFOneB, m, world, options);
  expect_matches_reference(run, 5, 6, 3, true, 5, m);
  // Forward carries the 8-byte tag, the gradients come back without it.
  const int64_t p = world.size(), s = world.rank();
  const int64_t activations = 2 * 3 * 6 * 4 + 8, gradients = 2 * 3 * 6 * 4;
  EXPECT_EQ(run.stats.bytes_sent, m * ((s < p - 1) ? activations : 0) + m * ((s > 0) ? gradients : 0));
}

TEST(PipelineExecutor, IndependentPipelinesSideBySide) {
  Communicator& world = test_world();
  if (world.size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  const int64_t me = world.rank();
  const int64_t first = me - me % 2;
  std::unique_ptr<Communicator> pair = world.split({first, first + 1});
  const uint64_t seed = 100 + static_cast<uint64_t>(first);  // each pipeline its own model
  for (auto schedule : kSchedules) {
    ToyModel model(3, 8, 4, true, seed);
    const ToyRun run = run_toy(model, schedule, 4, *pair);
    expect_matches_reference(run, 3, 8, 4, true, seed, 4);
  }
}

TEST(PipelineExecutor, SingleStageDoesNotCommunicate) {
  Communicator& world = test_world();
  std::unique_ptr<Communicator> alone = world.split({world.rank()});
  for (auto schedule : kSchedules) {
    ToyModel model(4, 8, 4, true, 3);
    alone->reset_stats();
    const ToyRun run = run_toy(model, schedule, 3, *alone);
    expect_matches_reference(run, 4, 8, 4, true, 3, 3);
    EXPECT_EQ(run.stats.exchanges, 0);
    EXPECT_EQ(run.stats.bytes_sent, 0);
    EXPECT_EQ(run.stats.wait_s, 0.0);
    EXPECT_EQ(run.stats.max_in_flight, 1) << "one stage runs forward then backward per micro-batch";
    EXPECT_EQ(alone->stats().count("send_recv"), 0u);
  }
}

TEST(PipelineExecutor, StatsMeasureComputeAndWaiting) {
  Communicator& world = test_world();
  const int64_t p = world.size(), s = world.rank(), m = 4;
  const double tf = 0.02, tb = 0.04;
  for (auto schedule : kSchedules) {
    SCOPED_TRACE(schedule_name(schedule));
    ToyModel model(6, 8, 4, true, 9);
    ToyRunOptions options;
    options.forward_sleep_s = tf;
    options.backward_sleep_s = tb;
    world.barrier();
    world.reset_stats();
    const ToyRun run = run_toy(model, schedule, m, world, options);
    const PipelineStats& st = run.stats;
    EXPECT_EQ(st.stage, s);
    EXPECT_EQ(st.stages, p);
    EXPECT_EQ(st.micro_batches, m);
    EXPECT_GE(st.forward_s, m * tf);
    EXPECT_GE(st.backward_s, m * tb);
    EXPECT_LT(st.forward_s, m * tf + 0.5);
    EXPECT_LT(st.backward_s, m * tb + 0.5);
    // Disjoint parts of the call.
    EXPECT_LE(st.forward_s + st.backward_s + st.wait_s, st.total_s + 1e-9);
    // Every stage of a pipeline waits: the last for its first activations,
    // which take p-1 forwards to arrive, the first for its first gradients.
    EXPECT_GT(st.wait_s, 0.0);
    if (s == p - 1) {
      EXPECT_GE(st.wait_s, 0.5 * (p - 1) * tf);
    }
    const int64_t message = 2 * 4 * 8 * 4;
    EXPECT_EQ(st.bytes_sent, ((s < p - 1) + (s > 0)) * m * message);
    EXPECT_EQ(st.bytes_received, st.bytes_sent);
    const OpStats& comm = world.stats().at("send_recv");
    EXPECT_EQ(comm.calls, st.exchanges);
    EXPECT_EQ(comm.bytes, st.bytes_sent + st.bytes_received);
    EXPECT_EQ(st.max_in_flight, schedule == PipelineSchedule::GPipe ? m : std::min(p - s, m));
    // The first stage is busy or idle for the whole step, so its idle share
    // is the bubble: never much below the ideal, and above it only by the
    // time messages and wake-ups take on a loaded machine.
    if (s == 0) {
      EXPECT_GE(st.idle_fraction(), ideal_bubble_fraction(p, m) - 0.05);
      EXPECT_LE(st.idle_fraction(), ideal_bubble_fraction(p, m) + 0.2);
    }

    torch::Tensor row = torch::tensor(
        {st.forward_s, st.backward_s, st.wait_s, st.total_s, st.idle_fraction(), st.bubble_ratio()}, torch::kDouble);
    torch::Tensor table = torch::empty({p * row.numel()}, torch::kDouble);
    world.all_gather(row, table);
    if (s == 0) {
      auto t = table.reshape({p, row.numel()});
      std::printf("%s p=%lld m=%lld (tf %.0f ms, tb %.0f ms): ideal bubble (p-1)/m = %.3f, (p-1)/(m+p-1) = %.3f\n",
                  schedule_name(schedule).c_str(), static_cast<long long>(p), static_cast<long long>(m), tf * 1e3,
                  tb * 1e3, ideal_bubble_ratio(p, m), ideal_bubble_fraction(p, m));
      for (int64_t r = 0; r < p; ++r) {
        std::printf(
            "  stage %lld: forward %.3f s, backward %.3f s, wait %.3f s, total %.3f s, idle %.3f, "
            "bubble ratio %.3f\n",
            static_cast<long long>(r), t[r][0].item<double>(), t[r][1].item<double>(), t[r][2].item<double>(),
            t[r][3].item<double>(), t[r][4].item<double>(), t[r][5].item<double>());
      }
    }
  }
}

}  // namespace
}  // namespace moetrain::parallel::pipeline_test
