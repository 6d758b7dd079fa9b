// Context-parallel layout and attention (context_parallel.h).
#include "parallel/context_parallel.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parallel/mpi_runtime.h"

namespace moetrain::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Masked scores: finite, so a row with no visible key in one block stays
// finite there; its weight in the merge, exp(kMasked - lse), is exactly 0.
constexpr double kMasked = -1e30;

bool is_parallel(const Communicator* group) { return group != nullptr && group->size() > 1; }

void store_group(AutogradContext* ctx, Communicator* group) {
  ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
}

Communicator* load_group(AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
}

// send [cp, n]: row j goes to rank j; returns [cp, n], row i from rank i.
torch::Tensor exchange_rows(const torch::Tensor& send, Communicator* group) {
  const torch::Tensor input = send.contiguous();
  torch::Tensor recv = torch::empty_like(input);
  const std::vector<int64_t> counts(static_cast<size_t>(group->size()), 1);
  group->all_to_all(input, recv, counts, counts);
  return recv;
}

// [B, H, T, hd] (every head, this rank's T positions) -> [B, H / cp, cp * T,
// hd] (this rank's block of heads, the positions of rank 0, then rank 1, ...).
torch::Tensor sequence_to_heads(const torch::Tensor& x, Communicator* group) {
  const int64_t cp = group->size(), b = x.size(0), h = x.size(1), t = x.size(2), hd = x.size(3);
  // Row j of the send buffer: head block j, for rank j.
  const torch::Tensor send = x.reshape({b, cp, h / cp, t, hd}).permute({1, 0, 2, 3, 4}).reshape({cp, -1});
  const torch::Tensor recv = exchange_rows(send, group);
  // Row i of the received buffer: rank i's positions of this rank's heads.
  return recv.view({cp, b, h / cp, t, hd}).permute({1, 2, 0, 3, 4}).reshape({b, h / cp, cp * t, hd});
}

// The inverse: [B, H / cp, cp * T, hd] -> [B, H, T, hd].
torch::Tensor heads_to_sequence(const torch::Tensor& x, Communicator* group) {
  const int64_t cp = group->size(), b = x.size(0), hb = x.size(1), t = x.size(2) / cp, hd = x.size(3);
  // Row i: rank i's positions.
  const torch::Tensor send = x.reshape({b, hb, cp, t, hd}).permute({2, 0, 1, 3, 4}).reshape({cp, -1});
  const torch::Tensor recv = exchange_rows(send, group);
  // Row j: head block j.
  return recv.view({cp, b, hb, t, hd}).permute({1, 0, 2, 3, 4}).reshape({b, cp * hb, t, hd});
}

struct SequenceToHeads : torch::autograd::Function<SequenceToHeads> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    return sequence_to_heads(x, group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {heads_to_sequence(grads[0], load_group(ctx)), torch::Tensor()};
  }
};

struct HeadsToSequence : torch::autograd::Function<HeadsToSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    return heads_to_sequence(x, group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {sequence_to_heads(grads[0], load_group(ctx)), torch::Tensor()};
  }
};

// Sends x to the next rank of the ring and returns the previous rank's; the
// backward sends the gradient the other way.
torch::Tensor ring_shift(const torch::Tensor& x, Communicator* group, int64_t direction) {
  const int64_t cp = group->size(), rank = group->rank();
  const torch::Tensor send = x.contiguous();
  torch::Tensor recv = torch::empty_like(send);
  group->send_recv(send, (rank + direction + cp) % cp, recv, (rank - direction + cp) % cp);
  return recv;
}

struct AllReduceBoth : torch::autograd::Function<AllReduceBoth> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    torch::Tensor out = x.clone(at::MemoryFormat::Contiguous);
    group->all_reduce(out, ReduceOp::Sum);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    torch::Tensor out = grads[0].clone(at::MemoryFormat::Contiguous);
    load_group(ctx)->all_reduce(out, ReduceOp::Sum);
    return {out, torch::Tensor()};
  }
};

