// Pipeline schedules, plans and stage partitions as pure logic (no MPI):
// the step lists of 1F1B and GPipe, the communication plan run_pipeline()
// executes, a lockstep simulation of every stage's plan under rendezvous
// sends (no deadlock, every message arrives where it is expected), a timing
// simulation against the ideal bubble formula, and the stage partitioner
// against brute force.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/pipeline.h"

namespace moetrain::parallel {
namespace {

constexpr PipelineSchedule kSchedules[] = {PipelineSchedule::OneFOneB, PipelineSchedule::GPipe};

std::string describe(PipelineSchedule schedule, int64_t p, int64_t s, int64_t m) {
  return schedule_name(schedule) + " p=" + std::to_string(p) + " s=" + std::to_string(s) + " m=" + std::to_string(m);
}

std::string text(const std::vector<PipelineStep>& steps) {
  std::string out;
  for (const PipelineStep& step : steps) {
    out += (out.empty() ? "" : " ") + std::string(step.kind == StepKind::Forward ? "F" : "B") +
           std::to_string(step.micro_batch);
  }
  return out;
}

TEST(PipelineSteps, EveryMicroBatchForwardedOnceThenBackwardedOnce) {
  for (auto schedule : kSchedules) {
    for (int64_t p = 1; p <= 4; ++p) {
      for (int64_t s = 0; s < p; ++s) {
        for (int64_t m = 1; m <= 8; ++m) {
          SCOPED_TRACE(describe(schedule, p, s, m));
          const auto steps = pipeline_steps(schedule, p, s, m);
          ASSERT_EQ(static_cast<int64_t>(steps.size()), 2 * m);
          std::vector<int> forwards(m, 0), backwards(m, 0);
          for (const PipelineStep& step : steps) {
            ASSERT_GE(step.micro_batch, 0);
            ASSERT_LT(step.micro_batch, m);
            if (step.kind == StepKind::Forward) {
              forwards[step.micro_batch] += 1;
            } else {
              EXPECT_EQ(forwards[step.micro_batch], 1) << "backward of " << step.micro_batch << " before its forward";
              backwards[step.micro_batch] += 1;
            }
          }
          EXPECT_EQ(forwards, std::vector<int>(m, 1));
          EXPECT_EQ(backwards, std::vector<int>(m, 1));
        }
      }
    }
  }
}

TEST(PipelineSteps, HandWrittenOrders) {
  using S = PipelineSchedule;
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 4, 0, 8)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 4, 2, 8)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7");
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 4, 3, 3)), "F0 B0 F1 B1 F2 B2");
  // Fewer micro-batches than stages: warmup is cut to m.
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 4, 0, 2)), "F0 F1 B0 B1");
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 4, 1, 2)), "F0 F1 B0 B1");
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 4, 2, 2)), "F0 F1 B0 B1");
  EXPECT_EQ(text(pipeline_steps(S::GPipe, 3, 1, 3)), "F0 F1 F2 B0 B1 B2");
  // One stage: forward then backward per micro-batch under both schedules.
  EXPECT_EQ(text(pipeline_steps(S::OneFOneB, 1, 0, 3)), "F0 B0 F1 B1 F2 B2");
  EXPECT_EQ(text(pipeline_steps(S::GPipe, 1, 0, 3)), "F0 B0 F1 B1 F2 B2");
}

TEST(PipelineSteps, GPipeRunsAllForwardsThenBackwardsInOrder) {
  for (int64_t p = 2; p <= 4; ++p) {
    for (int64_t s = 0; s < p; ++s) {
      for (int64_t m = 1; m <= 8; ++m) {
        const auto steps = pipeline_steps(PipelineSchedule::GPipe, p, s, m);
        for (int64_t i = 0; i < m; ++i) {
          EXPECT_EQ(steps[i], (PipelineStep{StepKind::Forward, i}));
          EXPECT_EQ(steps[m + i], (PipelineStep{StepKind::Backward, i}));
        }
      }
    }
  }
}

