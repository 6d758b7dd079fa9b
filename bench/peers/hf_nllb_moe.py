"""Hugging Face transformers' NllbMoeForConditionalGeneration built (random
init) from a moetrain NLLB-MoE-compatible config, with the settings
`moetrain export` writes into config.json (export/nllb_moe_format.cpp), so
that it is the model moetrain trains, parameter for parameter.

Two differences are deliberate and printed with each run:
  - expert_capacity is the batch's token count, so that training routes
    dropless like moetrain's preset (capacity_factor 0); transformers would
    otherwise drop tokens beyond its capacity while training;
  - the expert dispatch. Some transformers releases (5.x) one-hot-encode the
    top-1 mask instead of the expert index in NllbMoeExperts.forward, so every
    token runs through expert_0 for each of the E-1 experts it did not choose
    first and through expert_1 once: E expert FFN rows per token instead of
    top-2's 2. `shipped` times that code as it is (transformers' real path);
    `gates` replaces the loop with one that runs each token through the two
    experts its router chose (the work top-2 routing asks for). The JSON line
    says which ran and how many expert rows per token it computed.
"""
import torch

import transformers
from transformers import NllbMoeConfig, NllbMoeForConditionalGeneration
from transformers.models.nllb_moe import modeling_nllb_moe

# moetrain's special tokens (what `moetrain export` writes).
PAD, EOS, BOS = 0, 1, 3


def check_compatible(m):
    """The keys configs/nllb-moe-compatible.yaml marks "NLLB-MoE"."""
    wanted = [("norm", "layernorm"), ("position", "sinusoidal_fairseq"), ("attention", "global"), ("bias", True)]
    for key, value in wanted:
        if getattr(m, key) != value:
            raise SystemExit(f"hf-nllb-moe: model.{key} is {getattr(m, key)}, NLLB-MoE needs {value}")
    if m.norm_eps != 1e-5:
        raise SystemExit(f"hf-nllb-moe: model.norm_eps is {m.norm_eps}, NLLB-MoE's LayerNorm uses 1e-5")
    if m.moe.every <= 0 or m.moe.top_k != 2 or not m.moe.normalize_top_k or m.expert_ffn_dim() != m.d_ff:
        raise SystemExit("hf-nllb-moe: NLLB-MoE needs MoE layers (moe.every > 0) with top_k 2, normalize_top_k and "
                         "experts as wide as d_ff")


def build_config(cfg):
    m = cfg.model
    check_compatible(m)
    return NllbMoeConfig(
        vocab_size=m.vocab_size, d_model=m.d_model,
        encoder_layers=m.encoder_layers, decoder_layers=m.decoder_layers,
        encoder_attention_heads=m.n_heads, decoder_attention_heads=m.n_heads,
        encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.d_ff, max_position_embeddings=m.max_positions,
        activation_function=m.activation, scale_embedding=m.scale_embeddings,
        dropout=m.dropout, attention_dropout=m.attention_dropout, activation_dropout=m.dropout,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, init_std=m.init_std,
        num_experts=m.moe.num_experts,
        expert_capacity=cfg.micro_batch * max(cfg.src_len, cfg.tgt_len),
        encoder_sparse_step=m.moe.every, decoder_sparse_step=m.moe.every,
        router_bias=False, router_dtype="float32", router_ignore_padding_tokens=False,
        second_expert_policy="all", normalize_router_prob_before_dropping=False, batch_prioritized_routing=False,
        moe_eval_capacity_token_fraction=1.0, moe_token_dropout=0.0,
        router_z_loss_coef=m.moe.z_loss_coef, router_aux_loss_coef=m.moe.aux_loss_coef,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS,
        is_encoder_decoder=True, use_cache=False, tie_word_embeddings=m.tie_embeddings)


def dispatch_by_gates(self, hidden_states, router_mask, router_probs):
    """NllbMoeExperts.forward running each token through the experts its
    router gave a non-zero gate (its top-2 within capacity)."""
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        rows = router_probs[:, e].nonzero().squeeze(1)
        if rows.numel():
            y = self[f"expert_{e}"](hidden_states[rows]) * router_probs[rows, e, None]
            if self.moe_token_dropout > 0:
                y = self.token_dropout(y) if self.training else y * (1 - self.moe_token_dropout)
            out.index_add_(0, rows, y.to(out.dtype))
    return out


def use_gate_dispatch():
    modeling_nllb_moe.NllbMoeExperts.forward = dispatch_by_gates


def expert_rows_per_token(model, tokens=256):
    """Expert FFN rows the first sparse layer computes per token, on a
    random input in training mode (2 for top-2 routing), of no more tokens
    than an expert has room for."""
    tokens = min(tokens, model.config.expert_capacity)
    sparse = next(layer.ffn for layer in model.model.encoder.layers if layer.is_sparse)
    rows = [0]
    hooks = [expert.register_forward_hook(lambda mod, args, out: rows.__setitem__(0, rows[0] + args[0].shape[0]))
             for expert in sparse.experts.values()]
    param = next(sparse.parameters())
    probe = torch.randn(1, tokens, model.config.d_model, device=param.device, dtype=param.dtype)
    try:
        with torch.no_grad():
            sparse(probe)
    finally:
        for h in hooks:
            h.remove()
    return rows[0] / tokens


def build_model(cfg):
    model = NllbMoeForConditionalGeneration(build_config(cfg))
    tied = model.lm_head.weight is model.model.shared.weight
    if cfg.model.tie_embeddings and not tied:
        raise SystemExit("hf-nllb-moe: lm_head is not tied to the shared embedding")
    return model


def parameter_counts(model):
    """Total (tied weights once) and per-token active parameters, counted as
    bench/peers/moetrain_model.py counts them."""
    cfg = model.config

    def active(stack):
        n = sum(p.numel() for p in stack.layers.parameters()) + sum(p.numel() for p in stack.layer_norm.parameters())
        for layer in stack.layers:
            if layer.is_sparse:
                experts = layer.ffn.experts
                per_expert = sum(p.numel() for p in experts["expert_0"].parameters())
                n -= (experts.num_experts - 2) * per_expert
        return n

    enc, dec = active(model.model.encoder), active(model.model.decoder)
    head = cfg.vocab_size * cfg.d_model
    return dict(total=sum(p.numel() for p in model.parameters()), active=enc + dec + head,
                encoder_active=enc, decoder_active=dec, output_projection=head)


def loss(model, batch, micro_batches):
    """transformers' own training loss: cross-entropy (mean over the
    micro-batch's target tokens) plus the router's load-balancing loss."""
    out = model(input_ids=batch["src_tokens"], attention_mask=batch["src_mask"].long(),
                decoder_input_ids=batch["tgt_in"], decoder_attention_mask=batch["tgt_mask"].long(),
                labels=batch["tgt_out"].masked_fill(~batch["tgt_mask"], -100), output_router_logits=True)
    return out.loss / micro_batches


VERSION = transformers.__version__