// Every rank's `x` [..] stacked in rank order: [cp, ..].
torch::Tensor gather_stacked(const torch::Tensor& x, Communicator* group) {
  const torch::Tensor input = x.contiguous();
  std::vector<int64_t> shape{group->size()};
  for (int64_t d : input.sizes()) shape.push_back(d);
  torch::Tensor out = torch::empty(shape, input.options());
  group->all_gather(input, out);
  return out;
}

// [B, 1, Tq, Tk] bool: which keys each query sees.
torch::Tensor visibility(const torch::Tensor& q_positions, const torch::Tensor& k_positions,
                         const torch::Tensor& key_mask, const ContextAttentionMask& mask) {
  const torch::Tensor distance = q_positions.unsqueeze(1) - k_positions.unsqueeze(0);  // [Tq, Tk]
  torch::Tensor allowed = key_mask.unsqueeze(1);                                       // [B, 1, Tk]
  if (mask.causal) allowed = allowed & (distance >= 0).unsqueeze(0);
  if (mask.window > 0) {
    const torch::Tensor in_window = mask.causal ? distance < mask.window : distance.abs() <= mask.window / 2;
    allowed = allowed & in_window.unsqueeze(0);
  }
  if (mask.diagonal) allowed = allowed | (distance == 0).unsqueeze(0);
  return allowed.unsqueeze(1);
}

void check_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& key_mask,
                  const torch::Tensor& q_positions, const torch::Tensor& k_positions) {
  const bool ok = q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && q.size(0) == k.size(0) &&
                  q.size(1) == k.size(1) && q.size(3) == k.size(3) && key_mask.dim() == 2 &&
                  key_mask.scalar_type() == torch::kBool && key_mask.size(0) == k.size(0) &&
                  key_mask.size(1) == k.size(2) && q_positions.dim() == 1 && q_positions.size(0) == q.size(2) &&
                  k_positions.dim() == 1 && k_positions.size(0) == k.size(2);
  if (!ok) {
    throw std::invalid_argument(
        "context_parallel_attention: expected q [B, H, Tq, hd], k and v [B, H, Tk, hd], "
        "key_mask [B, Tk] bool, positions [Tq] and [Tk]; got q " +
        c10::str(q.sizes()) + ", k " + c10::str(k.sizes()) + ", v " + c10::str(v.sizes()) + ", key_mask " +
        c10::str(key_mask.sizes()) + ", positions " + c10::str(q_positions.sizes()) + " and " +
        c10::str(k_positions.sizes()));
  }
}

torch::Tensor all_to_all_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const torch::Tensor& key_mask, const torch::Tensor& q_positions,
                                   const torch::Tensor& k_positions, const ContextAttentionMask& mask,
                                   Communicator* group, double dropout_p) {
  const int64_t cp = group->size();
  if (q.size(1) % cp != 0) {
    throw std::invalid_argument("context parallelism all_to_all: " + std::to_string(cp) +
                                " ranks must divide the heads each rank attends with (" + std::to_string(q.size(1)) +
                                ")");
  }
  // Positions and key masks of the whole sequence, in the order the
  // all-to-all gathers positions (rank 0's, then rank 1's, ...).
  const torch::Tensor all_q_positions = gather_stacked(q_positions, group).reshape({-1});
  const torch::Tensor all_k_positions = gather_stacked(k_positions, group).reshape({-1});
  const torch::Tensor all_key_mask = gather_stacked(key_mask, group).permute({1, 0, 2}).reshape({key_mask.size(0), -1});
  const torch::Tensor heads_q = SequenceToHeads::apply(q, group);
  const torch::Tensor heads_k = SequenceToHeads::apply(k, group);
  const torch::Tensor heads_v = SequenceToHeads::apply(v, group);
  const torch::Tensor out = torch::scaled_dot_product_attention(
      heads_q, heads_k, heads_v, visibility(all_q_positions, all_k_positions, all_key_mask, mask), dropout_p);
  return HeadsToSequence::apply(out, group);
}

std::atomic<int64_t> g_tile_elements{int64_t{1} << 24};

