"""PyTorch peer of bench/engines.bench.ts: the same BERT workload (random weights, float32, eval mode).

Prints one JSON object per line: {"config", "fwd", "mask", "fisher_loop"} in examples/s.
Run with OMP_WAIT_POLICY=PASSIVE (OpenMP threads then do not spin against the BLAS threads).
"""
import argparse
import json
import math
import time

import torch

CONFIGS = {
    "tiny": dict(L=2, D=128, H=2, I=512, batch=16),
    "small": dict(L=4, D=512, H=8, I=2048, batch=16),
    "base": dict(L=12, D=768, H=12, I=3072, batch=8),
}
VOCAB, MAX_POS, LABELS = 30522, 512, 2


def linear(out_f, in_f):
    return torch.nn.Linear(in_f, out_f)


class Bert(torch.nn.Module):
    """Hugging Face BertForSequenceClassification semantics, with per-example head/neuron masks."""

    def __init__(self, L, D, H, I):
        super().__init__()
        self.L, self.D, self.H, self.I = L, D, H, I
        self.word = torch.nn.Embedding(VOCAB, D)
        self.pos = torch.nn.Embedding(MAX_POS, D)
        self.typ = torch.nn.Embedding(2, D)
        self.emb_norm = torch.nn.LayerNorm(D, eps=1e-12)
        self.layers = torch.nn.ModuleList()
        for _ in range(L):
            m = torch.nn.Module()
            m.q, m.k, m.v, m.o = linear(D, D), linear(D, D), linear(D, D), linear(D, D)
            m.n1 = torch.nn.LayerNorm(D, eps=1e-12)
            m.fi, m.fo = linear(I, D), linear(D, I)
            m.n2 = torch.nn.LayerNorm(D, eps=1e-12)
            self.layers.append(m)
        self.pooler = linear(D, D)
        self.classifier = linear(LABELS, D)

    def forward(self, ids, attn, types, head_mask=None, neuron_mask=None):
        B, T = ids.shape
        d = self.D // self.H
        pos = torch.arange(T).unsqueeze(0).expand(B, T)
        x = self.emb_norm(self.word(ids) + self.pos(pos) + self.typ(types))
        add = (1.0 - attn[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for l, m in enumerate(self.layers):
            split = lambda y: y.view(B, T, self.H, d).transpose(1, 2)
            q, k, v = split(m.q(x)), split(m.k(x)), split(m.v(x))
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + add, dim=-1)
            if head_mask is not None:
                p = p * head_mask[:, l, :, None, None]
            ctx = (p @ v).transpose(1, 2).reshape(B, T, self.D)
            x = m.n1(m.o(ctx) + x)
            g = torch.nn.functional.gelu(m.fi(x))
            if neuron_mask is not None:
                g = g * neuron_mask[:, l, None, :]
            x = m.n2(m.fo(g) + x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def timed(fn, examples, reps):
    """Examples/s of the fastest of `reps` runs after a warm-up (the machine is shared)."""
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return examples / best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny,small,base")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.configs.split(","):
        c = CONFIGS[name]
        B, T = c["batch"], args.seq
        model = Bert(c["L"], c["D"], c["H"], c["I"]).eval()
        ids = torch.randint(1, VOCAB, (B, T))
        attn = torch.ones(B, T, dtype=torch.long)
        types = torch.zeros(B, T, dtype=torch.long)
        labels = torch.randint(0, LABELS, (B,))

        def fwd():
            with torch.no_grad():
                model(ids, attn, types)

        for p in model.parameters():
            p.requires_grad_(False)

        def mask():
            hm = torch.ones(B, c["L"], c["H"], requires_grad=True)
            nm = torch.ones(B, c["L"], c["I"], requires_grad=True)
            loss = torch.nn.functional.cross_entropy(model(ids, attn, types, hm, nm), labels, reduction="sum")
            torch.autograd.grad(loss, [hm, nm])

        row = {"config": name, "fwd": timed(fwd, B, args.reps), "mask": timed(mask, B, args.reps)}
        if name == "tiny":
            params = list(model.parameters())
            for p in params:
                p.requires_grad_(True)

            def fisher_loop():
                acc = [torch.zeros_like(p) for p in params]
                for b in range(B):
                    loss = torch.nn.functional.cross_entropy(model(ids[b : b + 1], attn[b : b + 1], types[b : b + 1]), labels[b : b + 1])
                    for a, g in zip(acc, torch.autograd.grad(loss, params)):
                        a += g * g

            row["fisher_loop"] = timed(fisher_loop, B, args.reps)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
