#!/usr/bin/env python3
"""Times the training step of a moetrain config in a Python peer and prints
one JSON line (the fields of `bench_train_step --json`).

  run_peer.py --impl torch-eager|torch-compile|hf-eager --config F [--set k=v]...
              [--name PRESET] [--device cpu|cuda] [--vocab V] [--steps N] [--warmup N]
              [--peak-tflops X] [--expert-dispatch shipped|gates] [--threads N]
  run_peer.py --matmul-only [--device cuda] [--matmul-size N]

torch-eager / torch-compile: bench/peers/moetrain_model.py, the same model
as moetrain's for any config, as is or under torch.compile (the forward and
the loss compiled; the fp32-master AdamW step eager, fused on CUDA).
hf-eager: transformers' NllbMoeForConditionalGeneration, for the
NLLB-MoE-compatible configs (bench/peers/hf_nllb_moe.py; --expert-dispatch
picks transformers' expert loop as shipped or one that follows the gates).

Every implementation runs the same step as moetrain: train.global_batch
sequences in micro-batches of train.micro_batch, random token ids, forward,
backward, global-norm clipping and AdamW on fp32 master weights (see
common.py), with the model's weights in precision.compute.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["torch-eager", "torch-compile", "hf-eager"])
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", help="the preset's name in the output (default: the config path)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--expert-dispatch", choices=["shipped", "gates"], default="shipped")
    p.add_argument("--threads", type=int, default=0, help="intra-op CPU threads (default: PyTorch's)")
    p.add_argument("--matmul-only", action="store_true", help="only print the bf16 matmul rate")
    p.add_argument("--matmul-size", type=int, default=8192)
    args = p.parse_args()
    if not args.matmul_only and (not args.impl or not args.config):
        p.error("--impl and --config are required")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def masked_cross_entropy_sum(logits, targets, mask):
    """kernels/cross_entropy.h's reference: fp32 softmax cross-entropy,
    summed over the counted tokens."""
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (losses * mask.reshape(-1)).sum()


class PeerRun:
    """What main() times: step() runs one optimizer step and keeps its loss
    in .loss; counts are the model's parameter counts; after_warmup() is
    called between warm-up and timing, details() gives the run's extra JSON
    fields afterwards."""

    def __init__(self, step, counts, details=None):
        self.step, self.counts, self.loss, self._details = step, counts, None, details or {}

    def after_warmup(self):
        pass

    def details(self):
        return self._details


class CompiledRun(PeerRun):
    """Counts torch.compile's graphs, and those compiled while timing (0
    unless a recompilation was timed)."""

    def after_warmup(self):
        from torch._dynamo.utils import counters
        self.graphs_after_warmup = counters["stats"]["unique_graphs"]

    def details(self):
        from torch._dynamo.utils import counters
        graphs = counters["stats"]["unique_graphs"]
        return dict(compiled_graphs=graphs, graphs_compiled_while_timed=graphs - self.graphs_after_warmup,
                    graph_breaks=sum(counters["graph_break"].values()))


def moetrain_peer(args, cfg, device, batches):
    from moetrain_model import Seq2SeqTransformer, parameter_counts

    with torch.device(device):  # initialised where it runs
        model = Seq2SeqTransformer(cfg.model)
    counts = parameter_counts(model)
    # Parameters in the compute dtype; buffers (position tables) stay fp32
    # and are cast where used, as in moetrain.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(common.dtype_of(cfg.compute))
    model.train()
    optimizer = common.MasterAdamW(list(model.named_parameters()), cfg.optim, device, common.moetrain_decays)
    moe = cfg.model.moe
    micro_batches = len(batches)
    target_tokens = float(sum(int(b["tgt_mask"].sum()) for b in batches))

    def micro_loss(src_tokens, src_mask, tgt_in, tgt_mask, tgt_out):
        logits, aux, z = model(src_tokens, src_mask, tgt_in, tgt_mask)
        ce = masked_cross_entropy_sum(logits, tgt_out, tgt_mask)
        return (moe.aux_loss_coef * aux + moe.z_loss_coef * z) / micro_batches + ce / target_tokens

    compiled = args.impl == "torch-compile"
    if compiled:
        # Room for the graphs of every layer kind (dense, MoE, encoder, decoder).
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    loss_fn = torch.compile(micro_loss) if compiled else micro_loss

    def step():
        total = 0.0
        for b in batches:
            loss = loss_fn(b["src_tokens"], b["src_mask"], b["tgt_in"], b["tgt_mask"], b["tgt_out"])
            loss.backward()
            total = total + loss.detach()
        optimizer.step()
        run.loss = total

    run = (CompiledRun if compiled else PeerRun)(step, counts)
    return run


def hf_peer(args, cfg, device, batches):
    import hf_nllb_moe

    if args.expert_dispatch == "gates":
        hf_nllb_moe.use_gate_dispatch()
    model = hf_nllb_moe.build_model(cfg)
    counts = hf_nllb_moe.parameter_counts(model)
    model.to(device=device, dtype=common.dtype_of(cfg.compute))
    model.train()
    if cfg.model.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = hf_nllb_moe.expert_rows_per_token(model)
    optimizer = common.MasterAdamW(list(model.named_parameters()), cfg.optim, device, common.moetrain_decays)

    def step():
        total = 0.0
        for b in batches:
            loss = hf_nllb_moe.loss(model, b, len(batches))
            loss.backward()
            total = total + loss.detach()
        optimizer.step()
        run.loss = total

    run = PeerRun(step, counts, dict(expert_dispatch=args.expert_dispatch, expert_rows_per_token=rows,
                                     transformers=hf_nllb_moe.VERSION,
                                     attn_implementation=model.config._attn_implementation))
    return run


def main():
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.matmul_only:
        rate = common.measure_matmul_tflops(args.device, args.matmul_size)
        print(common.json.dumps(dict(impl="matmul-pytorch", device=common.device_name(args.device), dtype="bf16",
                                     size=args.matmul_size, tflops=rate)), flush=True)
        return
    cfg = common.load_config(args.config, args.set, vocab=args.vocab)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = [common.random_batch(cfg.micro_batch, cfg.src_len, cfg.tgt_len, cfg.model.vocab_size, args.device,
                                   generator) for _ in range(cfg.global_batch // cfg.micro_batch)]
    build = hf_peer if args.impl == "hf-eager" else moetrain_peer
    run = build(args, cfg, args.device, batches)
    ms, warmup_s, memory = common.time_steps(run.step, args.device, args.steps, args.warmup, run.after_warmup)
    counts, loss = run.counts, float(run.loss)
    common.check_finite(loss, args.impl)
    flops = common.train_step_flops(counts["encoder_active"], counts["decoder_active"], counts["output_projection"],
                                    cfg.model.d_model, cfg.model.encoder_layers, cfg.model.decoder_layers,
                                    cfg.global_batch, cfg.src_len, cfg.tgt_len)
    impl = args.impl if args.impl != "hf-eager" or args.expert_dispatch == "shipped" else "hf-eager-gates"
    common.report(impl, args.name or args.config, args.device, cfg, ms, warmup_s, memory,
                  common.batch_tokens(batches), counts, flops, args.peak_tflops, args.steps, args.warmup,
                  loss=loss, **run.details())


if __name__ == "__main__":
    main()