// Rows of queries attended to one key block at a time: a tile's scores are
// [B, H, rows, Tk] fp32, at most g_tile_elements however long the sequence.
int64_t tile_rows(const torch::Tensor& q, int64_t keys) {
  const int64_t per_row = std::max<int64_t>(q.size(0) * q.size(1) * keys, 1);
  return std::clamp<int64_t>(g_tile_elements.load() / per_row, 1, std::max<int64_t>(q.size(2), 1));
}

// A tile of query rows against the part of a key block it may see.
struct Tile {
  int64_t first = 0, rows = 0;  // query rows [first, first + rows)
  int64_t key = 0, keys = 0;    // key columns [key, key + keys): from the first visible one to the last
  torch::Tensor visible;        // [B, 1, rows, keys] bool
};

// Calls fn(tile) for each tile of query rows that sees at least one key of
// the block, narrowed to the span of keys it sees (a window, or the causal
// edge, leaves most of a long block out).
template <typename Fn>
void for_each_visible_tile(const torch::Tensor& q, const torch::Tensor& q_positions, const torch::Tensor& k_positions,
                           const torch::Tensor& key_mask, const ContextAttentionMask& mask, Fn&& fn) {
  const int64_t rows = tile_rows(q, k_positions.size(0));
  for (int64_t first = 0; first < q.size(2); first += rows) {
    Tile tile;
    tile.first = first;
    tile.rows = std::min(rows, q.size(2) - first);
    const torch::Tensor visible = visibility(q_positions.narrow(0, first, tile.rows), k_positions, key_mask, mask);
    const torch::Tensor columns = visible.any(2).any(1).any(0).nonzero();  // [n, 1], ascending
    if (columns.size(0) == 0) continue;
    tile.key = columns[0].item<int64_t>();
    tile.keys = columns[-1].item<int64_t>() + 1 - tile.key;
    tile.visible = visible.narrow(-1, tile.key, tile.keys);
    fn(tile);
  }
}

// The ring's next chunk, received while the caller computes on the current
// one: on a blocking (MPI) group the transfer runs on a thread of its own,
// which is the only one using the group until get() returns. Elsewhere (an
// asynchronous group, or MPI without thread support) the transfer is made
// at once.
class RingTransfer {
 public:
  RingTransfer(const torch::Tensor& x, Communicator* group) {
    if (group->asynchronous() || mpi_thread_level() < MPI_THREAD_SERIALIZED) {
      ready_ = ring_shift(x, group, +1);
    } else {
      pending_ = std::async(std::launch::async, [x, group] { return ring_shift(x, group, +1); });
    }
  }
  torch::Tensor get() { return pending_.valid() ? pending_.get() : ready_; }

 private:
  torch::Tensor ready_;
  std::future<torch::Tensor> pending_;
};