TEST(PipelineSteps, OneFOneBKeepsAtMostStagesMinusStageInFlight) {
  for (int64_t p = 1; p <= 4; ++p) {
    for (int64_t s = 0; s < p; ++s) {
      for (int64_t m = 1; m <= 8; ++m) {
        SCOPED_TRACE(describe(PipelineSchedule::OneFOneB, p, s, m));
        const auto steps = pipeline_steps(PipelineSchedule::OneFOneB, p, s, m);
        int64_t in_flight = 0, most = 0;
        for (const PipelineStep& step : steps) {
          in_flight += step.kind == StepKind::Forward ? 1 : -1;
          most = std::max(most, in_flight);
        }
        EXPECT_LE(most, p - s);
        EXPECT_EQ(most, std::min(p - s, m));
        // Warmup: exactly min(p - s - 1, m) forwards before the first backward
        // (plus the steady state's first forward when forwards remain).
        const int64_t warmup = std::min(p - s - 1, m);
        const auto first_backward = std::find_if(
            steps.begin(), steps.end(), [](const PipelineStep& step) { return step.kind == StepKind::Backward; });
        EXPECT_EQ(first_backward - steps.begin(), warmup < m ? warmup + 1 : m);
      }
    }
  }
}

TEST(PipelineSteps, RejectsBadArguments) {
  EXPECT_THROW(pipeline_steps(PipelineSchedule::OneFOneB, 0, 0, 1), std::invalid_argument);
  EXPECT_THROW(pipeline_steps(PipelineSchedule::OneFOneB, 2, 2, 1), std::invalid_argument);
  EXPECT_THROW(pipeline_steps(PipelineSchedule::GPipe, 2, -1, 1), std::invalid_argument);
  EXPECT_THROW(pipeline_steps(PipelineSchedule::GPipe, 2, 0, 0), std::invalid_argument);
  EXPECT_EQ(parse_schedule("1f1b"), PipelineSchedule::OneFOneB);
  EXPECT_EQ(parse_schedule(schedule_name(PipelineSchedule::GPipe)), PipelineSchedule::GPipe);
  EXPECT_THROW(parse_schedule("interleaved"), std::invalid_argument);
}

// --- the communication plan ---

std::string text(const std::vector<PipelineAction>& plan) {
  auto message = [](const PipelineMessage& m) {
    return std::string(m.kind == MessageKind::Activation ? "A" : "G") + std::to_string(m.micro_batch) + "@" +
           std::to_string(m.peer);
  };
  std::string out;
  for (const PipelineAction& a : plan) {
    if (!out.empty()) out += " ";
    if (a.type == PipelineAction::Type::Compute) {
      out += text(std::vector<PipelineStep>{a.step});
    } else {
      out += "[";
      if (a.send) out += "send " + message(*a.send);
      if (a.send && a.recv) out += ", ";
      if (a.recv) out += "recv " + message(*a.recv);
      out += "]";
    }
  }
  return out;
}

TEST(PipelinePlan, CombinesSendsWithTheNextReceiveAsMegatronDoes) {
  using S = PipelineSchedule;
  // Stage 0 of 2: the steady state sends micro-batch 1's activations while
  // receiving micro-batch 0's gradients (send_forward_recv_backward).
  EXPECT_EQ(text(pipeline_plan(S::OneFOneB, 2, 0, 2)), "F0 [send A0@1] F1 [send A1@1, recv G0@1] B0 [recv G1@1] B1");
  // Stage 1 of 2 (last): send_backward_recv_forward between micro-batches.
  EXPECT_EQ(text(pipeline_plan(S::OneFOneB, 2, 1, 2)), "[recv A0@0] F0 B0 [send G0@0, recv A1@0] F1 B1 [send G1@0]");
  // A middle stage: activations go on while the next ones arrive.
  EXPECT_EQ(text(pipeline_plan(S::GPipe, 3, 1, 2)),
            "[recv A0@0] F0 [send A0@2, recv A1@0] F1 [send A1@2, recv G0@2] B0 [send G0@0, recv G1@2] B1 "
            "[send G1@0]");
  // One stage: no communication at all.
  EXPECT_EQ(text(pipeline_plan(S::OneFOneB, 1, 0, 2)), "F0 B0 F1 B1");
}

// Plays every stage's exchanges in lockstep. An exchange posts its send and
// receive together and completes when both are matched; a send is matched
// only when the receiver's current exchange posts the matching receive (the
// worst case: no eager buffering). Returns "" when every stage finishes, else
// why it stopped. Also checks that what arrives is what the receiver expects.
using Exchanges = std::vector<std::vector<PipelineAction>>;

