"""PyTorch peer of bench/glue.bench.ts: one pass over pre-tokenized GLUE batches with a BERT checkpoint.

The batches come from the bench (the project's tokenizer, padded per batch to the batch's longest row,
as a normal PyTorch script pads), so both peers see identical ids. Passes:
  mask     batch-mode mask Fisher: the squared gradient of each batch's mean loss to shared head and
           neuron masks (parameters frozen, so autograd computes no weight gradients)
  forward  logits and accuracy under inference_mode
Prints one JSON line: {"pass", "examples", "seconds"} (seconds: the pass itself, after loading).
  python3 bench/glue_torch.py --model DIR --batches FILE.json --pass mask [--threads N]
"""
import argparse
import json
import os
import re
import time

import torch

from engines_torch import Bert

# Hugging Face BertForSequenceClassification names -> the peer module's names.
RENAMES = [
    (r"^bert\.embeddings\.word_embeddings\.", "word."),
    (r"^bert\.embeddings\.position_embeddings\.", "pos."),
    (r"^bert\.embeddings\.token_type_embeddings\.", "typ."),
    (r"^bert\.embeddings\.LayerNorm\.", "emb_norm."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.query\.", r"layers.\1.q."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.key\.", r"layers.\1.k."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.self\.value\.", r"layers.\1.v."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.o."),
    (r"^bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.n1."),
    (r"^bert\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.fi."),
    (r"^bert\.encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.fo."),
    (r"^bert\.encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.n2."),
    (r"^bert\.pooler\.dense\.", "pooler."),
    (r"^classifier\.", "classifier."),
]


def read_safetensors(path):
    """F32 tensors of a safetensors file (no safetensors package on Debian)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, the peer reads F32 only")
        start, end = info["data_offsets"]
        out[name] = torch.frombuffer(data, dtype=torch.float32, offset=8 + n + start, count=(end - start) // 4).view(info["shape"])
    return out


def rename(name):
    for pattern, repl in RENAMES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    raise SystemExit(f"unexpected tensor {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--pass", dest="kind", choices=["mask", "forward"], required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with open(os.path.join(args.model, "config.json")) as f:
        c = json.load(f)
    L, H, I = c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"]
    model = Bert(L, c["hidden_size"], H, I).eval()
    model.load_state_dict({rename(k): v for k, v in read_safetensors(os.path.join(args.model, "model.safetensors")).items()})
    for p in model.parameters():
        p.requires_grad_(False)
    with open(args.batches) as f:
        batches = [{k: torch.tensor(v) for k, v in b.items()} for b in json.load(f)]

    t0 = time.perf_counter()
    examples = 0
    if args.kind == "mask":
        head, neuron = torch.zeros(L, H), torch.zeros(L, I)
        for b in batches:
            B = b["labels"].shape[0]
            hm = torch.ones(L, H, requires_grad=True)
            nm = torch.ones(L, I, requires_grad=True)
            logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"], hm.expand(B, L, H), nm.expand(B, L, I))
            gh, gn = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, b["labels"]), [hm, nm])
            head += gh * gh
            neuron += gn * gn
            examples += B
    else:
        correct = 0
        with torch.inference_mode():
            for b in batches:
                logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
                correct += int((logits.argmax(-1) == b["labels"]).sum())
                examples += b["labels"].shape[0]
    print(json.dumps({"pass": args.kind, "examples": examples, "seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