// Ring attention as one autograd function. Forward: the keys and values
// travel the ring, the next chunk in flight while the current one is used;
// each block is merged into the output by its log-sum-exp, a tile of query
// rows at a time. Backward: they travel the ring again, now with the
// gradient of the chunk at hand accumulating alongside (each rank adds its
// queries' part), and one last shift brings every chunk's gradient home.
// Only this rank's q, k, v, output and log-sum-exp are kept between the two.
// Everything runs in fp32; tiles no query of which may see the block are not
// computed, and every rank makes the same transfers in the same order.
struct RingAttention : torch::autograd::Function<RingAttention> {
  // all_k_positions [cp, Tk] and all_key_mask [cp, B, Tk]: every rank's.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& q_positions,
                               const torch::Tensor& all_k_positions, const torch::Tensor& all_key_mask,
                               ContextAttentionMask mask, Communicator* group) {
    const int64_t cp = group != nullptr ? group->size() : 1, rank = group != nullptr ? group->rank() : 0;
    const torch::Tensor qf = scaled_queries(q);
    torch::Tensor out = torch::zeros(q.sizes(), qf.options());
    torch::Tensor lse = torch::full({q.size(0), q.size(1), q.size(2), 1}, kMasked, qf.options());
    torch::Tensor kv = torch::stack({k, v}).to(torch::kFloat);  // one message per step
    for (int64_t step = 0; step < cp; ++step) {
      std::optional<RingTransfer> next;
      if (step + 1 < cp) next.emplace(kv, group);
      const int64_t source = (rank - step + cp) % cp;
      for_each_visible_tile(q, q_positions, all_k_positions[source], all_key_mask[source], mask, [&](const Tile& t) {
        torch::Tensor tile_out = out.narrow(2, t.first, t.rows), tile_lse = lse.narrow(2, t.first, t.rows);
        const torch::Tensor keys = kv[0].narrow(2, t.key, t.keys), values = kv[1].narrow(2, t.key, t.keys);
        const torch::Tensor scores =
            torch::matmul(qf.narrow(2, t.first, t.rows), keys.transpose(-2, -1)).masked_fill(~t.visible, kMasked);
        const torch::Tensor block_lse = torch::logsumexp(scores, -1, /*keepdim=*/true);
        const torch::Tensor block_out = torch::matmul(torch::exp(scores - block_lse), values);
        const torch::Tensor merged = torch::logaddexp(tile_lse, block_lse);
        tile_out.copy_(tile_out * torch::exp(tile_lse - merged) + block_out * torch::exp(block_lse - merged));
        tile_lse.copy_(merged);
      });
      if (next) kv = next->get();
    }
    ctx->save_for_backward({q, k, v, q_positions, all_k_positions, all_key_mask, out, lse});
    store_group(ctx, group);
    ctx->saved_data["causal"] = mask.causal;
    ctx->saved_data["window"] = mask.window;
    ctx->saved_data["diagonal"] = mask.diagonal;
    return out.to(q.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &q_positions = saved[3];
    const torch::Tensor &all_k_positions = saved[4], &all_key_mask = saved[5], &out = saved[6], &lse = saved[7];
    Communicator* group = load_group(ctx);
    const ContextAttentionMask mask{ctx->saved_data["causal"].toBool(), ctx->saved_data["window"].toInt(),
                                    ctx->saved_data["diagonal"].toBool()};
    const int64_t cp = group != nullptr ? group->size() : 1, rank = group != nullptr ? group->rank() : 0;
    const torch::Tensor qf = scaled_queries(q);
    const torch::Tensor d_out = grads[0].to(torch::kFloat);
    const torch::Tensor delta = (d_out * out).sum(-1, /*keepdim=*/true);  // [B, H, Tq, 1]
    torch::Tensor dqf = torch::zeros_like(qf);
    torch::Tensor kv = torch::stack({k, v}).to(torch::kFloat);
    torch::Tensor d_kv = torch::zeros_like(kv);  // the gradient of the chunk at hand
    for (int64_t step = 0; step < cp; ++step) {
      std::optional<RingTransfer> next;
      if (step + 1 < cp) next.emplace(kv, group);
      const int64_t source = (rank - step + cp) % cp;
      for_each_visible_tile(q, q_positions, all_k_positions[source], all_key_mask[source], mask, [&](const Tile& t) {
        const torch::Tensor q_tile = qf.narrow(2, t.first, t.rows);
        const torch::Tensor d_out_tile = d_out.narrow(2, t.first, t.rows);
        const torch::Tensor keys = kv[0].narrow(2, t.key, t.keys), values = kv[1].narrow(2, t.key, t.keys);
        const torch::Tensor scores = torch::matmul(q_tile, keys.transpose(-2, -1)).masked_fill(~t.visible, kMasked);
        // The final softmax's entries for this block.
        const torch::Tensor probs = torch::exp(scores - lse.narrow(2, t.first, t.rows));
        const torch::Tensor d_scores =
            probs * (torch::matmul(d_out_tile, values.transpose(-2, -1)) - delta.narrow(2, t.first, t.rows));
        dqf.narrow(2, t.first, t.rows).add_(torch::matmul(d_scores, keys));
        d_kv[0].narrow(2, t.key, t.keys).add_(torch::matmul(d_scores.transpose(-2, -1), q_tile));
        d_kv[1].narrow(2, t.key, t.keys).add_(torch::matmul(probs.transpose(-2, -1), d_out_tile));
      });
      // The gradient follows its chunk, after the chunk itself has arrived
      // (one transfer on the group at a time).
      if (next) {
        kv = next->get();
        d_kv = ring_shift(d_kv, group, +1);
      }
    }
    // The chunk at hand is the next rank's: one more shift takes each home.
    if (cp > 1) d_kv = ring_shift(d_kv, group, +1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
    return {(dqf * scale).to(q.scalar_type()),
            d_kv[0].to(k.scalar_type()),
            d_kv[1].to(v.scalar_type()),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }

  static torch::Tensor scaled_queries(const torch::Tensor& q) {
    return q.to(torch::kFloat) * (1.0 / std::sqrt(static_cast<double>(q.size(3))));
  }
};

// Every rank's edge strips: x [cp * ..] gathered forward; backward, each
// rank's strips get the sum of the gradients every rank computed for them.
struct GatherStrips : torch::autograd::Function<GatherStrips> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    return gather_stacked(x, group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Communicator* group = load_group(ctx);
    const torch::Tensor all = grads[0].contiguous();
    torch::Tensor mine = torch::empty({all.numel() / group->size()}, all.options());
    group->reduce_scatter(all.view({-1}), mine);
    return {mine.view(all.sizes().slice(1)), torch::Tensor()};
  }
};

// The first and last `width` positions of each of this rank's two chunks,
// along dim `dim` of x (whose size there is 2 chunks): [4, ...].
torch::Tensor edge_strips(const torch::Tensor& x, int64_t dim, int64_t width) {
  const int64_t chunk = x.size(dim) / 2;
  return torch::stack({x.narrow(dim, 0, width), x.narrow(dim, chunk - width, width), x.narrow(dim, chunk, width),
                       x.narrow(dim, 2 * chunk - width, width)});
}

// Local (sliding-window) attention by a halo exchange: a window of w reaches
// no further than the first or last w positions of a neighbouring chunk, so
// each rank gathers the edge strips of the other ranks' chunks (4 x w
// positions each) instead of passing whole chunks round the ring, and
// attends over its own keys plus the strips next to its chunks in one
// block. Rank r holds chunks r and 2cp-1-r, so its chunks' neighbours are
// the first chunk of rank r-1 (its last strip) and of rank r+1 (its first
// strip), and the second chunk of rank r+1 (its last strip) and of rank r-1
// (its first strip); the other neighbours are its own chunks. Needs chunks
// of at least 2 w positions (the strips of a chunk then do not overlap).
torch::Tensor halo_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& key_mask, const torch::Tensor& q_positions,
                             const torch::Tensor& k_positions, const ContextAttentionMask& mask, Communicator* group) {
  const int64_t cp = group->size(), rank = group->rank(), width = mask.window;
  // [cp, 4, 2, B, H, w, hd]: every rank's strips of k and v.
  const torch::Tensor strips = GatherStrips::apply(edge_strips(torch::stack({k, v}), 3, width), group);
  const torch::Tensor positions = gather_stacked(edge_strips(k_positions, 0, width), group);  // [cp, 4, w]
  const torch::Tensor masks = gather_stacked(edge_strips(key_mask, 1, width), group);         // [cp, 4, B, w]
  std::vector<torch::Tensor> keys{k}, values{v}, key_positions{k_positions}, key_masks{key_mask};
  // (rank, strip): strips 0 and 1 are the first and last w of a rank's first
  // chunk, 2 and 3 those of its second.
  std::vector<std::pair<int64_t, int64_t>> needed;
  if (rank > 0) needed.insert(needed.end(), {{rank - 1, 1}, {rank - 1, 2}});
  if (rank + 1 < cp) needed.insert(needed.end(), {{rank + 1, 0}, {rank + 1, 3}});
  for (const auto& [r, e] : needed) {
    keys.push_back(strips[r][e][0]);
    values.push_back(strips[r][e][1]);
    key_positions.push_back(positions[r][e]);
    key_masks.push_back(masks[r][e]);
  }
  // In position order, so the keys a tile of queries sees form a narrow span.
  const torch::Tensor all_positions = torch::cat(key_positions);
  const torch::Tensor order = all_positions.argsort();
  return RingAttention::apply(q, torch::cat(keys, 2).index_select(2, order),
                              torch::cat(values, 2).index_select(2, order), q_positions,
                              all_positions.index_select(0, order).unsqueeze(0),
                              torch::cat(key_masks, 1).index_select(1, order).unsqueeze(0), mask, nullptr);
}