Exchanges exchanges_of(PipelineSchedule schedule, int64_t p, int64_t m) {
  Exchanges all(p);
  for (int64_t s = 0; s < p; ++s) {
    for (const PipelineAction& a : pipeline_plan(schedule, p, s, m)) {
      if (a.type == PipelineAction::Type::Exchange) all[s].push_back(a);
    }
  }
  return all;
}

std::string simulate_lockstep(const Exchanges& ops) {
  const int64_t p = static_cast<int64_t>(ops.size());
  std::vector<size_t> pos(p, 0);
  std::vector<bool> send_done(p, false), recv_done(p, false);
  auto current = [&](int64_t s) -> const PipelineAction* { return pos[s] < ops[s].size() ? &ops[s][pos[s]] : nullptr; };
  for (;;) {
    bool progress = false;
    for (int64_t s = 0; s < p; ++s) {
      const PipelineAction* mine = current(s);
      if (mine == nullptr || !mine->send || send_done[s]) continue;
      const int64_t d = mine->send->peer;
      if (d < 0 || d >= p || d == s) return "stage " + std::to_string(s) + " sends to stage " + std::to_string(d);
      const PipelineAction* theirs = current(d);
      if (theirs == nullptr || !theirs->recv || recv_done[d] || theirs->recv->peer != s) continue;
      if (theirs->recv->kind != mine->send->kind || theirs->recv->micro_batch != mine->send->micro_batch) {
        return "stage " + std::to_string(d) + " expected a different message from stage " + std::to_string(s);
      }
      send_done[s] = true;
      recv_done[d] = true;
      progress = true;
    }
    bool finished = true;
    for (int64_t s = 0; s < p; ++s) {
      const PipelineAction* mine = current(s);
      if (mine == nullptr) continue;
      finished = false;
      if ((!mine->send || send_done[s]) && (!mine->recv || recv_done[s])) {
        ++pos[s];
        send_done[s] = recv_done[s] = false;
        progress = true;
      }
    }
    if (finished) return "";
    if (!progress) {
      std::string stuck = "deadlock:";
      for (int64_t s = 0; s < p; ++s) {
        stuck += " stage " + std::to_string(s) + " at exchange " + std::to_string(pos[s]) + "/" +
                 std::to_string(ops[s].size()) + ";";
      }
      return stuck;
    }
  }
}

TEST(PipelinePlan, LockstepSimulationNeverDeadlocks) {
  for (auto schedule : kSchedules) {
    for (int64_t p = 1; p <= 8; ++p) {
      for (int64_t m = 1; m <= 12; ++m) {
        EXPECT_EQ(simulate_lockstep(exchanges_of(schedule, p, m)), "") << describe(schedule, p, -1, m);
      }
    }
  }
}

// The simulation does catch deadlocks: the same plans with every exchange
// split into a blocking send followed by a blocking receive stall in the
// 1F1B steady state (both neighbours send first).
TEST(PipelinePlan, LockstepSimulationCatchesUnpairedBlockingSends) {
  auto split = [](const Exchanges& ops) {
    Exchanges out(ops.size());
    for (size_t s = 0; s < ops.size(); ++s) {
      for (const PipelineAction& a : ops[s]) {
        if (a.send) {
          PipelineAction only_send = a;
          only_send.recv.reset();
          out[s].push_back(only_send);
        }
        if (a.recv) {
          PipelineAction only_recv = a;
          only_recv.send.reset();
          out[s].push_back(only_recv);
        }
      }
    }
    return out;
  };
  const std::string result = simulate_lockstep(split(exchanges_of(PipelineSchedule::OneFOneB, 2, 2)));
  EXPECT_EQ(result.rfind("deadlock", 0), 0u) << result;
}

