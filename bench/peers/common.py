"""What the Python peers of bench_train_step share: moetrain's YAML config
(read as moetrain reads it, with its defaults and `--set key=value`
overrides), the random batch, the model FLOPs of a step (the formula of
models/flops.h), the timed training step with AdamW on fp32 master weights,
and one JSON line per run.

Precision: the model's weights are bf16 (or fp16/fp32: precision.compute),
and the optimizer keeps fp32 master weights: after the backward each
gradient is copied into an fp32 buffer, clipped by the global norm, AdamW
(torch.optim.AdamW, fused on CUDA) steps the masters and the model's weights
are copied back from them. That is moetrain's scheme (train/trainer.h), so
both sides do the same work per step; no autocast.
"""
import json
import math
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch

try:
    import yaml
except ImportError:
    yaml = None  # load_config says so


# moetrain's defaults (models/model_config.h, optim/optim_config.h,
# config/config.h, data/data_config.h) for the keys the peers read.
@dataclass
class MoEConfig:
    num_experts: int = 8
    top_k: int = 2
    capacity_factor: float = 1.25
    every: int = 2
    d_ff_expert: int = 0
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    normalize_top_k: bool = True


@dataclass
class ModelConfig:
    vocab_size: int = 0
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    encoder_layers: int = 12
    decoder_layers: int = 6
    max_positions: int = 1024
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    position: str = "sinusoidal"
    rope_theta: float = 10000.0
    attention: str = "global"
    local_window: int = 128
    activation: str = "gelu"
    bias: bool = True
    tie_embeddings: bool = True
    scale_embeddings: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.0
    init_std: float = 0.02
    activation_checkpointing: bool = False
    moe: MoEConfig = field(default_factory=MoEConfig)

    def is_moe_layer(self, i):
        return self.moe.every > 0 and (i + 1) % self.moe.every == 0

    def expert_ffn_dim(self):
        return self.moe.d_ff_expert if self.moe.d_ff_expert > 0 else self.d_ff


@dataclass
class OptimConfig:
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_norms_and_biases: bool = False
    decay_embeddings: bool = False
    grad_clip: float = 1.0


@dataclass
class BenchConfig:
    model: ModelConfig
    optim: OptimConfig
    compute: str = "fp32"
    global_batch: int = 32
    micro_batch: int = 8
    seed: int = 1234
    src_len: int = 512
    tgt_len: int = 128


def _set_key(tree, dotted, text):
    """`a.b.c=value` as moetrain's --set: the value in YAML syntax."""
    node = tree
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = yaml.safe_load(text)


def _fill(obj, section):
    """Copies a YAML section's values onto a dataclass, typed as its fields."""
    for key, value in (section or {}).items():
        if not hasattr(obj, key):
            continue  # keys the peers do not need (moetrain checks them)
        current = getattr(obj, key)
        if isinstance(current, MoEConfig):
            _fill(current, value)
        elif isinstance(current, bool):
            setattr(obj, key, bool(value))
        elif isinstance(current, int) and not isinstance(value, bool):
            setattr(obj, key, int(value))
        elif isinstance(current, float):
            setattr(obj, key, float(value))
        else:
            setattr(obj, key, value)


def load_config(path, overrides=(), vocab=None):
    if yaml is None:
        raise SystemExit("the peers need PyYAML (python -m pip install pyyaml)")
    with open(path) as f:
        tree = yaml.safe_load(f) or {}
    for o in overrides:
        key, eq, value = o.partition("=")
        if not eq:
            raise SystemExit(f"--set {o}: expected key=value")
        _set_key(tree, key.strip(), value.strip())
    model, optim = ModelConfig(), OptimConfig()
    _fill(model, tree.get("model"))
    _fill(optim, tree.get("optim"))
    if vocab is not None:
        model.vocab_size = vocab
    train, data = tree.get("train") or {}, tree.get("data") or {}
    cfg = BenchConfig(model=model, optim=optim)
    cfg.compute = (tree.get("precision") or {}).get("compute", "fp32")
    cfg.global_batch = int(train.get("global_batch", cfg.global_batch))
    cfg.micro_batch = int(train.get("micro_batch", cfg.micro_batch))
    cfg.seed = int(train.get("seed", cfg.seed))
    cfg.src_len = int(data.get("src_len", cfg.src_len))
    cfg.tgt_len = int(data.get("tgt_len", cfg.tgt_len))
    if cfg.global_batch % cfg.micro_batch:
        raise SystemExit(f"train.global_batch {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch}")
    return cfg


def dtype_of(name):
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


# ---------------------------------------------------------------- the batch