torch::Tensor ring_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& key_mask, const torch::Tensor& q_positions,
                             const torch::Tensor& k_positions, const ContextAttentionMask& mask, Communicator* group,
                             double dropout_p) {
  if (dropout_p > 0) {
    throw std::invalid_argument("context parallelism ring: attention dropout is not supported (use all_to_all)");
  }
  // A window no wider than half a chunk: the neighbours' edges suffice.
  if (mask.window > 0 && k.size(2) == q.size(2) && k.size(2) >= 4 * mask.window) {
    return halo_attention(q, k, v, key_mask, q_positions, k_positions, mask, group);
  }
  // Every rank's key positions and masks (small), so each step knows the
  // block it holds without sending them along.
  return RingAttention::apply(q, k, v, q_positions, gather_stacked(k_positions, group), gather_stacked(key_mask, group),
                              mask, group);
}

}  // namespace

ContextParallelMode parse_context_parallel_mode(const std::string& name) {
  if (name == "all_to_all") return ContextParallelMode::AllToAll;
  if (name == "ring") return ContextParallelMode::Ring;
  throw std::invalid_argument("context parallelism mode must be ring or all_to_all, got '" + name + "'");
}

const char* context_parallel_mode_name(ContextParallelMode mode) {
  return mode == ContextParallelMode::Ring ? "ring" : "all_to_all";
}