// Times every stage's plan with forward time tf and backward time tb per
// micro-batch and free, eager communication (a receive completes when the
// sender has reached its send). Returns each stage's finish time.
std::vector<double> simulate_timing(PipelineSchedule schedule, int64_t p, int64_t m, double tf, double tb) {
  std::vector<std::vector<PipelineAction>> plans;
  for (int64_t s = 0; s < p; ++s) plans.push_back(pipeline_plan(schedule, p, s, m));
  std::vector<size_t> pos(p, 0);
  std::vector<double> clock(p, 0);
  // Post time of each message, by (sender, kind, micro-batch).
  std::map<std::tuple<int64_t, int, int64_t>, double> posted;
  bool progress = true;
  while (progress) {
    progress = false;
    for (int64_t s = 0; s < p; ++s) {
      while (pos[s] < plans[s].size()) {
        const PipelineAction& a = plans[s][pos[s]];
        if (a.type == PipelineAction::Type::Compute) {
          clock[s] += a.step.kind == StepKind::Forward ? tf : tb;
        } else {
          if (a.send) posted[{s, static_cast<int>(a.send->kind), a.send->micro_batch}] = clock[s];
          if (a.recv) {
            auto it = posted.find({a.recv->peer, static_cast<int>(a.recv->kind), a.recv->micro_batch});
            if (it == posted.end()) break;  // the sender has not got there yet
            clock[s] = std::max(clock[s], it->second);
          }
        }
        ++pos[s];
        progress = true;
      }
    }
  }
  for (int64_t s = 0; s < p; ++s) EXPECT_EQ(pos[s], plans[s].size()) << "stage " << s << " never finished";
  return clock;
}

