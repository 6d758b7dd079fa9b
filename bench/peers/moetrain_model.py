"""moetrain's MoE encoder-decoder (models/) in plain PyTorch, for timing it
against moetrain in eager mode and under torch.compile.

The same architecture, parameter for parameter (the same names and shapes,
so the same count), and the same computation in the same dtypes:
  - pre-norm encoder and decoder layers with final norms; norms compute their
    statistics in fp32 and return the input dtype;
  - embeddings x sqrt(d_model) (scale_embeddings) plus absolute positions
    (sinusoidal, sinusoidal_fairseq, learned) or rotary q/k;
  - attention through scaled_dot_product_attention with moetrain's boolean
    masks (padding, causal, local window; dynamic mixes local and global);
  - the MoE layer: fp32 router, softmax, top-k (renormalised), GShard
    capacity (choice-major priority, 0 = dropless), tokens permuted by a
    stable sort by expert, each expert's FFN on its segment, gate-weighted
    fp32 index_add back; the load-balancing and z losses. Under
    torch.compile the permutation and the expert loop (data-dependent
    shapes) stay eager, everything else compiles;
  - residual and FFN-hidden dropout p = dropout, attention dropout.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def activation(x, kind):
    return {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}[kind](x)


def linear(inp, out, bias, std):
    layer = nn.Linear(inp, out, bias=bias)
    nn.init.normal_(layer.weight, 0.0, std)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class Norm(nn.Module):
    def __init__(self, kind, dim, eps):
        super().__init__()
        self.kind, self.dim, self.eps = kind, dim, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if kind == "layernorm" else None

    def forward(self, x):
        x32 = x.float()
        if self.kind == "layernorm":
            y = F.layer_norm(x32, (self.dim,), self.weight.float(), self.bias.float(), self.eps)
        else:
            y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def sinusoidal_table(rows, dim):
    pos = torch.arange(rows, dtype=torch.float64).unsqueeze(1)
    even = torch.arange(0, dim, 2, dtype=torch.float64)
    angles = pos / torch.pow(10000.0, even / dim)
    table = torch.zeros(rows, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table.float()


def fairseq_table(rows, dim):
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(rows, dtype=torch.float32).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], 1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(rows, 1)], 1)
    return table


class AbsolutePositions(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.position == "learned":
            self.weight = nn.Parameter(torch.empty(cfg.max_positions, cfg.d_model).normal_(0.0, cfg.init_std))
        elif cfg.position == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(cfg.max_positions, cfg.d_model))
        else:  # sinusoidal_fairseq: position p is row p + 1
            self.register_buffer("table", fairseq_table(cfg.max_positions + 1, cfg.d_model)[1:].clone())
        self.learned = cfg.position == "learned"

    def forward(self, x):
        source = self.weight if self.learned else self.table
        return x + source[: x.shape[1]].to(x.dtype).unsqueeze(0)


def apply_rotary(x, theta):
    length, head_dim = x.shape[2], x.shape[3]
    half = head_dim // 2
    inv_freq = torch.pow(theta, -torch.arange(0, half, dtype=torch.float32, device=x.device) * (2.0 / head_dim))
    angles = torch.arange(length, dtype=torch.float32, device=x.device).unsqueeze(1) * inv_freq.unsqueeze(0)
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([angles.sin(), angles.sin()], -1)
    x32 = x.float()
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], -1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def self_attention_mask(padding_mask, causal, window):
    """models/attention.cpp's mask: [B, 1, T, T] bool, diagonal always visible."""
    t = padding_mask.shape[1]
    q = torch.arange(t, device=padding_mask.device).unsqueeze(1)
    k = torch.arange(t, device=padding_mask.device).unsqueeze(0)
    allowed = torch.ones(t, t, dtype=torch.bool, device=padding_mask.device)
    if causal:
        allowed = allowed & (k <= q)
    if window > 0:
        allowed = allowed & ((q - k < window) if causal else ((q - k).abs() <= window // 2))
    mask = allowed.unsqueeze(0) & padding_mask.unsqueeze(1)
    mask = mask | torch.eye(t, dtype=torch.bool, device=padding_mask.device).unsqueeze(0)
    return mask.unsqueeze(1)


def self_attention_masks(cfg, padding_mask, causal):
    masks = {}
    if cfg.attention != "local":
        masks["global"] = self_attention_mask(padding_mask, causal, 0)
    if cfg.attention != "global":
        masks["local"] = self_attention_mask(padding_mask, causal, cfg.local_window)
    return masks


def cross_attention_mask(src_padding_mask, tgt_len):
    keys = src_padding_mask | ~src_padding_mask.any(1, keepdim=True)
    return keys.unsqueeze(1).unsqueeze(1).expand(keys.shape[0], 1, tgt_len, keys.shape[1])


class Attention(nn.Module):
    def __init__(self, cfg, kind, rotary):
        super().__init__()
        d = cfg.d_model
        self.kind, self.rotary, self.heads, self.head_dim = kind, rotary, cfg.n_heads, d // cfg.n_heads
        self.theta, self.attention_dropout = cfg.rope_theta, cfg.attention_dropout
        self.q_proj = linear(d, d, cfg.bias, cfg.init_std)
        self.k_proj = linear(d, d, cfg.bias, cfg.init_std)
        self.v_proj = linear(d, d, cfg.bias, cfg.init_std)
        self.o_proj = linear(d, d, cfg.bias, cfg.init_std)
        self.gate = linear(d, cfg.n_heads, cfg.bias, cfg.init_std) if kind == "dynamic" else None

    def forward(self, x, kv, masks):
        b, tq, tk = x.shape[0], x.shape[1], kv.shape[1]

        def heads(t, length):
            return t.view(b, length, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x), tq), heads(self.k_proj(kv), tk), heads(self.v_proj(kv), tk)
        if self.rotary:
            q, k = apply_rotary(q, self.theta), apply_rotary(k, self.theta)
        p = self.attention_dropout if self.training else 0.0
        if self.kind == "global":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=masks["global"], dropout_p=p)
        elif self.kind == "local":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=masks["local"], dropout_p=p)
        else:
            local = F.scaled_dot_product_attention(q, k, v, attn_mask=masks["local"], dropout_p=p)
            glob = F.scaled_dot_product_attention(q, k, v, attn_mask=masks["global"], dropout_p=p)
            g = torch.sigmoid(self.gate(x)).transpose(1, 2).unsqueeze(-1)
            out = g * local + (1 - g) * glob
        return self.o_proj(out.transpose(1, 2).reshape(b, tq, self.heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.act, self.dropout = cfg.activation, cfg.dropout
        self.fc1 = linear(cfg.d_model, cfg.d_ff, cfg.bias, cfg.init_std)
        self.fc2 = linear(cfg.d_ff, cfg.d_model, cfg.bias, cfg.init_std)

    def forward(self, x):
        return self.fc2(F.dropout(activation(self.fc1(x), self.act), self.dropout, self.training))


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e, f, d = cfg.moe.num_experts, cfg.expert_ffn_dim(), cfg.d_model
        self.num_experts, self.top_k = e, cfg.moe.top_k
        self.capacity_factor, self.normalize = cfg.moe.capacity_factor, cfg.moe.normalize_top_k
        self.act, self.dropout = cfg.activation, cfg.dropout
        self.router = linear(d, e, False, cfg.init_std)
        self.experts_fc1_weight = nn.Parameter(torch.empty(e, f, d).normal_(0.0, cfg.init_std))
        self.experts_fc1_bias = nn.Parameter(torch.zeros(e, f)) if cfg.bias else None
        self.experts_fc2_weight = nn.Parameter(torch.empty(e, d, f).normal_(0.0, cfg.init_std))
        self.experts_fc2_bias = nn.Parameter(torch.zeros(e, d)) if cfg.bias else None

    def expert_parameters_per_expert(self):
        n = self.experts_fc1_weight[0].numel() + self.experts_fc2_weight[0].numel()
        if self.experts_fc1_bias is not None:
            n += self.experts_fc1_bias[0].numel() + self.experts_fc2_bias[0].numel()
        return n

    # Data-dependent shapes (each expert's segment size is known only on the
    # host), so torch.compile leaves this part eager: the rest of the layer
    # compiles to one graph that does not recompile as the counts change.
    @torch.compiler.disable
    def dispatch(self, x, expert_index, kept, gates, tokens_per_expert):
        """Kept (token, choice) copies grouped by expert (token order within),
        each expert's FFN on its segment, gate-weighted fp32 sum back to
        [N, D] in x's dtype."""
        n, k = expert_index.shape
        flat_token = torch.arange(n, device=x.device).unsqueeze(1).expand(n, k).reshape(-1)
        selected = kept.reshape(-1).nonzero().squeeze(1)
        order = expert_index.reshape(-1).index_select(0, selected).sort(stable=True).indices
        source = selected.index_select(0, order)
        token_index = flat_token.index_select(0, source)
        token_gates = gates.reshape(-1).index_select(0, source)
        hidden = x.index_select(0, token_index)
        outputs, offset = [], 0
        for expert, count in enumerate(tokens_per_expert.tolist()):
            if count == 0:
                continue
            segment = hidden[offset:offset + count]
            offset += count
            b1 = self.experts_fc1_bias[expert] if self.experts_fc1_bias is not None else None
            b2 = self.experts_fc2_bias[expert] if self.experts_fc2_bias is not None else None
            h = activation(F.linear(segment, self.experts_fc1_weight[expert], b1), self.act)
            h = F.dropout(h, self.dropout, self.training)
            outputs.append(F.linear(h, self.experts_fc2_weight[expert], b2))
        out = torch.cat(outputs, 0) if outputs else x.new_zeros(0, x.shape[1])
        weighted = out.float() * token_gates.unsqueeze(1)
        y = torch.zeros(n, x.shape[1], dtype=torch.float32, device=x.device).index_add(0, token_index, weighted)
        return y.to(x.dtype)

    def forward(self, x, mask):
        """x [N, D], mask [N] bool -> (y [N, D], aux loss, z loss)."""
        n, e, k = x.shape[0], self.num_experts, self.top_k
        logits = F.linear(x.float(), self.router.weight.float())
        probs = torch.softmax(logits, -1)
        top_p, top_i = probs.topk(k, -1)
        gates = top_p / top_p.sum(-1, keepdim=True) if self.normalize else top_p
        valid = mask.unsqueeze(1).expand(n, k)
        gates = torch.where(valid, gates, torch.zeros((), dtype=gates.dtype, device=gates.device))
        # Choice-major priority: row c * N + t is token t's choice c.
        expert_cm = top_i.t().reshape(-1)
        valid_cm = valid.t().reshape(-1)
        one_hot = F.one_hot(expert_cm, e) * valid_cm.unsqueeze(1).long()
        assigned = one_hot.sum(0)
        kept_cm = valid_cm
        if self.capacity_factor > 0:
            # ceil(capacity_factor * valid tokens * k / E), on the device.
            capacity = torch.ceil(self.capacity_factor * mask.sum().double() * k / e - 1e-9)
            slot = (one_hot.cumsum(0) * one_hot).sum(1) - 1
            kept_cm = valid_cm & (slot < capacity)
        kept = kept_cm.view(k, n).t()
        tokens_per_expert = (one_hot * kept_cm.unsqueeze(1).long()).sum(0)
        expert_index = top_i.masked_fill(~valid, -1)
        y = self.dispatch(x, expert_index, kept, gates, tokens_per_expert)

        n_valid = mask.sum().float().clamp_min(1.0)
        f = assigned.float() / (n_valid * k)
        p = torch.where(mask.unsqueeze(1), probs, torch.zeros((), device=x.device)).sum(0) / n_valid
        aux = e * (f * p).sum()
        lse_sq = torch.logsumexp(logits, -1).square()
        z = torch.where(mask, lse_sq, torch.zeros((), device=x.device)).sum() / n_valid
        return y, aux, z


def feed_forward(layer, h, padding_mask):
    """Dense FFN or MoE on h [B, T, D]; zero losses for a dense layer."""
    if layer.moe is None:
        zero = torch.zeros((), device=h.device)
        return layer.ffn(h), zero, zero
    b, t, d = h.shape
    y, aux, z = layer.moe(h.reshape(b * t, d), padding_mask.reshape(b * t))
    return y.view(b, t, d), aux, z


class EncoderLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        self.dropout = cfg.dropout
        rotary = cfg.position == "rotary"
        self.self_attn_norm = Norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, cfg.attention, rotary)
        self.ffn_norm = Norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        moe = cfg.is_moe_layer(index)
        self.ffn = None if moe else FeedForward(cfg)
        self.moe = MoE(cfg) if moe else None

    def forward(self, x, masks, padding_mask):
        h = self.self_attn_norm(x)
        x = x + F.dropout(self.self_attn(h, h, masks), self.dropout, self.training)
        h, aux, z = feed_forward(self, self.ffn_norm(x), padding_mask)
        return x + F.dropout(h, self.dropout, self.training), aux, z


class DecoderLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        self.dropout = cfg.dropout
        rotary = cfg.position == "rotary"
        self.self_attn_norm = Norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, cfg.attention, rotary)
        self.cross_attn_norm = Norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.cross_attn = Attention(cfg, "global", False)
        self.ffn_norm = Norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        moe = cfg.is_moe_layer(index)
        self.ffn = None if moe else FeedForward(cfg)
        self.moe = MoE(cfg) if moe else None

    def forward(self, y, memory, masks, cross_mask, padding_mask):
        h = self.self_attn_norm(y)
        y = y + F.dropout(self.self_attn(h, h, masks), self.dropout, self.training)
        h = self.cross_attn(self.cross_attn_norm(y), memory, {"global": cross_mask})
        y = y + F.dropout(h, self.dropout, self.training)
        h, aux, z = feed_forward(self, self.ffn_norm(y), padding_mask)
        return y + F.dropout(h, self.dropout, self.training), aux, z