def random_batch(batch, src_len, tgt_len, vocab, device, generator):
    """bench_train_step's batch: random (never constant) ids from 4..vocab-1,
    the last eighth of row 0's source padded (id 0), target input = [3] +
    target output shifted right."""
    src = torch.randint(4, vocab, (batch, src_len), generator=generator)
    tgt_out = torch.randint(4, vocab, (batch, tgt_len), generator=generator)
    src_mask = torch.ones(batch, src_len, dtype=torch.bool)
    tgt_mask = torch.ones(batch, tgt_len, dtype=torch.bool)
    src_mask[0, src_len - src_len // 8:] = False
    src = src.masked_fill(~src_mask, 0)
    tgt_in = torch.cat([torch.full((batch, 1), 3, dtype=torch.long), tgt_out[:, :-1]], 1)
    b = dict(src_tokens=src, src_mask=src_mask, tgt_in=tgt_in, tgt_out=tgt_out, tgt_mask=tgt_mask)
    return {k: v.to(device) for k, v in b.items()}


def batch_tokens(batches):
    return int(sum(int(b["src_mask"].sum()) + int(b["tgt_mask"].sum()) for b in batches))


# ------------------------------------------------------------------- FLOPs

def train_step_flops(encoder_active, decoder_active, output_projection, d_model, encoder_layers,
                     decoder_layers, sequences, src_len, tgt_len):
    """models/flops.h's model FLOPs of one step: 6 x active parameters per
    position (encoder against source, decoder and output projection against
    target positions) plus QK^T and AV (4 Tq Tk d_model forward, x3), the
    decoder's causal self-attention counted in full."""
    b, s, t = float(sequences), float(src_len), float(tgt_len)
    dense = 6.0 * (encoder_active * b * s + (decoder_active + output_projection) * b * t)
    scores = encoder_layers * s * s + decoder_layers * (t * t + t * s)
    return dense + 3.0 * 4.0 * d_model * b * scores


# --------------------------------------------------------------- optimizer

class MasterAdamW:
    """AdamW on fp32 master copies of the model's (bf16) weights, with
    moetrain's weight-decay groups (no decay for embeddings, norms and 1-d
    parameters) and global-norm clipping."""

    def __init__(self, named_params, optim, device, decays):
        self.params = [p for _, p in named_params]
        self.masters = [p.detach().float().clone() for p in self.params]
        for m in self.masters:
            m.grad = torch.zeros_like(m)
        decay = [m for (n, p), m in zip(named_params, self.masters) if decays(n, p, optim)]
        no_decay = [m for (n, p), m in zip(named_params, self.masters) if not decays(n, p, optim)]
        groups = [{"params": decay, "weight_decay": optim.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        cuda = torch.device(device).type == "cuda"
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr,
                                     betas=(optim.beta1, optim.beta2), eps=optim.eps,
                                     fused=True if cuda else None, foreach=None if cuda else True)
        self.grad_clip = optim.grad_clip

    @torch.no_grad()
    def step(self):
        with_grad = [(m, p.grad) for m, p in zip(self.masters, self.params) if p.grad is not None]
        for m, p in zip(self.masters, self.params):
            if p.grad is None:
                m.grad.zero_()  # moetrain steps every parameter, zero gradient or not
        torch._foreach_copy_([m.grad for m, _ in with_grad], [g for _, g in with_grad])
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.masters, self.grad_clip, foreach=True)
        self.opt.step()
        torch._foreach_copy_(self.params, self.masters)
        for p in self.params:
            p.grad = None


def moetrain_decays(name, p, optim):
    """train/trainer.cpp's decays(): no decay for embeddings, norms and 1-d tensors."""
    if "embed" in name or "shared" in name:
        return optim.decay_embeddings
    if p.dim() < 2 or "norm" in name:
        return optim.decay_norms_and_biases
    return True


# ----------------------------------------------------------------- timing

def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, device, steps, warmup, after_warmup=None):
    """Runs warmup + steps calls of step(); returns the timed ms, the warm-up
    seconds (compilation included) and the peak memory of the timed steps.
    after_warmup() is called between the two."""
    cuda = torch.device(device).type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    if after_warmup:
        after_warmup()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(steps):
        synchronize(device)
        t = time.perf_counter()
        step()
        synchronize(device)
        ms.append(1000.0 * (time.perf_counter() - t))
    if cuda:
        memory = dict(peak_mem_bytes=torch.cuda.max_memory_allocated(), peak_mem_kind="cuda_allocated",
                      peak_reserved_bytes=torch.cuda.max_memory_reserved())
    else:
        memory = dict(peak_mem_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      peak_mem_kind="rss", peak_reserved_bytes=0)
    return ms, warmup_s, memory


def measure_matmul_tflops(device, n=8192, reps=10):
    """Median rate of n^3 bf16 matmuls on random operands, after warm-up."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        c = a @ b
    synchronize(device)
    seconds = []
    for _ in range(reps):
        t = time.perf_counter()
        c = a @ b
        synchronize(device)
        seconds.append(time.perf_counter() - t)
    assert torch.isfinite(c).all()
    return 2.0 * n ** 3 / statistics.median(seconds) / 1e12


def device_name(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return "CPU"


def report(impl, preset, device, cfg, ms, warmup_s, memory, tokens, counts, flops, peak_tflops, steps, warmup,
           **extra):
    """Prints the run's JSON line (the fields bench_train_step --json prints)."""
    median = statistics.median(ms)
    achieved = flops / (median / 1000.0) / 1e12
    line = dict(
        impl=impl, preset=preset, device=device_name(device), dtype=cfg.compute,
        activation_checkpointing=cfg.model.activation_checkpointing,
        micro_batch=cfg.micro_batch, micro_batches=cfg.global_batch // cfg.micro_batch,
        src_len=cfg.src_len, tgt_len=cfg.tgt_len, vocab=cfg.model.vocab_size, steps=steps, warmup=warmup,
        tokens_per_step=tokens, ms_per_step=median, ms_min=min(ms), ms_max=max(ms),
        tokens_per_s=tokens / (median / 1000.0), **memory,
        params=counts["total"], active_params=counts["active"], flops_per_step=flops,
        achieved_tflops=achieved, peak_tflops=peak_tflops, mfu=achieved / peak_tflops if peak_tflops > 0 else 0.0,
        warmup_s=warmup_s, torch=torch.__version__, **extra)
    print(json.dumps(line), flush=True)
    return line


def check_finite(loss, what):
    if not math.isfinite(loss):
        raise SystemExit(f"{what}: non-finite loss {loss}")
