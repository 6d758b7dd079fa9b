// Context-parallel attention on 2 and 4 ranks against one process: every
// rank builds the whole (seeded) q, k, v, keeps its positions as the
// load-balanced layout places them, and attends across the group; its output
// rows and the gradients of its q, k and v rows must equal those of plain
// attention over the whole sequence, with a mask built here element by
// element (so the layout's masks are checked too).
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "parallel/context_parallel.h"
#include "tests/multirank/context_parallel/cp_test_world.h"

namespace moetrain::parallel::cp_test {
namespace {

struct Case {
  std::string name;
  bool self = true;  // self-attention (the diagonal always visible); else cross-attention
  ContextAttentionMask mask;
};

// [B, 1, Tq, Tk]: the mask as models/attention.h defines it, one element at a time.
torch::Tensor reference_mask(const torch::Tensor& key_mask, int64_t tq, const ContextAttentionMask& m) {
  const int64_t b = key_mask.size(0), tk = key_mask.size(1);
  torch::Tensor out = torch::zeros({b, 1, tq, tk}, torch::kBool);
  auto acc = out.accessor<bool, 4>();
  auto keys = key_mask.accessor<bool, 2>();
  for (int64_t n = 0; n < b; ++n) {
    for (int64_t i = 0; i < tq; ++i) {
      for (int64_t j = 0; j < tk; ++j) {
        bool ok = keys[n][j];
        if (m.causal && j > i) ok = false;
        if (m.window > 0) ok = ok && (m.causal ? i - j < m.window : std::abs(i - j) <= m.window / 2);
        if (m.diagonal && i == j) ok = true;
        acc[n][0][i][j] = ok;
      }
    }
  }
  return out;
}

struct Result {
  torch::Tensor out, dq, dk, dv;
};

// Attention of q over k, v with `key_mask` under `c`, and the gradients of
// sum(out * weight). group null: one process on the given tensors.
Result run(const Case& c, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
           const torch::Tensor& key_mask, const torch::Tensor& weight, const torch::Tensor& q_pos,
           const torch::Tensor& k_pos, ContextParallelMode mode, Communicator* group) {
  torch::Tensor lq = q.clone().requires_grad_(), lk = k.clone().requires_grad_(), lv = v.clone().requires_grad_();
  torch::Tensor out;
  if (group == nullptr) {
    out = torch::scaled_dot_product_attention(lq, lk, lv, reference_mask(key_mask, q.size(2), c.mask));
  } else {
    out = context_parallel_attention(lq, lk, lv, key_mask, q_pos, k_pos, c.mask, mode, group);
  }
  (out * weight).sum().backward();
  return {out.detach(), lq.grad(), lk.grad(), lv.grad()};
}

TEST(ContextParallelAttention, MatchesOneProcessForEveryMaskAndMode) {
  const Case cases[] = {
      {"encoder global", true, {false, 0, true}},         {"decoder causal", true, {true, 0, true}},
      {"decoder causal window 3", true, {true, 3, true}}, {"encoder window 4", true, {false, 4, true}},
      {"cross-attention", false, {false, 0, false}},
  };
  for (Communicator* group : cp_groups()) {
    const int64_t cp = group->size(), rank = group->rank();
    const int64_t b = 2, h = 4, hd = 8, t = 4 * cp, s = 6 * cp;
    for (const Case& c : cases) {
      for (ContextParallelMode mode : {ContextParallelMode::AllToAll, ContextParallelMode::Ring}) {
        SCOPED_TRACE(c.name + ", " + context_parallel_mode_name(mode) + ", cp " + std::to_string(cp) + " rank " +
                     std::to_string(rank));
        const int64_t tq = t, tk = c.self ? t : s;
        const torch::Tensor q = seeded_randn(1, {b, h, tq, hd});
        const torch::Tensor k = seeded_randn(2, {b, h, tk, hd});
        const torch::Tensor v = seeded_randn(3, {b, h, tk, hd});
        const torch::Tensor weight = seeded_randn(4, {b, h, tq, hd});
        // Row 1 has padding: its last 3 keys (and, self-attention, queries).
        torch::Tensor key_mask = torch::ones({b, tk}, torch::kBool);
        key_mask[1].narrow(0, tk - 3, 3).fill_(false);
        const Result whole = run(c, q, k, v, key_mask, weight, {}, {}, mode, nullptr);

        const torch::Tensor q_pos = context_parallel_positions(tq, cp, rank);
        const torch::Tensor k_pos = context_parallel_positions(tk, cp, rank);
        auto rows = [&](const torch::Tensor& x, const torch::Tensor& pos) { return x.index_select(2, pos); };
        const Result part = run(c, rows(q, q_pos), rows(k, k_pos), rows(v, k_pos), key_mask.index_select(1, k_pos),
                                rows(weight, q_pos), q_pos, k_pos, mode, group);
        EXPECT_TRUE(all_close(part.out, rows(whole.out, q_pos), 1e-5, 1e-6)) << "output";
        EXPECT_TRUE(all_close(part.dq, rows(whole.dq, q_pos), 1e-4, 1e-6)) << "q gradient";
        EXPECT_TRUE(all_close(part.dk, rows(whole.dk, k_pos), 1e-4, 1e-6)) << "k gradient";
        EXPECT_TRUE(all_close(part.dv, rows(whole.dv, k_pos), 1e-4, 1e-6)) << "v gradient";
      }
    }
  }
}

// The ring in tiles of 3 query rows (the last one shorter), some of which see
// nothing of a block under the causal window: the same result.
TEST(ContextParallelAttention, RingInTilesOfQueryRowsMatchesOneProcess) {
  const int64_t b = 2, h = 4, hd = 8;
  const int64_t old = set_ring_tile_elements(b * h * 3 * 1);  // times the keys: 3 rows per tile
  for (Communicator* group : cp_groups()) {
    const int64_t cp = group->size(), rank = group->rank(), t = 10 * cp;
    set_ring_tile_elements(b * h * 3 * (t / cp));
    const Case c{"decoder causal window 3", true, {true, 3, true}};
    SCOPED_TRACE("cp " + std::to_string(cp) + " rank " + std::to_string(rank));
    const torch::Tensor q = seeded_randn(11, {b, h, t, hd}), k = seeded_randn(12, {b, h, t, hd});
    const torch::Tensor v = seeded_randn(13, {b, h, t, hd}), weight = seeded_randn(14, {b, h, t, hd});
    const torch::Tensor key_mask = torch::ones({b, t}, torch::kBool);
    const Result whole = run(c, q, k, v, key_mask, weight, {}, {}, ContextParallelMode::Ring, nullptr);
    const torch::Tensor pos = context_parallel_positions(t, cp, rank);
    auto rows = [&](const torch::Tensor& x) { return x.index_select(2, pos); };
    const Result part = run(c, rows(q), rows(k), rows(v), key_mask.index_select(1, pos), rows(weight), pos, pos,
                            ContextParallelMode::Ring, group);
    EXPECT_TRUE(all_close(part.out, rows(whole.out), 1e-5, 1e-6)) << "output";
    EXPECT_TRUE(all_close(part.dq, rows(whole.dq), 1e-4, 1e-6)) << "q gradient";
    EXPECT_TRUE(all_close(part.dk, rows(whole.dk), 1e-4, 1e-6)) << "k gradient";
    EXPECT_TRUE(all_close(part.dv, rows(whole.dv), 1e-4, 1e-6)) << "v gradient";
  }
  set_ring_tile_elements(old);
}

// Windows of at most a quarter of a rank's positions go by the halo
// exchange: the neighbours' edge strips instead of the whole ring.
TEST(ContextParallelAttention, HaloExchangeForNarrowWindowsMatchesOneProcess) {
  const Case cases[] = {
      {"decoder causal window 4", true, {true, 4, true}},
      {"encoder window 5", true, {false, 5, true}},
  };
  for (Communicator* group : cp_groups()) {
    const int64_t cp = group->size(), rank = group->rank(), b = 2, h = 4, hd = 8, t = 24 * cp;
    for (const Case& c : cases) {
      SCOPED_TRACE(c.name + ", cp " + std::to_string(cp) + " rank " + std::to_string(rank));
      const torch::Tensor q = seeded_randn(21, {b, h, t, hd}), k = seeded_randn(22, {b, h, t, hd});
      const torch::Tensor v = seeded_randn(23, {b, h, t, hd}), weight = seeded_randn(24, {b, h, t, hd});
      torch::Tensor key_mask = torch::ones({b, t}, torch::kBool);
      key_mask[1].narrow(0, t - 5, 5).fill_(false);
      const Result whole = run(c, q, k, v, key_mask, weight, {}, {}, ContextParallelMode::Ring, nullptr);
      const torch::Tensor pos = context_parallel_positions(t, cp, rank);
      auto rows = [&](const torch::Tensor& x) { return x.index_select(2, pos); };
      group->reset_stats();
      const Result part = run(c, rows(q), rows(k), rows(v), key_mask.index_select(1, pos), rows(weight), pos, pos,
                              ContextParallelMode::Ring, group);
      EXPECT_TRUE(all_close(part.out, rows(whole.out), 1e-5, 1e-6)) << "output";
      EXPECT_TRUE(all_close(part.dq, rows(whole.dq), 1e-4, 1e-6)) << "q gradient";
      EXPECT_TRUE(all_close(part.dk, rows(whole.dk), 1e-4, 1e-6)) << "k gradient";
      EXPECT_TRUE(all_close(part.dv, rows(whole.dv), 1e-4, 1e-6)) << "v gradient";
      EXPECT_EQ(group->stats().count("send_recv"), 0u) << "the halo exchange passes nothing round the ring";
    }
  }
}

TEST(ContextParallelAttention, LayoutGivesEachRankAnEarlyAndALateChunk) {
  EXPECT_TRUE(torch::equal(context_parallel_positions(8, 2, 0), torch::tensor({0, 1, 6, 7}, torch::kLong)));
  EXPECT_TRUE(torch::equal(context_parallel_positions(8, 2, 1), torch::tensor({2, 3, 4, 5}, torch::kLong)));
  EXPECT_TRUE(torch::equal(context_parallel_positions(8, 4, 3), torch::tensor({3, 4}, torch::kLong)));
  EXPECT_TRUE(torch::equal(context_parallel_positions(6, 1, 0), torch::arange(6, torch::kLong)));
  // Every position once over the ranks.
  torch::Tensor all = torch::cat({context_parallel_positions(24, 3, 0), context_parallel_positions(24, 3, 1),
                                  context_parallel_positions(24, 3, 2)});
  EXPECT_TRUE(torch::equal(std::get<0>(all.sort()), torch::arange(24, torch::kLong)));
  EXPECT_THROW(context_parallel_positions(10, 2, 0), std::invalid_argument);
  EXPECT_THROW(parse_context_parallel_mode("ulysses"), std::invalid_argument);
}

TEST(ContextParallelAttention, AllToAllNeedsHeadsDivisibleByTheGroup) {
  for (Communicator* group : cp_groups()) {
    const int64_t cp = group->size();
    const torch::Tensor x = seeded_randn(5, {1, cp + 1, 2, 4});
    const torch::Tensor pos = context_parallel_positions(2 * cp, cp, group->rank());
    EXPECT_THROW(context_parallel_attention(x, x, x, torch::ones({1, 2}, torch::kBool), pos, pos, {},
                                            ContextParallelMode::AllToAll, group),
                 std::invalid_argument);
  }
}

TEST(ContextParallelAttention, AllReduceSumsBothWays) {
  for (Communicator* group : cp_groups()) {
    const int64_t cp = group->size();
    const torch::Tensor x = seeded_randn(10 + group->rank(), {3}).requires_grad_();
    const torch::Tensor y = all_reduce_context_parallel(x, group);
    torch::Tensor expected = torch::zeros({3});
    for (int64_t r = 0; r < cp; ++r) expected += seeded_randn(10 + r, {3});
    EXPECT_TRUE(all_close(y, expected, 1e-6, 1e-6));
    (y * static_cast<double>(group->rank() + 1)).sum().backward();
    EXPECT_TRUE(all_close(x.grad(), torch::full({3}, cp * (cp + 1) / 2.0), 1e-6, 1e-6));
  }
}

}  // namespace
}  // namespace moetrain::parallel::cp_test