TEST(PipelineBubble, FormulasByHand) {
  EXPECT_DOUBLE_EQ(ideal_bubble_ratio(4, 8), 3.0 / 8.0);
  EXPECT_DOUBLE_EQ(ideal_bubble_fraction(4, 8), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(ideal_bubble_ratio(1, 5), 0.0);
  EXPECT_DOUBLE_EQ(ideal_bubble_fraction(1, 5), 0.0);
  EXPECT_DOUBLE_EQ(ideal_bubble_ratio(2, 1), 1.0);
  EXPECT_DOUBLE_EQ(ideal_bubble_fraction(2, 1), 0.5);
  EXPECT_THROW(ideal_bubble_ratio(0, 1), std::invalid_argument);
  EXPECT_THROW(ideal_bubble_fraction(2, 0), std::invalid_argument);
}

// With uniform stages and free communication, both schedules take exactly
// (m + p - 1)(tf + tb), so every stage idles the ideal fraction of the step.
TEST(PipelineBubble, SimulatedScheduleMatchesTheIdealBubble) {
  const double tf = 1.0, tb = 2.0;
  for (auto schedule : kSchedules) {
    for (int64_t p = 1; p <= 4; ++p) {
      for (int64_t m = 1; m <= 8; ++m) {
        SCOPED_TRACE(describe(schedule, p, -1, m));
        const auto finish = simulate_timing(schedule, p, m, tf, tb);
        const double step = *std::max_element(finish.begin(), finish.end());
        EXPECT_DOUBLE_EQ(step, (m + p - 1) * (tf + tb));
        const double compute = m * (tf + tb);
        PipelineStats stats;
        stats.forward_s = m * tf;
        stats.backward_s = m * tb;
        stats.total_s = step;
        EXPECT_DOUBLE_EQ(stats.idle_fraction(), ideal_bubble_fraction(p, m));
        EXPECT_DOUBLE_EQ(stats.bubble_ratio(), ideal_bubble_ratio(p, m));
        EXPECT_DOUBLE_EQ((step - compute) / compute, ideal_bubble_ratio(p, m));
      }
    }
  }
}

// --- stage partition ---

int64_t largest(const std::vector<int64_t>& costs, const std::vector<int64_t>& starts) {
  const auto per_stage = stage_costs(costs, starts);
  return *std::max_element(per_stage.begin(), per_stage.end());
}

// Every partition, in lexicographic order of its start indices.
void each_partition(int64_t n, int64_t p, const std::function<void(const std::vector<int64_t>&)>& visit) {
  std::vector<int64_t> starts{0};
  std::function<void()> extend = [&] {
    const int64_t k = static_cast<int64_t>(starts.size());
    if (k == p) {
      visit(starts);
      return;
    }
    for (int64_t next = starts.back() + 1; next <= n - (p - k); ++next) {
      starts.push_back(next);
      extend();
      starts.pop_back();
    }
  };
  extend();
}

TEST(StagePartition, HandExamples) {
  EXPECT_EQ(partition_stages({10, 1, 1, 1, 1, 10}, 2), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(partition_stages({10, 1, 1, 1, 1, 10}, 3), (std::vector<int64_t>{0, 1, 5}));
  EXPECT_EQ(partition_stages({10, 1, 1, 1, 1, 10}, 6), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(partition_stages({5, 5, 5}, 1), (std::vector<int64_t>{0}));
  // Ties: [1] [0, 1] and [1, 0] [1] both have largest cost 1; the earlier
  // stage takes fewer units.
  EXPECT_EQ(partition_stages({1, 0, 1}, 2), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(partition_stages({0, 0, 0, 0}, 2), (std::vector<int64_t>{0, 1}));
  // An encoder-decoder by parameter count: embed, 4 encoder layers, enc_norm,
  // 4 decoder layers, dec_norm, lm_head, on four stages. No stage can hold
  // embed with anything else below 42, and the rest cannot go under 35 in
  // three stages: [embed] [enc 0-2] [enc 3, enc_norm, dec 0-1]
  // [dec 2-3, dec_norm, lm_head] (worked out by enumerating all 165 ways).
  const std::vector<int64_t> model{32, 10, 10, 10, 10, 1, 12, 12, 12, 12, 1, 8};
  const auto starts = partition_stages(model, 4);
  EXPECT_EQ(starts, (std::vector<int64_t>{0, 1, 4, 8}));
  EXPECT_EQ(stage_costs(model, starts), (std::vector<int64_t>{32, 30, 35, 33}));
  // Large counts (billions of parameters) stay exact.
  EXPECT_EQ(partition_stages({4'000'000'000, 3'000'000'000, 1'000'000'000}, 2), (std::vector<int64_t>{0, 1}));
}

TEST(StagePartition, OptimalAndLexicographicallyFirstAgainstBruteForce) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 9);
    const int64_t p = 1 + static_cast<int64_t>(rng() % n);
    std::vector<int64_t> costs(n);
    for (auto& c : costs) c = static_cast<int64_t>(rng() % 10);
    std::vector<int64_t> expected;
    int64_t best = -1;
    each_partition(n, p, [&](const std::vector<int64_t>& starts) {
      const int64_t cost = largest(costs, starts);
      if (best < 0 || cost < best) {
        best = cost;
        expected = starts;
      }
    });
    const auto got = partition_stages(costs, p);
    EXPECT_EQ(got, expected) << "trial " << trial << " n=" << n << " p=" << p;
    EXPECT_EQ(largest(costs, got), best);
  }
}

TEST(StagePartition, RejectsImpossibleRequests) {
  EXPECT_THROW(partition_stages({1, 2}, 3), std::invalid_argument);
  EXPECT_THROW(partition_stages({1, 2}, 0), std::invalid_argument);
  EXPECT_THROW(partition_stages({1, -2, 3}, 2), std::invalid_argument);
}

std::string cut_error(const std::vector<int64_t>& cuts, int64_t units, int64_t stages) {
  try {
    partition_from_cuts(cuts, units, stages);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no error";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(StagePartition, ExplicitCutsAreValidated) {
  EXPECT_EQ(partition_from_cuts({3, 7}, 10, 3), (std::vector<int64_t>{0, 3, 7}));
  EXPECT_EQ(partition_from_cuts({}, 10, 1), (std::vector<int64_t>{0}));
  EXPECT_EQ(partition_from_cuts({1, 2}, 3, 3), (std::vector<int64_t>{0, 1, 2}));

  std::string e = cut_error({3}, 10, 3);
  EXPECT_TRUE(contains(e, "3 stages need 2 cut points")) << e;
  EXPECT_TRUE(contains(e, "got 1")) << e;
  e = cut_error({3, 11}, 10, 3);
  EXPECT_TRUE(contains(e, "out of range")) << e;
  EXPECT_TRUE(contains(e, "11")) << e;
  e = cut_error({-1, 4}, 10, 3);
  EXPECT_TRUE(contains(e, "out of range")) << e;
  e = cut_error({5, 3}, 10, 3);
  EXPECT_TRUE(contains(e, "must increase")) << e;
  e = cut_error({4, 4}, 10, 3);
  EXPECT_TRUE(contains(e, "leaves stage 1 empty")) << e;
  e = cut_error({0, 4}, 10, 3);
  EXPECT_TRUE(contains(e, "leaves stage 0 empty")) << e;
  e = cut_error({4, 10}, 10, 3);
  EXPECT_TRUE(contains(e, "leaves stage 2 empty")) << e;
  e = cut_error({1, 2}, 2, 3);
  EXPECT_TRUE(contains(e, "cannot split 2 units into 3")) << e;
}

}  // namespace
}  // namespace moetrain::parallel
