"""Print continuations from a trained checkpoint with transformers (greedy, or low temperature).

`python3 sample.py CKPT_DIR [--prompt TEXT ...] [--tokens 60] [--temperature 0] [--chat]`
With --chat each prompt is sent as a user turn through the tokenizer's chat template.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DEFAULT_PROMPTS = [
    "It is a truth universally acknowledged",
    "The weather was fine, and",
    "She had never seen him so",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--prompt", nargs="*", default=DEFAULT_PROMPTS)
    ap.add_argument("--tokens", type=int, default=60)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--repetition-penalty", type=float, default=1.1)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForCausalLM.from_pretrained(args.ckpt, dtype=torch.float32).eval()
    for prompt in args.prompt:
        if args.chat:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        else:
            ids = tok(prompt, return_tensors="pt").input_ids
        sampling = dict(do_sample=True, temperature=args.temperature, top_p=0.9) if args.temperature > 0 else dict(
            do_sample=False)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                                 repetition_penalty=args.repetition_penalty, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, **sampling)
        new = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        print(f"[{prompt}] -> {new.strip() if args.chat else prompt + new}\n")


if __name__ == "__main__":
    main()