torch::Tensor context_parallel_positions(int64_t length, int64_t cp, int64_t rank, const torch::Device& device) {
  if (cp < 1 || rank < 0 || rank >= cp || length % (2 * cp) != 0) {
    throw std::invalid_argument("context parallelism: a sequence of " + std::to_string(length) +
                                " positions does not split into 2 x " + std::to_string(cp) + " equal chunks (rank " +
                                std::to_string(rank) + ")");
  }
  const auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  if (cp == 1) return torch::arange(length, opts);
  const int64_t chunk = length / (2 * cp);
  return torch::cat({torch::arange(rank * chunk, (rank + 1) * chunk, opts),
                     torch::arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk, opts)});
}

torch::Tensor context_parallel_slice(const torch::Tensor& x, int64_t dim, int64_t cp, int64_t rank) {
  if (cp == 1) return x;
  return x.index_select(dim, context_parallel_positions(x.size(dim), cp, rank, x.device()));
}

torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         const torch::Tensor& key_mask, const torch::Tensor& q_positions,
                                         const torch::Tensor& k_positions, const ContextAttentionMask& mask,
                                         ContextParallelMode mode, Communicator* group, double dropout_p) {
  check_inputs(q, k, v, key_mask, q_positions, k_positions);
  if (!is_parallel(group)) {
    return torch::scaled_dot_product_attention(q, k, v, visibility(q_positions, k_positions, key_mask, mask),
                                               dropout_p);
  }
  if (mode == ContextParallelMode::AllToAll) {
    return all_to_all_attention(q, k, v, key_mask, q_positions, k_positions, mask, group, dropout_p);
  }
  return ring_attention(q, k, v, key_mask, q_positions, k_positions, mask, group, dropout_p);
}

int64_t set_ring_tile_elements(int64_t elements) {
  if (elements < 1) throw std::invalid_argument("set_ring_tile_elements: must be positive");
  return g_tile_elements.exchange(elements);
}

torch::Tensor all_reduce_context_parallel(const torch::Tensor& x, Communicator* group) {
  if (!is_parallel(group)) return x;
  return AllReduceBoth::apply(x, group);
}

}  // namespace moetrain::parallel