class Stack(nn.Module):
    def __init__(self, cfg, layer_class, count):
        super().__init__()
        self.layers = nn.ModuleList([layer_class(cfg, i) for i in range(count)])
        self.final_norm = Norm(cfg.norm, cfg.d_model, cfg.norm_eps)


class Seq2SeqTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed_tokens.weight, 0.0, cfg.init_std)
        self.embed_positions = AbsolutePositions(cfg) if cfg.position != "rotary" else None
        self.encoder = Stack(cfg, EncoderLayer, cfg.encoder_layers)
        self.decoder = Stack(cfg, DecoderLayer, cfg.decoder_layers)
        self.lm_head = None if cfg.tie_embeddings else linear(cfg.d_model, cfg.vocab_size, False, cfg.init_std)

    def embed(self, tokens):
        h = self.embed_tokens(tokens)
        if self.cfg.scale_embeddings:
            h = h * math.sqrt(self.cfg.d_model)
        if self.embed_positions is not None:
            h = self.embed_positions(h)
        return F.dropout(h, self.cfg.dropout, self.training)

    def _run(self, layer, *args):
        if self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def forward(self, src_tokens, src_mask, tgt_in, tgt_mask):
        """-> (logits [B, T, V], aux loss sum, z loss sum) over the MoE layers."""
        aux = torch.zeros((), device=src_tokens.device)
        z = torch.zeros((), device=src_tokens.device)
        masks = self_attention_masks(self.cfg, src_mask, causal=False)
        h = self.embed(src_tokens)
        for layer in self.encoder.layers:
            h, a, b = self._run(layer, h, masks, src_mask)
            aux, z = aux + a, z + b
        memory = self.encoder.final_norm(h)
        masks = self_attention_masks(self.cfg, tgt_mask, causal=True)
        cross = cross_attention_mask(src_mask, tgt_in.shape[1])
        y = self.embed(tgt_in)
        for layer in self.decoder.layers:
            y, a, b = self._run(layer, y, memory, masks, cross, tgt_mask)
            aux, z = aux + a, z + b
        y = self.decoder.final_norm(y)
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(y, weight), aux, z


def parameter_counts(model):
    """Total and per-token active parameters, from the modules themselves:
    the MoE layers' inactive experts ((E - top_k) x one expert) are taken
    off; the embeddings are lookups, the output projection counts."""
    cfg = model.cfg

    def active(stack):
        n = sum(p.numel() for p in stack.parameters())
        for layer in stack.layers:
            if layer.moe is not None:
                n -= (layer.moe.num_experts - layer.moe.top_k) * layer.moe.expert_parameters_per_expert()
        return n

    enc, dec = active(model.encoder), active(model.decoder)
    head = cfg.vocab_size * cfg.d_model
    return dict(total=sum(p.numel() for p in model.parameters()), active=enc + dec + head,
                encoder_active=enc, decoder_active=dec, output_projection=head)
