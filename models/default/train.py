"""Train the default model: a small DeepSeek-V3 (MLA, shared + routed experts) on the Austen corpus.

`python3 train.py --corpus CORPUS_TXT --tokenizer TOK_DIR --out RUN_DIR [--steps N] [--threads T]`

Plain torch: AdamW, linear warm-up then cosine decay, gradient clipping, transformers'
DeepseekV3ForCausalLM. Expert load is balanced the DeepSeek-V3 way (no auxiliary loss): after each
step every MoE layer's `e_score_correction_bias` moves by `--bias-rate` towards under-used experts,
so the shipped model carries a real, non-zero correction bias. Every `--ckpt-every` steps the model is
saved with save_pretrained (plus tokenizer files) to RUN_DIR/checkpoint, so a partial run is usable;
RUN_DIR/train.log.jsonl gets one JSON line per logged step.

Training data: the corpus's paragraphs in order, with `--chat-frac` of multi-sentence paragraphs
rewritten in the chat template (the user turn holds the opening sentence, the assistant turn the
rest), so the model answers in the template's layout. Every 100th paragraph is held out for the
validation loss.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, GenerationConfig, PreTrainedTokenizerFast

SEED = 20240501
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
PROMPTS = ["It is a truth universally acknowledged", "The weather was fine, and", "Mr. Darcy"]


def model_config(tok: PreTrainedTokenizerFast, context: int) -> DeepseekV3Config:
    return DeepseekV3Config(
        vocab_size=len(tok),
        hidden_size=192,
        intermediate_size=512,
        moe_intermediate_size=192,
        num_hidden_layers=5,
        first_k_dense_replace=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=96,
        kv_lora_rank=64,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_routed_experts=16,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        max_position_embeddings=context,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        num_nextn_predict_layers=0,
    )


def build_stream(corpus: Path, tok: PreTrainedTokenizerFast, chat_frac: float, rng: random.Random):
    """Token streams (train, val) of paragraphs separated by blank lines, some as chat turns."""
    paras = [p for p in corpus.read_text().split("\n\n") if p.strip()]
    train_texts, val_texts = [], []
    bos, eos = tok.bos_token, tok.eos_token
    for i, p in enumerate(paras):
        if i % 100 == 99:
            val_texts.append(p + "\n\n")
            continue
        parts = SENTENCE_END.split(p, maxsplit=1)
        if len(parts) == 2 and rng.random() < chat_frac:
            train_texts.append(f"{bos}<|user|>\n{parts[0]}{eos}\n<|assistant|>\n{parts[1]}{eos}\n")
        else:
            train_texts.append(p + "\n\n")

    def encode(texts):
        # The backend tokenizer directly: paragraphs may exceed model_max_length, which is fine here.
        ids = []
        for enc in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
            ids.extend(enc.ids)
        return torch.tensor(ids, dtype=torch.long)

    return encode(train_texts), encode(val_texts)


def batch(stream: torch.Tensor, bsz: int, seq: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(stream) - seq - 1, (bsz,), generator=gen)
    return torch.stack([stream[s : s + seq + 1] for s in starts.tolist()])


class BiasBalancer:
    """DeepSeek-V3 auxiliary-loss-free balancing: count each MoE layer's expert picks per step."""

    def __init__(self, model: DeepseekV3ForCausalLM, rate: float):
        self.rate = rate
        self.gates = [m for n, m in model.named_modules() if n.endswith("mlp.gate")]
        self.counts = [torch.zeros(g.num_experts) for g in self.gates]
        for i, g in enumerate(self.gates):
            g.register_forward_hook(self._hook(i))

    def _hook(self, i):
        def fn(_mod, _inp, out):
            idx = out[2].detach().flatten()
            self.counts[i] += torch.bincount(idx, minlength=len(self.counts[i])).float()

        return fn

    def step(self) -> list[float]:
        """Update the biases; return each layer's max/mean expert load for the log."""
        ratios = []
        with torch.no_grad():
            for g, c in zip(self.gates, self.counts):
                if c.sum() > 0:
                    g.e_score_correction_bias += self.rate * torch.sign(c.mean() - c)
                    ratios.append(round(float(c.max() / c.mean()), 2))
                c.zero_()
        return ratios


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model, val: torch.Tensor, seq: int, bsz: int) -> float:
    model.eval()
    n = (len(val) - 1) // seq
    losses = []
    for b in range(0, min(n, 64), bsz):
        rows = torch.stack([val[i * seq : i * seq + seq + 1] for i in range(b, min(b + bsz, n))])
        losses.append(float(model(rows[:, :-1], labels=rows[:, :-1].clone()).loss))
    model.train()
    return sum(losses) / len(losses)


