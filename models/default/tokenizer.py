"""Train the default model's byte-level BPE tokenizer on the corpus and write HF tokenizer files.

`python3 tokenizer.py CORPUS_TXT OUT_DIR [--vocab 4096]` writes OUT_DIR/tokenizer.json and
OUT_DIR/tokenizer_config.json (chat template, BOS/EOS/pad, special tokens). Deterministic for a given
corpus and `tokenizers` version.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, "<|system|>", "<|user|>", "<|assistant|>", "<think>", "</think>"]
CONTEXT = 512

# Each turn is `<|role|>\n` + content + EOS + `\n`; the generation prompt opens the assistant turn,
# so a reply ends at EOS. The model was trained on this exact layout (see train.py).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train(corpus: Path, vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train([str(corpus)], trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]),
        ]
    )
    return tok


def save(tok: Tokenizer, out: Path) -> PreTrainedTokenizerFast:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        tok.save(path)
        hf = PreTrainedTokenizerFast(
            tokenizer_file=path,
            bos_token=BOS,
            eos_token=EOS,
            pad_token=PAD,
            additional_special_tokens=SPECIAL_TOKENS[3:],
            model_max_length=CONTEXT,
            chat_template=CHAT_TEMPLATE,
            clean_up_tokenization_spaces=False,
        )
        hf.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(add_bos_token=True, add_eos_token=False)
    cfg.setdefault("chat_template", CHAT_TEMPLATE)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    for extra in ("chat_template.jinja", "special_tokens_map.json"):
        if (out / extra).exists():
            (out / extra).unlink()
    return PreTrainedTokenizerFast.from_pretrained(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    hf = save(train(args.corpus, args.vocab), args.out)
    sample = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    ids = hf(sample).input_ids
    print(f"{args.out}: vocab {len(hf)}; {len(ids)} ids for {len(sample.split())} words: {ids}")


if __name__ == "__main__":
    main()
