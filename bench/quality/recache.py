#!/usr/bin/env python3
"""Re-caches the quality benchmark's sequences with more KD candidates (issue #18, "Loss").

make_bench.sh's cache holds the teacher's top-32 logits and no random negatives. This writes the
same sequences, in the same order and the same train / held-out split, with
  --topk K       the teacher's top-K (K > the source's: recomputed; else the source's own top-K), and
  --rand-neg R   R random negatives per position: ids drawn uniformly from the vocabulary outside
                 the top-K, with the teacher's logits at them (rand_idx / rand_logits, the reference
                 cache format's optional tensors; qatd trains on them with --kd-rand-neg).
The benchmark still scores every stage on make_bench.sh's own top-32 held-out cache (par.sh's
fourth field), so the metric does not change; only what training sees does.

  python3 recache.py --teacher QB/teacher --src QB/kd --out QB/kd-neg64 --rand-neg 64
Needs torch + transformers (a GPU host) and shared/quality's qlib (--quality, default: beside
make_bench.sh as par.sh finds it).
"""
import argparse
import glob
import json
import os
import sys
import time

import torch


def load_rows(d):
    parts = [torch.load(f, map_location="cpu") for f in sorted(glob.glob(os.path.join(d, "shard_*.pt")))]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def draw_negatives(topk_sorted, r, vocab, gen):
    """R ids per row, uniform over [0, vocab) minus the row's K top-K ids (sorted ascending)."""
    rows, k = topk_sorted.shape
    u = torch.randint(0, vocab - k, (rows, r), generator=gen, device=topk_sorted.device)
    # The i-th excluded id e_i shifts every draw >= e_i - i up by one.
    shifted = topk_sorted - torch.arange(k, device=topk_sorted.device)
    return u + torch.searchsorted(shifted.contiguous(), u.contiguous(), right=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--src", required=True, help="make_bench.sh's kd folder (train/ and eval/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--topk", type=int, default=0, help="default: the source's K")
    ap.add_argument("--rand-neg", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quality", default=os.environ.get("QUALITY", ""))
    a = ap.parse_args()
    sys.path.insert(0, a.quality)
    import qlib  # shared/quality/qlib.py: the reference cache writer
    from transformers import Qwen3ForCausalLM

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:  # as make_bench.sh's build.py: loaded in fp32, cast to bf16
        teacher = Qwen3ForCausalLM.from_pretrained(a.teacher, dtype=torch.float32)
    except TypeError:
        teacher = Qwen3ForCausalLM.from_pretrained(a.teacher, torch_dtype=torch.float32)
    teacher = teacher.to(torch.bfloat16).to(dev).eval()
    vocab = int(teacher.config.vocab_size)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    report = {}
    for split in ("train", "eval"):
        src = os.path.join(a.src, split)
        meta = json.load(open(os.path.join(src, "meta.json")))
        rows = load_rows(src)
        k0 = rows["topk_idx"].shape[-1]
        k = a.topk or k0
        out = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}
        idx_all, val_all, ridx_all, rval_all = [], [], [], []
        t0 = time.time()
        with torch.inference_mode():
            for s in range(0, rows["input_ids"].shape[0], a.batch):
                ids = rows["input_ids"][s:s + a.batch].to(dev, torch.long)
                logits = teacher(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, :-1, :]
                if k > k0:
                    vals, idx = torch.topk(logits, k=k, dim=-1)
                else:  # the source's own candidates, bit for bit
                    idx = rows["topk_idx"][s:s + a.batch].to(dev, torch.long)
                    vals = rows["topk_logits"][s:s + a.batch].to(dev)
                idx_all.append(idx.to("cpu", torch.int32))
                val_all.append(vals.to("cpu", torch.float16))
                if a.rand_neg > 0:
                    b, l1, _ = idx.shape
                    flat = idx.reshape(-1, k).sort(dim=-1).values
                    neg = draw_negatives(flat, a.rand_neg, vocab, gen)
                    # Never a top-K id, always in the vocabulary.
                    assert not (neg.unsqueeze(-1) == flat.unsqueeze(-2)).any().item()
                    assert int(neg.min()) >= 0 and int(neg.max()) < vocab
                    neg = neg.reshape(b, l1, a.rand_neg)
                    ridx_all.append(neg.to("cpu", torch.int32))
                    rval_all.append(torch.gather(logits, -1, neg).to("cpu", torch.float16))
        out["topk_idx"], out["topk_logits"] = torch.cat(idx_all), torch.cat(val_all)
        if a.rand_neg > 0:
            out["rand_idx"], out["rand_logits"] = torch.cat(ridx_all), torch.cat(rval_all)
        meta = dict(meta, topk=k, top_k=k, rand_neg=a.rand_neg, random_negatives=a.rand_neg,
                    recache=f"bench/quality/recache.py --topk {k} --rand-neg {a.rand_neg} --seed {a.seed}")
        for key in ("num_sequences", "total_sequences", "shard_size", "shard_format"):
            meta.pop(key, None)
        shard_size = int(json.load(open(os.path.join(src, "meta.json"))).get("shard_size", 500))
        qlib.write_cache_dir(os.path.join(a.out, split), out, meta, shard_size, write_safetensors=False)
        report[split] = {"sequences": int(out["input_ids"].shape[0]), "topk": k, "rand_neg": a.rand_neg,
                         "seconds": round(time.time() - t0, 1)}
    json.dump(report, open(os.path.join(a.out, "recache.json"), "w"), indent=1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
