// dispatch_tokens / combine_tokens on hand-made rows: every row says where it
// came from (source rank, global expert, position in its segment), so each
// rank can compute, from every rank's counts, exactly which rows it must
// receive and in which order. Small integers keep every float dtype exact.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/expert_dispatch.h"
#include "tests/multirank/expert_parallel/ep_test_world.h"

namespace moetrain::parallel::ep_test {
namespace {

// Rows that group rank `rank` sends to global expert e, for the count
// patterns the tests use. Zeros appear on purpose.
enum class Counts { Mixed, SourceSendsNothing, ExpertGetsNothing };

std::vector<int64_t> counts_of(int64_t rank, int64_t experts, Counts pattern) {
  std::vector<int64_t> c(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) c[static_cast<size_t>(e)] = (rank * 7 + e * 3 + 1) % 5;
  if (pattern == Counts::SourceSendsNothing && rank == 1) c.assign(c.size(), 0);
  if (pattern == Counts::ExpertGetsNothing) c[1] = 0;  // from every rank
  return c;
}

// [rows, 3]: (source, global expert, position within the segment), segments
// in expert order, as permute_tokens lays them out.
torch::Tensor labelled_rows(int64_t source, const std::vector<int64_t>& counts, torch::ScalarType dtype) {
  std::vector<float> values;
  for (size_t e = 0; e < counts.size(); ++e) {
    for (int64_t i = 0; i < counts[e]; ++i) {
      values.insert(values.end(), {static_cast<float>(source), static_cast<float>(e), static_cast<float>(i)});
    }
  }
  const int64_t rows = static_cast<int64_t>(values.size()) / 3;
  return torch::tensor(values, torch::kFloat).reshape({rows, 3}).to(dtype);
}

// What group rank `me` must hold after dispatch: local expert 0's rows first,
// within one expert by source rank, within one source in segment order.
torch::Tensor expected_local_rows(int64_t me, int64_t group_size, int64_t experts, Counts pattern,
                                  torch::ScalarType dtype) {
  const int64_t local = experts / group_size;
  std::vector<float> values;
  for (int64_t l = 0; l < local; ++l) {
    const int64_t e = me * local + l;
    for (int64_t s = 0; s < group_size; ++s) {
      const int64_t count = counts_of(s, experts, pattern)[static_cast<size_t>(e)];
      for (int64_t i = 0; i < count; ++i) {
        values.insert(values.end(), {static_cast<float>(s), static_cast<float>(e), static_cast<float>(i)});
      }
    }
  }
  const int64_t rows = static_cast<int64_t>(values.size()) / 3;
  return torch::tensor(values, torch::kFloat).reshape({rows, 3}).to(dtype);
}

std::string describe(const ExpertGroup& g, int64_t experts, Counts pattern, torch::ScalarType dtype) {
  return "group of " + std::to_string(g.comm->size()) + ", E=" + std::to_string(experts) + ", pattern " +
         std::to_string(static_cast<int>(pattern)) + ", " + c10::toString(dtype);
}

TEST(ExpertDispatch, PlanCountsMatchEveryRanksCounts) {
  for (ExpertGroup& g : expert_groups()) {
    Communicator* group = g.comm.get();
    const int64_t n = group->size(), me = group->rank();
    for (int64_t experts : {n, 2 * n, 4 * n}) {
      for (Counts pattern : {Counts::Mixed, Counts::SourceSendsNothing, Counts::ExpertGetsNothing}) {
        const int64_t local = experts / n;
        const ExpertDispatchPlan plan = plan_expert_dispatch(counts_of(me, experts, pattern), group);
        EXPECT_EQ(plan.group_size, n);
        EXPECT_EQ(plan.num_local_experts, local);
        std::vector<int64_t> send(n, 0), recv(n, 0), local_rows(local, 0), per_expert(n * local, 0);
        for (int64_t j = 0; j < n; ++j) {
          for (int64_t l = 0; l < local; ++l) {
            send[j] += counts_of(me, experts, pattern)[j * local + l];
            const int64_t from_j = counts_of(j, experts, pattern)[me * local + l];
            recv[j] += from_j;
            local_rows[l] += from_j;
            per_expert[j * local + l] = from_j;
          }
        }
        EXPECT_EQ(plan.send_counts, send) << describe(g, experts, pattern, torch::kFloat);
        EXPECT_EQ(plan.recv_counts, recv) << describe(g, experts, pattern, torch::kFloat);
        EXPECT_EQ(plan.local_tokens_per_expert, local_rows) << describe(g, experts, pattern, torch::kFloat);
        EXPECT_EQ(plan.recv_counts_per_expert, per_expert) << describe(g, experts, pattern, torch::kFloat);
        // The two index tensors are inverse permutations of the received rows.
        const int64_t rows = plan.num_recv_rows();
        ASSERT_EQ(plan.regroup_index.numel(), rows);
        EXPECT_TRUE(
            torch::equal(plan.regroup_index.index_select(0, plan.regroup_inverse), torch::arange(rows, torch::kLong)));
      }
    }
  }
}

TEST(ExpertDispatch, RowsArriveLocalExpertMajorAndReturnHome) {
  for (ExpertGroup& g : expert_groups()) {
    Communicator* group = g.comm.get();
    const int64_t n = group->size(), me = group->rank();
    for (torch::ScalarType dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf}) {
      for (int64_t experts : {n, 2 * n}) {
        for (Counts pattern : {Counts::Mixed, Counts::SourceSendsNothing, Counts::ExpertGetsNothing}) {
          const std::string what = describe(g, experts, pattern, dtype);
          const std::vector<int64_t> counts = counts_of(me, experts, pattern);
          const ExpertDispatchPlan plan = plan_expert_dispatch(counts, group);
          const torch::Tensor permuted = labelled_rows(me, counts, dtype).requires_grad_();

          const torch::Tensor local = dispatch_tokens(permuted, plan, group);
          EXPECT_EQ(local.scalar_type(), dtype) << what;
          EXPECT_TRUE(torch::equal(local, expected_local_rows(me, n, experts, pattern, dtype))) << what;

          const torch::Tensor home = combine_tokens(local, plan, group);
          EXPECT_TRUE(torch::equal(home, permuted)) << what;

          // d(sum(home * (home + 1)))/d(permuted) = permuted + 1 when both
          // directions route the gradient back to the row it belongs to.
          (home * (home.detach() + 1)).sum().backward();
          ASSERT_TRUE(permuted.grad().defined()) << what;
          EXPECT_TRUE(torch::equal(permuted.grad(), permuted.detach() + 1)) << what;
        }
      }
    }
  }
}

TEST(ExpertDispatch, EachDirectionsBackwardIsTheReverseExchange) {
  for (ExpertGroup& g : expert_groups()) {
    Communicator* group = g.comm.get();
    const int64_t n = group->size(), me = group->rank();
    const int64_t experts = 2 * n;
    const std::vector<int64_t> counts = counts_of(me, experts, Counts::Mixed);
    const ExpertDispatchPlan plan = plan_expert_dispatch(counts, group);

    // Dispatch alone: the gradient each owner puts on a received row comes
    // back to the row that was sent.
    const torch::Tensor permuted = labelled_rows(me, counts, torch::kFloat).requires_grad_();
    const torch::Tensor local = dispatch_tokens(permuted, plan, group);
    (local * (local.detach() * 10 + 3)).sum().backward();
    EXPECT_TRUE(torch::equal(permuted.grad(), permuted.detach() * 10 + 3));

    // Combine alone, from a leaf in the owner's layout.
    const torch::Tensor expert_rows =
        expected_local_rows(me, n, experts, Counts::Mixed, torch::kFloat).requires_grad_();
    const ExpertDispatchPlan plan2 = plan_expert_dispatch(counts, group);
    const torch::Tensor home = combine_tokens(expert_rows, plan2, group);
    EXPECT_TRUE(torch::equal(home, labelled_rows(me, counts, torch::kFloat)));
    (home * (home.detach() * 10 + 3)).sum().backward();
    EXPECT_TRUE(torch::equal(expert_rows.grad(), expert_rows.detach() * 10 + 3));
  }
}

TEST(ExpertDispatch, ByteCountersCountTheRowsSent) {
  for (ExpertGroup& g : expert_groups()) {
    Communicator* group = g.comm.get();
    const int64_t n = group->size(), me = group->rank();
    const int64_t experts = 2 * n;
    for (torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
      for (Counts pattern : {Counts::Mixed, Counts::SourceSendsNothing}) {
        const std::string what = describe(g, experts, pattern, dtype);
        const std::vector<int64_t> counts = counts_of(me, experts, pattern);
        const int64_t width = 5;
        const int64_t elem = c10::elementSize(dtype);
        int64_t sent_rows = 0, received_rows = 0;
        for (int64_t c : counts) sent_rows += c;
        for (int64_t s = 0; s < n; ++s) {
          for (int64_t l = 0; l < experts / n; ++l)
            received_rows += counts_of(s, experts, pattern)[me * (experts / n) + l];
        }
        group->reset_stats();

        const ExpertDispatchPlan plan = plan_expert_dispatch(counts, group);
        EXPECT_EQ(group->stats().at("all_to_all").calls, 1) << what;
        EXPECT_EQ(group->stats().at("all_to_all").bytes, experts * 8) << what;  // the int64 counts

        const torch::Tensor permuted = torch::randn({sent_rows, width}).to(dtype).requires_grad_();
        const torch::Tensor local = dispatch_tokens(permuted, plan, group);
        EXPECT_EQ(group->stats().at("all_to_all").bytes, experts * 8 + sent_rows * width * elem) << what;

        const torch::Tensor home = combine_tokens(local * 2, plan, group);
        EXPECT_EQ(group->stats().at("all_to_all").bytes, experts * 8 + (sent_rows + received_rows) * width * elem)
            << what;
        EXPECT_EQ(group->stats().at("all_to_all").calls, 3) << what;

        // Backward sends the same rows the other way.
        home.sum().backward();
        EXPECT_EQ(group->stats().at("all_to_all").calls, 5) << what;
        EXPECT_EQ(group->stats().at("all_to_all").bytes, experts * 8 + 2 * (sent_rows + received_rows) * width * elem)
            << what;
        EXPECT_TRUE(torch::equal(permuted.grad(), torch::full_like(permuted, 2))) << what;
      }
    }
  }
}

// A rank whose experts receive nothing typically returns a fresh empty tensor
// (no autograd history) as its expert output. Its combine and dispatch must
// still run their backward exchanges, or the other ranks would wait forever.
TEST(ExpertDispatch, RankWhoseExpertsGetNothingStillJoinsBackward) {
  for (ExpertGroup& g : expert_groups()) {
    Communicator* group = g.comm.get();
    const int64_t n = group->size(), me = group->rank();
    const int64_t experts = n;  // one expert per rank; expert 1 (on rank 1) gets no row
    const std::vector<int64_t> counts = counts_of(me, experts, Counts::ExpertGetsNothing);
    group->reset_stats();
    const ExpertDispatchPlan plan = plan_expert_dispatch(counts, group);
    const torch::Tensor permuted = labelled_rows(me, counts, torch::kFloat).requires_grad_();
    const torch::Tensor local = dispatch_tokens(permuted, plan, group);
    if (me == 1) {
      EXPECT_EQ(local.size(0), 0);
    }
    const torch::Tensor expert_output = me == 1 ? torch::zeros({0, 3}) : local * 2;
    const torch::Tensor home = combine_tokens(expert_output, plan, group);
    ASSERT_TRUE(home.requires_grad()) << "combine must stay in the graph on rank " << me;
    home.sum().backward();
    EXPECT_EQ(group->stats().at("all_to_all").calls, 5);
    EXPECT_TRUE(torch::equal(permuted.grad(), torch::full_like(permuted, 2)));
  }
}

TEST(ExpertDispatch, NullOrSingleRankGroupIsTheIdentity) {
  Communicator& world = test_world();
  auto alone = world.split({world.rank()});
  const std::vector<int64_t> counts = {2, 0, 3, 1};
  for (Communicator* group : {static_cast<Communicator*>(nullptr), alone.get()}) {
    alone->reset_stats();
    const ExpertDispatchPlan plan = plan_expert_dispatch(counts, group);
    EXPECT_EQ(plan.num_local_experts, 4);
    EXPECT_EQ(plan.send_counts, std::vector<int64_t>({6}));
    EXPECT_EQ(plan.recv_counts, std::vector<int64_t>({6}));
    EXPECT_EQ(plan.local_tokens_per_expert, counts);
    EXPECT_TRUE(torch::equal(plan.regroup_index, torch::arange(6, torch::kLong)));
    const torch::Tensor x = torch::randn({6, 3}, torch::kDouble);
    EXPECT_TRUE(torch::equal(dispatch_tokens(x, plan, group), x));
    EXPECT_TRUE(torch::equal(combine_tokens(x, plan, group), x));
    EXPECT_TRUE(alone->stats().empty()) << "EP off must not communicate";
  }
}

TEST(ExpertDispatch, RejectsBadArgumentsBeforeCommunicating) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  // Every rank makes the same bad call, so none is left inside a collective.
  std::vector<int64_t> uneven(static_cast<size_t>(n + 1), 1);
  EXPECT_THROW(plan_expert_dispatch(uneven, &world), std::invalid_argument);
  std::vector<int64_t> negative(static_cast<size_t>(n), 1);
  negative[0] = -1;
  EXPECT_THROW(plan_expert_dispatch(negative, &world), std::invalid_argument);
  EXPECT_THROW(plan_expert_dispatch({}, nullptr), std::invalid_argument);

  const ExpertDispatchPlan plan = plan_expert_dispatch(std::vector<int64_t>(static_cast<size_t>(n), 1), &world);
  EXPECT_THROW(dispatch_tokens(torch::zeros({n + 1, 2}), plan, &world), std::invalid_argument);
  EXPECT_THROW(combine_tokens(torch::zeros({n + 1, 2}), plan, &world), std::invalid_argument);
  EXPECT_THROW(dispatch_tokens(torch::zeros({n, 2}), plan, nullptr), std::invalid_argument);
  try {
    dispatch_tokens(torch::zeros({n + 1, 2}), plan, &world);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("dispatch_tokens: permuted has " + std::to_string(n + 1) + " rows"),
              std::string::npos)
        << e.what();
  }
  // The world is still in step: a real exchange goes through.
  const torch::Tensor rows = torch::full({n, 2}, static_cast<double>(world.rank()));
  const torch::Tensor local = dispatch_tokens(rows, plan, &world);
  EXPECT_TRUE(torch::equal(local.select(1, 0), torch::arange(n, torch::kFloat)));
}

}  // namespace
}  // namespace moetrain::parallel::ep_test
