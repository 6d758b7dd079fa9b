// The MoE layer with its experts split over an expert-parallel group must
// compute what the single-process layer computes.
//
// Every rank builds the same layer from one seed, splits it with
// MoELayer::parallelize (keeping its block of experts) and has its own tokens
// (a seed per world rank). The layer's forward routes with the replicated
// router, permutes, dispatches, runs only this rank's experts, combines and
// unpermutes. The reference is the single-process MoELayer run on
// each group member's tokens, all computed locally on every rank (the tokens
// are reproducible from their seeds), so it does not rely on the communicator
// under test. Checked, fp32, rtol 1e-5:
//   - output and input gradient: this rank's, against the reference on its tokens;
//   - router weight gradient: this rank's, against the reference on its tokens
//     (the router is replicated; its gradient is reduced over DP elsewhere);
//   - expert weight gradients of the local slice: against the SUM over the
//     group's ranks of the reference gradients of those experts;
//   - all_to_all traffic: the counts, then the rows sent, x width x 4 bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "models/moe_layer.h"
#include "parallel/expert_dispatch.h"
#include "tests/multirank/expert_parallel/ep_test_world.h"

namespace moetrain::parallel::ep_test {
namespace {

using models::ModelConfig;
using models::MoELayer;

constexpr int64_t kModel = 12;  // d_model: more than the experts, so any routing can be forced
constexpr int64_t kExpertFfn = 8;
constexpr uint64_t kLayerSeed = 2024;

ModelConfig moe_config(int64_t experts, int64_t top_k) {
  ModelConfig c;
  c.d_model = kModel;
  c.n_heads = 2;
  c.d_ff = kExpertFfn;
  c.dropout = 0.0;
  c.init_std = 0.3;
  c.bias = true;
  c.activation = models::Activation::GELU;
  c.moe.num_experts = experts;
  c.moe.top_k = top_k;
  c.moe.capacity_factor = 0.0;  // dropless
  c.moe.d_ff_expert = kExpertFfn;
  c.moe.normalize_top_k = true;
  return c;
}

// The same layer on every rank: one seed, biases made non-zero.
MoELayer make_layer(const ModelConfig& cfg) {
  torch::manual_seed(kLayerSeed);
  MoELayer layer(cfg);
  torch::NoGradGuard no_grad;
  layer->experts_fc1_bias.normal_(0.0, 0.2);
  layer->experts_fc2_bias.normal_(0.0, 0.2);
  return layer;
}

// How the tokens of group rank 1 (or of every rank) are made.
enum class Tokens {
  Random,                // random tokens everywhere
  AvoidExpertOne,        // every rank's tokens route to any expert but expert 1
  AvoidRankOnesExperts,  // ... to none of the experts group rank 1 holds
  RankOnePadded,         // group rank 1 has tokens, all masked out
  RankOneEmpty,          // group rank 1 has no token at all
};

const char* name_of(Tokens t) {
  switch (t) {
    case Tokens::Random: return "random";
    case Tokens::AvoidExpertOne: return "avoid expert 1";
    case Tokens::AvoidRankOnesExperts: return "avoid rank 1's experts";
    case Tokens::RankOnePadded: return "rank 1 all padded";
    case Tokens::RankOneEmpty: return "rank 1 no tokens";
  }
  return "?";
}

struct RankTokens {
  torch::Tensor x;         // [N, D]
  torch::Tensor mask;      // [N] bool
  torch::Tensor upstream;  // [N, D]: d(loss)/d(output)
};

// Tokens x with router logits close to -1 for the experts in `avoid` and to +1
// for the others (a small random part keeps tokens distinct), so top-k never
// picks an avoided expert while k <= E - |avoid|.
torch::Tensor tokens_avoiding(const torch::Tensor& router_weight, const std::vector<int64_t>& avoid, int64_t n) {
  const int64_t experts = router_weight.size(0);
  torch::Tensor target = torch::ones({experts, 1}, torch::kDouble);
  for (int64_t e : avoid) target[e][0] = -1.0;
  const torch::Tensor direction = torch::linalg_pinv(router_weight.detach().to(torch::kDouble)).matmul(target);
  return (direction.t() + 0.05 * torch::randn({n, router_weight.size(1)}, torch::kDouble)).to(torch::kFloat);
}

RankTokens tokens_of(int64_t world_rank, int64_t group_rank, int64_t group_size, Tokens kind, const MoELayer& layer) {
  torch::manual_seed(1000 + static_cast<uint64_t>(world_rank));
  const int64_t experts = layer->num_experts();
  const int64_t local = experts / group_size;
  int64_t n = 5 + 2 * world_rank;
  if (kind == Tokens::RankOneEmpty && group_rank == 1) n = 0;
  RankTokens t;
  if (kind == Tokens::AvoidExpertOne) {
    t.x = tokens_avoiding(layer->router->weight, {1}, n);
  } else if (kind == Tokens::AvoidRankOnesExperts) {
    std::vector<int64_t> avoid;
    for (int64_t e = local; e < 2 * local; ++e) avoid.push_back(e);
    t.x = tokens_avoiding(layer->router->weight, avoid, n);
  } else {
    t.x = torch::randn({n, kModel});
  }
  t.mask = torch::ones({n}, torch::kBool);
  if (kind == Tokens::RankOnePadded && group_rank == 1) t.mask.fill_(false);
  t.upstream = torch::randn({n, kModel});
  return t;
}

torch::Tensor grad_or_zeros(const torch::Tensor& p) {
  return p.grad().defined() ? p.grad().clone() : torch::zeros_like(p);
}

// rtol 1e-5 (the tolerance of every layout against the single process). The
// atol, 4e-6 of the tensor's largest entry (at least of 1), covers entries
// that are sums with cancellation: summed over the group in another order
// (one matmul over every source's rows here, per-rank sums added afterwards
// in the reference), they differ by fp32 rounding of the O(1) terms, a few
// ulps each over the group's tokens, not of the small result. (A router
// gradient that is all cancellation, about 1e-6 everywhere, differs by that
// much between CPUs.)
void expect_close(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double diff = got.numel() == 0 ? 0.0 : (got - want).abs().max().item<double>();
  const double scale = want.numel() == 0 ? 0.0 : want.abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(got, want, /*rtol=*/1e-5, /*atol=*/4e-6 * std::max(scale, 1.0)))
      << what << ": max abs diff " << diff << " (max |want| " << scale << ")";
}

struct Reference {
  torch::Tensor output, input_grad, router_grad;  // this rank's tokens
  torch::Tensor fc1_w, fc1_b, fc2_w, fc2_b;       // summed over the group
};

// The single-process layer on every group member's tokens.
Reference single_process_reference(const ModelConfig& cfg, const ExpertGroup& g, Tokens kind) {
  MoELayer ref = make_layer(cfg);
  Reference r;
  const int64_t n = static_cast<int64_t>(g.world_ranks.size());
  for (int64_t m = 0; m < n; ++m) {
    ref->zero_grad();
    RankTokens t = tokens_of(g.world_ranks[m], m, n, kind, ref);
    const torch::Tensor x = t.x.clone().requires_grad_();
    const torch::Tensor y = ref->forward(x, t.mask).hidden;
    (y * t.upstream).sum().backward();
    const torch::Tensor fc1_w = grad_or_zeros(ref->experts_fc1_weight);
    const torch::Tensor fc1_b = grad_or_zeros(ref->experts_fc1_bias);
    const torch::Tensor fc2_w = grad_or_zeros(ref->experts_fc2_weight);
    const torch::Tensor fc2_b = grad_or_zeros(ref->experts_fc2_bias);
    if (m == 0) {
      r.fc1_w = fc1_w;
      r.fc1_b = fc1_b;
      r.fc2_w = fc2_w;
      r.fc2_b = fc2_b;
    } else {
      r.fc1_w += fc1_w;
      r.fc1_b += fc1_b;
      r.fc2_w += fc2_w;
      r.fc2_b += fc2_b;
    }
    if (m == g.comm->rank()) {
      r.output = y.detach();
      r.input_grad = x.grad().defined() ? x.grad() : torch::zeros_like(x);
      r.router_grad = grad_or_zeros(ref->router->weight);
    }
  }
  return r;
}

void check_expert_parallel_matches_single(Tokens kind) {
  for (ExpertGroup& g : expert_groups()) {
    Communicator* group = g.comm.get();
    const int64_t n = group->size(), me = group->rank();
    for (int64_t experts : {4, 8}) {
      for (int64_t top_k : {1, 2}) {
        std::ostringstream what_s;
        what_s << name_of(kind) << ", EP group of " << n << ", rank " << me << ", E=" << experts << ", top-" << top_k;
        const std::string what = what_s.str();
        const ModelConfig cfg = moe_config(experts, top_k);
        const int64_t local = experts / n;
        const Reference ref = single_process_reference(cfg, g, kind);

        // Expert-parallel path: the layer built whole, then split.
        MoELayer mine = make_layer(cfg);
        models::ModelParallelism mp;
        mp.ep = group;
        const models::ParameterSlices slices = mine->parallelize(mp);
        ASSERT_EQ(mine->num_local_experts(), local) << what;
        ASSERT_EQ(slices.at("experts_fc1_weight").start, (std::vector<int64_t>{me * local, 0, 0})) << what;
        ASSERT_EQ(slices.at("experts_fc2_bias").global_shape, (std::vector<int64_t>{experts, kModel})) << what;
        const RankTokens t = tokens_of(g.world_ranks[me], me, n, kind, mine);
        const torch::Tensor x = t.x.clone().requires_grad_();

        // What this rank sends (the routing is local: no communication).
        const models::RoutingResult routing =
            models::route_tokens(mine->router_logits(x.detach()), t.mask, top_k, 0.0, cfg.moe.normalize_top_k);
        const models::PermutedTokens permuted = models::permute_tokens(x.detach(), routing);
        if (kind == Tokens::AvoidExpertOne) {
          EXPECT_EQ(permuted.tokens_per_expert[1], 0) << what << ": the tokens were meant to avoid expert 1";
        }
        if (kind == Tokens::AvoidRankOnesExperts) {
          for (int64_t e = local; e < 2 * local; ++e) {
            EXPECT_EQ(permuted.tokens_per_expert[e], 0) << what << ": the tokens were meant to avoid expert " << e;
          }
        }
        group->reset_stats();
        const torch::Tensor y = mine->forward(x, t.mask).hidden;
        (y * t.upstream).sum().backward();
        // What this rank's experts received, for the traffic check.
        int64_t received = 0;
        {
          const auto counts = torch::tensor(permuted.tokens_per_expert, torch::kLong);
          auto gathered = torch::zeros({n * experts}, torch::kLong);
          group->all_gather(counts, gathered);
          for (int64_t src = 0; src < n; ++src) {
            received += gathered.narrow(0, src * experts + me * local, local).sum().item<int64_t>();
          }
        }

        expect_close(y.detach(), ref.output, what + ": output");
        expect_close(x.grad().defined() ? x.grad() : torch::zeros_like(x), ref.input_grad, what + ": input grad");
        expect_close(grad_or_zeros(mine->router->weight), ref.router_grad, what + ": router grad");
        expect_close(grad_or_zeros(mine->experts_fc1_weight), ref.fc1_w.narrow(0, me * local, local),
                     what + ": fc1 weight grad");
        expect_close(grad_or_zeros(mine->experts_fc1_bias), ref.fc1_b.narrow(0, me * local, local),
                     what + ": fc1 bias grad");
        expect_close(grad_or_zeros(mine->experts_fc2_weight), ref.fc2_w.narrow(0, me * local, local),
                     what + ": fc2 weight grad");
        expect_close(grad_or_zeros(mine->experts_fc2_bias), ref.fc2_b.narrow(0, me * local, local),
                     what + ": fc2 bias grad");

        // Traffic: E int64 counts, then M rows out and R rows back in forward,
        // the same again in backward (4 bytes per fp32 element).
        const int64_t sent = permuted.hidden.size(0);
        const OpStats& a2a = group->stats().at("all_to_all");
        EXPECT_EQ(a2a.calls, 5) << what;
        EXPECT_EQ(a2a.bytes, experts * 8 + 2 * (sent + received) * kModel * 4) << what;
        if ((kind == Tokens::RankOnePadded || kind == Tokens::RankOneEmpty) && me == 1) {
          EXPECT_EQ(sent, 0) << what;
        }
        if (kind == Tokens::AvoidRankOnesExperts && me == 1) {
          EXPECT_EQ(received, 0) << what;
        }
      }
    }
  }
}

TEST(ExpertParallelMoE, BalancedRandomTokens) { check_expert_parallel_matches_single(Tokens::Random); }

TEST(ExpertParallelMoE, OneExpertGetsNoTokenFromAnyRank) {
  check_expert_parallel_matches_single(Tokens::AvoidExpertOne);
}

TEST(ExpertParallelMoE, OneRanksExpertsGetNoToken) {
  check_expert_parallel_matches_single(Tokens::AvoidRankOnesExperts);
}

TEST(ExpertParallelMoE, RankWithOnlyPaddedTokensSendsNothing) {
  check_expert_parallel_matches_single(Tokens::RankOnePadded);
}

TEST(ExpertParallelMoE, RankWithNoTokensSendsNothing) { check_expert_parallel_matches_single(Tokens::RankOneEmpty); }

}  // namespace
}  // namespace moetrain::parallel::ep_test