@torch.no_grad()
def samples(model, tok, max_new_tokens: int = 40) -> list[str]:
    model.eval()
    out = []
    for p in PROMPTS:
        ids = torch.tensor([tok(p).input_ids])
        gen = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
            do_sample=False, repetition_penalty=1.1, pad_token_id=tok.pad_token_id,
        )
        out.append(p + tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    model.train()
    return out


def save(model, tok_dir: Path, out: Path, step: int, meta: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    # Copied, not re-saved: tokenizer.py keeps the chat template inside tokenizer_config.json, where
    # the exporter and other readers look for it (save_pretrained would move it to a .jinja file).
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tok_dir / name, tmp / name)
    (tmp / "training_state.json").write_text(json.dumps(dict(meta, step=step), indent=1) + "\n")
    if out.exists():
        old = out.with_name(out.name + ".old")
        out.rename(old)
        tmp.rename(out)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--long-from", type=float, default=0.8,
                    help="fraction of steps after which sequences are --context long (batch scaled down)")
    ap.add_argument("--context", type=int, default=512, help="max_position_embeddings of the model")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    # DeepSeek-V3 used 1e-3 over trillions of tokens; a run of ~1600 steps needs a faster rate.
    ap.add_argument("--bias-rate", type=float, default=1e-2)
    ap.add_argument("--chat-frac", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--experts-impl", default="grouped_mm", help="transformers experts_implementation")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    gen = torch.Generator().manual_seed(SEED)
    tok = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    train_ids, val_ids = build_stream(args.corpus, tok, args.chat_frac, rng)
    model = DeepseekV3ForCausalLM._from_config(
        model_config(tok, args.context), attn_implementation="sdpa", experts_implementation=args.experts_impl
    )
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.1,
    )
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}; train tokens {len(train_ids)}, val tokens {len(val_ids)}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    balancer = BiasBalancer(model, args.bias_rate)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "train.log.jsonl").open("a")
    meta = {"params": n_params, "args": {k: str(v) for k, v in vars(args).items()}, "seed": SEED}
    t0, tokens, running = time.time(), 0, None
    steps = args.bench or args.steps
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        # Most steps use short sequences (cheaper attention); the last ones train every position
        # up to the advertised context length, keeping tokens per step constant.
        long = step >= int(args.long_from * args.steps)
        seq = args.context if long else args.seq
        rows = batch(train_ids, max(1, args.batch * args.seq // seq), seq, gen)
        loss = model(rows[:, :-1], labels=rows[:, :-1].clone()).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        imbalance = balancer.step()
        tokens += rows[:, :-1].numel()
        running = float(loss.detach()) if running is None else 0.95 * running + 0.05 * float(loss.detach())
        if args.bench:
            print(f"step {step} loss {float(loss):.3f} {time.time() - t0:.1f}s", flush=True)
            continue
        if step % args.log_every == 0 or step == steps - 1:
            rec = {"step": step, "loss": round(float(loss.detach()), 4), "loss_avg": round(running, 4),
                   "lr": round(g["lr"], 6), "grad_norm": round(gnorm, 3), "max_load": imbalance,
                   "seq": seq, "tokens": tokens, "elapsed_s": round(time.time() - t0, 1)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if (step + 1) % args.ckpt_every == 0 or step == steps - 1:
            val = evaluate(model, val_ids, args.seq, args.batch)
            texts = samples(model, tok)
            rec = {"step": step, "val_loss": round(val, 4), "samples": texts, "elapsed_s": round(time.time() - t0, 1)}
            print(json.dumps(rec, ensure_ascii=False), flush=True)
            log.write(json.dumps(rec, ensure_ascii=False) + "\n")
            log.flush()
            save(model, args.tokenizer, args.out / "checkpoint", step + 1, dict(meta, val_loss=val, train_loss_avg=running))
    if args.bench:
        dt = time.time() - t0
        print(f"bench: {steps} steps in {dt:.1f}s, {tokens / dt:.0f} tok/s, params {n_params}")


if __name__ == "__main__":
    main()
