"""Shared by the e2e tests that load moetrain exports with transformers'
NllbMoeForConditionalGeneration and compare logits with moetrain's
(tests/e2e/dump_logits.cpp writes those)."""
import torch
import transformers


# transformers' sparse layer must send each token through its two chosen
# experts. Some releases (5.x) one-hot-encode the top-1 mask instead of the
# expert index, so every token goes through expert_0 and expert_1; there the
# expert loop is replaced by one that follows the router's gates (the
# router, the experts' weights and everything else stay transformers').
def reference_sparse(layer, hidden):  # hidden [N, D]: the top-2 mixture, token by token
    probs = layer.router.classifier(hidden.float()).softmax(-1)
    top, index = probs.topk(2, dim=-1)
    gates = top / top.sum(-1, keepdim=True)
    mixture = torch.stack([sum(gates[n, c] * layer.experts[f"expert_{index[n, c]}"](hidden[n]) for c in range(2))
                           for n in range(hidden.shape[0])])
    # moe_token_dropout scales the experts' output in evaluation.
    token_dropout = getattr(layer.experts, "moe_token_dropout", 0.0)
    return mixture * (1 - token_dropout) if token_dropout > 0 and not layer.training else mixture


def dispatch_by_gates(self, hidden_states, router_mask, router_probs):
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        rows = router_probs[:, e].nonzero().squeeze(1)
        if rows.numel():
            y = self[f"expert_{e}"](hidden_states[rows]) * router_probs[rows, e, None]
            if self.moe_token_dropout > 0 and not self.training:
                y = y * (1 - self.moe_token_dropout)
            out.index_add_(0, rows, y.to(out.dtype))
    return out


def check_sparse_layer(sparse, d_model):
    """Asserts `sparse` (an NllbMoeSparseMLP) computes the top-2 mixture,
    after replacing the expert loop of a release that does not."""
    probe = torch.randn(1, 16, d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_sparse(sparse, probe[0])
        if (sparse(probe)[0] - expected).abs().max().item() > 1e-5:
            experts_class = type(sparse.experts)
            print(f"note: transformers {transformers.__version__}: {experts_class.__name__}.forward does not run "
                  "the experts the router chose; replaced by a dispatch that follows the router's gates")
            experts_class.forward = dispatch_by_gates
        assert (sparse(probe)[0] - expected).abs().max().item() <= 1e-5, "the sparse layer is not the top-2 mixture"


def logits_difference(model, dumped):
    """Max |logits - moetrain's| over real target positions, for the dumped
    padded batch and for each pair alone (no padding)."""
    src, src_mask, tgt_in, tgt_mask = dumped["src_tokens"], dumped["src_mask"], dumped["tgt_in"], dumped["tgt_mask"]
    with torch.no_grad():
        hf = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt_in,
                   decoder_attention_mask=tgt_mask).logits
        real = tgt_mask.bool()
        batch_diff = (hf - dumped["logits"]).abs()[real].max().item()
        row_diff = 0.0
        for k in range(src.shape[0]):
            s, n = int(src_mask[k].sum()), int(tgt_mask[k].sum())
            one = model(input_ids=src[k:k + 1, :s], decoder_input_ids=tgt_in[k:k + 1, :n]).logits
            row_diff = max(row_diff, (one - dumped[f"row_{k}.logits"]).abs().max().item())
    return hf, batch_diff, row_diff


def load_checked(folder):
    """NllbMoeForConditionalGeneration from `folder`, in eval mode, its sparse
    layer checked (and its expert loop replaced where a release needs it).
    The model's second encoder layer must be sparse."""
    model = transformers.NllbMoeForConditionalGeneration.from_pretrained(folder).eval()
    check_sparse_layer(model.model.encoder.layers[1].ffn, model.config.d_model)
    return model


def check_logits(model, dumped):
    """Prints how far transformers' logits are from moetrain's dumped ones and
    asserts they agree within 1e-4 and are not degenerate."""
    _, batch_diff, row_diff = logits_difference(model, dumped)
    spread = dumped["logits"][dumped["tgt_mask"].bool()].std().item()
    print(f"logits of {dumped['src_tokens'].shape[0]} pairs (std {spread:.3f}): max |diff| padded batch "
          f"{batch_diff:.2e}, one pair at a time {row_diff:.2e}")
    assert spread > 0.1, "degenerate logits"
    assert batch_diff <= 1e-4 and row_diff <= 1e-4
