#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers into tests/fuzz/corpus/<target>/ (README.md here).

Seeds are small valid inputs (and a few near misses) made from the fixtures in tests/data or
written out below, so that each fuzzer starts deep in its parser. Standard library only, plus
`protoc` for the worker event frames. Run from anywhere; it replaces the corpus folders.
The Qwen3 tokenizer is read from tests/data/golden/qwen3-tokenizer/ (unpacked by the CMake
configure of the main build).
"""

import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
CORPUS = os.path.join(HERE, "corpus")
# The pipeline fuzzer confines input paths to this root (pipeline_spec_fuzz.cc).
IN = "/nonexistent/qatd-fuzz/in"


def write(target, name, data):
    path = os.path.join(CORPUS, target, name)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(*parts):
    with open(os.path.join(GOLDEN, *parts), "rb") as f:
        return f.read()


# --- safetensors --------------------------------------------------------------------------

def safetensors(tensors, metadata=None, pad_to=8):
    """tensors: [(name, dtype, shape, bytes)] laid out in order."""
    header, data = {}, b""
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % pad_to)
    return struct.pack("<Q", len(text)) + text + data


def make_safetensors():
    write("safetensors", "kmeans_lut.safetensors", read("anemll_ref", "kmeans_lut.safetensors"))
    write("safetensors", "kd_loss.safetensors", read("anemll_ref", "kd_loss.safetensors"))
    write("safetensors", "empty_header", safetensors([]))
    write("safetensors", "all_dtypes", safetensors(
        [("f32", "F32", [2, 3], bytes(24)), ("f16", "F16", [3], bytes(6)), ("bf16", "BF16", [1, 1], bytes(2)),
         ("i64", "I64", [2], bytes(16)), ("i32", "I32", [1], bytes(4)), ("i16", "I16", [2], bytes(4)),
         ("i8", "I8", [3], bytes(3)), ("u8", "U8", [0], b""), ("bool", "BOOL", [2], b"\x01\x00"),
         ("scalar", "F32", [], bytes(4))],
        metadata={"format": "pt", "qatd": "fuzz"}))
    write("safetensors", "zero_size_between", safetensors(
        [("a", "F32", [2], bytes(8)), ("empty", "F32", [0, 4], b""), ("b", "U8", [4], b"abcd")]))
    write("safetensors", "truncated", safetensors([("w", "F32", [4, 4], bytes(64))])[:-10])


# --- tokenizer.json -----------------------------------------------------------------------

def make_tokenizer():
    qwen = json.loads(read("qwen3-tokenizer", "tokenizer.json"))
    vocab = qwen["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    # The 256 byte-alphabet tokens are Qwen's first ids; then the first merges whose parts are
    # already in (ids renumbered densely so the tables stay small).
    small = {tok: i for i, (tok, _) in enumerate(by_id[:256])}
    merges = []
    for a, b in qwen["model"]["merges"]:
        if a in small and b in small and a + b not in small:
            small[a + b] = len(small)
            merges.append([a, b])
            if len(merges) == 120:
                break
    added = []
    for t in qwen["added_tokens"][:5] + [t for t in qwen["added_tokens"] if t["content"] in ("<think>", "</think>")]:
        added.append(dict(t, id=len(small) + len(added)))
    base = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": qwen["normalizer"], "pre_tokenizer": qwen["pre_tokenizer"],
            "post_processor": qwen["post_processor"], "decoder": qwen["decoder"],
            "model": dict(qwen["model"], vocab=small, merges=merges)}
    write("tokenizer", "qwen3_small.json", json.dumps(base, ensure_ascii=False))
    # Merges as "a b" strings, a lone ByteLevel pre-tokenizer (GPT-2 regex), no normalizer,
    # an lstrip/rstrip added token.
    gpt2 = json.loads(json.dumps(base))
    gpt2["model"]["merges"] = [" ".join(m) for m in merges[:40]]
    gpt2["model"]["vocab"] = {t: i for t, i in small.items() if i < 256 or " ".join(merges[i - 256]) in gpt2["model"]["merges"]}
    gpt2["normalizer"] = None
    gpt2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    gpt2["added_tokens"] = [{"id": 500, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": True,
                             "normalized": False, "special": False}]
    write("tokenizer", "gpt2_style.json", json.dumps(gpt2, ensure_ascii=False))
    # A literal Split pattern and ignore_merges.
    literal = json.loads(json.dumps(base))
    literal["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"String": " "}
    literal["model"]["ignore_merges"] = True
    literal["model"]["merges"] = merges[:20]
    literal["model"]["vocab"] = {t: i for t, i in small.items() if i < 276}
    literal["added_tokens"] = []
    write("tokenizer", "literal_split.json", json.dumps(literal, ensure_ascii=False))


# --- KD cache: meta.json, progress.json, a shard ------------------------------------------

def kd_input(meta, progress, shard):
    return (meta.encode() if isinstance(meta, str) else meta) + b"\n#progress.json\n" + progress.encode() + \
        b"\n#shard\n" + shard


def make_kd_cache():
    n, L, K, R = 2, 5, 3, 2
    meta = {
        "format": "qatd_kd_cache_v1", "teacher_model": "/models/Qwen3-0.6B", "tokenizer_sha256": "ab" * 32,
        "dataset_path": "/data/alpaca.json", "dataset_format": "alpaca", "dataset_text_field": "text",
        "dataset_text_unit": "line", "dataset_sha256": "cd" * 32, "thinking": "none", "max_length": L,
        "top_k": K, "rand_neg": R, "vocab_size": 151936, "eos_token_id": 151645, "num_sequences": n,
        "shard_size": 1024, "seed": 0, "shuffle": True, "dtype": "bf16", "device": "cpu",
        "dataset_records": 10, "dataset_bad_records": 1, "versions": {"qatd": "0.1.0", "libtorch": "1.13.1"},
        "created_utc": "2026-11-26T15:32:07Z", "imported_from": {"format": "qwen_kd_topk_cache_v1"}}
    progress = json.dumps({"n_written": n, "next_shard_id": 1, "done": True}, indent=2)

    def ints(count, start=0):
        return struct.pack("<%di" % count, *range(start, start + count))

    shard = safetensors([
        ("input_ids", "I32", [n, L], ints(n * L, 100)),
        ("topk_idx", "I32", [n, L - 1, K], ints(n * (L - 1) * K, 200)),
        ("topk_logits", "F16", [n, L - 1, K], struct.pack("<%de" % (n * (L - 1) * K), *[1.5] * (n * (L - 1) * K))),
        ("rand_idx", "I32", [n, L - 1, R], ints(n * (L - 1) * R, 300)),
        ("rand_logits", "F16", [n, L - 1, R], struct.pack("<%de" % (n * (L - 1) * R), *[-2.0] * (n * (L - 1) * R))),
    ], metadata={"format": "qatd_kd_cache_v1"})
    write("kd_cache", "qatd_cache_r2", kd_input(json.dumps(meta, indent=2), progress, shard))
    no_rand = dict(meta, rand_neg=0)
    del no_rand["imported_from"], no_rand["versions"]
    shard0 = safetensors([
        ("input_ids", "I32", [1, L], ints(L)),
        ("topk_idx", "I32", [1, L - 1, K], ints((L - 1) * K)),
        ("topk_logits", "F16", [1, L - 1, K], bytes(2 * (L - 1) * K))])
    write("kd_cache", "qatd_cache_partial",
          kd_input(json.dumps(no_rand), json.dumps({"n_written": 1, "next_shard_id": 1}), shard0))
    # The reference's meta.json (the qatd reader takes it to the .pt path) and its progress.
    write("kd_cache", "reference_meta",
          kd_input(read("kd_cache_sample", "meta.json"), read("kd_cache_sample", "progress.json").decode(), b""))


# --- pipeline specs (text format) ---------------------------------------------------------

def make_pipeline_spec():
    m, c, ck = IN + "/model", IN + "/cache", IN + "/ckpt.pt"
    write("pipeline_spec", "probe_chain.textproto",
          'name: "probes"\n'
          'stages { name: "a" spec { probe { steps: 2 step_ms: 5 } } }\n'
          'stages { name: "b" depends_on: "a" spec { probe { steps: 3 step_ms: 5 } } }\n')
    # `qat pipeline run q4 --model M --kd-cache C --print` (client/recipes.cc).
    qat = 'qat {{ model: "{m}" kd_cache_dir: "{c}" {extra} }}'
    stage = 'stages {{ name: "{name}" spec {{ {spec} }} {rest}}}\n'
    fed = 'inputs {{ from_stage: "{src}" artifact_kind: "{kind}" field: "{field}" }} '
    q4 = 'name: "q4"\n'
    q4 += stage.format(name="scales", rest="", spec=qat.format(
        m=m, c=c, extra="train_scales: true max_steps: 500 lr: 0.001 early_stop_patience: 5"))
    q4 += stage.format(name="weights", rest=fed.format(src="scales", kind="checkpoint", field="init_state"),
                       spec=qat.format(m=m, c=c, extra="train_weights: true max_steps: 3000 lr: 5e-06 "
                                       "hard_top1_weight: 0.1 hard_full_weight: 0.0005 early_stop_patience: 5"))
    q4 += stage.format(name="snap", rest=fed.format(src="weights", kind="checkpoint", field="init_state"),
                       spec=qat.format(m=m, c=c, extra="quant { } snap_weights: true skip_training: true"))
    q4 += stage.format(name="infer", rest=fed.format(src="snap", kind="checkpoint", field="checkpoint"),
                       spec='generate { model: "%s" prompt: "What is the capital of France?" }' % m)
    write("pipeline_spec", "q4.textproto", q4)
    # `qat pipeline run q2 --model M --dataset D --print`: a KD cache stage feeding the rest.
    q2 = 'name: "q2"\n'
    q2 += stage.format(name="cache", rest="", spec='kd_cache { teacher_model: "%s" dataset: "%s/alpaca.json" '
                       'max_length: 128 topk: 64 rand_neg: 8 num_sequences: 1000 dataset_format: '
                       'DATASET_FORMAT_ALPACA_CHAT enable_thinking: THINKING_MODE_BOTH }' % (m, IN))
    q2 += stage.format(name="scales", rest=fed.format(src="cache", kind="kd_cache", field="kd_cache_dir"),
                       spec='qat { model: "%s" train_scales: true max_steps: 500 lr: 0.001 }' % m)
    q2 += stage.format(name="convert", rest=fed.format(src="scales", kind="checkpoint", field="checkpoint"),
                       spec='convert { model: "%s" q2_mlp_rank: 32 }' % m)
    q2 += stage.format(name="v2", rest=fed.format(src="cache", kind="kd_cache", field="kd_cache_dir") +
                       fed.format(src="convert", kind="checkpoint", field="v2_checkpoint"),
                       spec='qat { version: QAT_VERSION_V2 model: "%s" v2_init: V2_INIT_FROM_V2 train_scales: true '
                       'max_steps: 1000 quant_v2 { preset: "Q2_A4" } }' % m)
    q2 += stage.format(name="snap", rest=fed.format(src="v2", kind="checkpoint", field="checkpoint"),
                       spec='snap { model: "%s" fp16: true }' % m)
    q2 += stage.format(name="eval", rest=fed.format(src="snap", kind="checkpoint", field="checkpoint"),
                       spec='eval { model: "%s" kd_cache_dir: "%s" eval_samples: 8 }' % (m, c))
    write("pipeline_spec", "q2.textproto", q2)
    write("pipeline_spec", "layerwise.textproto",
          stage.format(name="lbl", rest="", spec='layerwise { model: "%s" kd_cache_dir: "%s" layers: 0 layers: 3 '
                       'quant { preset: "q4_a4" group_size: 64 } lr: 0.002 temperature: 2 }' % (m, c)) +
          stage.format(name="gen", rest=fed.format(src="lbl", kind="checkpoint", field="checkpoint"),
                       spec='generate { model: "%s" checkpoint: "%s" prompt: "Hi" sample: true top_p: 0.5 '
                       'max_new_tokens: 8 } priority: 3 resources { device_count: 0 } name: "gen"' % (m, ck)))


# --- worker event frames ------------------------------------------------------------------

def encode_event(text):
    out = subprocess.run(
        ["protoc", "--encode=qatd.v1.WorkerEvent", "-I", os.path.join(ROOT, "proto"), "qatd/v1/worker.proto"],
        input=text.encode(), capture_output=True, check=True)
    return out.stdout


def frame(payload):
    return struct.pack("<I", len(payload)) + payload


def make_worker_frames():
    events = [
        'progress { done: 3 total: 10 unit: "steps" rate: 1.5 eta_s: 4.6 }',
        'metric { name: "loss/kd" step: 3 value: 0.25 }',
        'log { level: LOG_LEVEL_WARNING message: "a warning" }',
        'artifact { path: "/data/jobs/7/output/final" kind: "checkpoint" }',
        'text { text: "Paris" token_id: 12095 }',
    ]
    stream = b"".join(frame(encode_event(e)) for e in events)
    write("worker_frames", "events", stream)
    write("worker_frames", "empty_frame", frame(b""))
    write("worker_frames", "truncated", stream[:-3])
    # A header promising 16 MiB and 4 bytes of it (scripts/fuzz.sh limits mallocs to 8 MiB).
    write("worker_frames", "promises_16mib", struct.pack("<I", 1 << 24) + frame(b"")[:4])
    write("worker_frames", "final_ok", frame(encode_event(
        'final { result { metrics { key: "eval/kd" value: 0.5 } summary: "done" } }')))
    write("worker_frames", "final_error", frame(encode_event(
        'final { status { code: 13 message: "diverged" } }')))


# --- config.json --------------------------------------------------------------------------

def make_model_config():
    write("model_config", "tiny_qwen3.json", read("tiny-qwen3", "config.json"))
    write("model_config", "qwen3_0.6b.json", read("qwen3-0.6b", "config.json"))
    c = json.loads(read("tiny-qwen3", "config.json"))
    theta = c.pop("rope_theta")
    c["rope_parameters"] = {"rope_theta": theta, "rope_type": "default"}
    c.pop("head_dim", None)
    c["eos_token_id"] = [151645, 151643]
    c["dtype"] = c.pop("torch_dtype", "bfloat16")
    write("model_config", "transformers5.json", json.dumps(c))


# --- torch_pickle: data.pkl of torch.save files ----------------------------------------------

def make_torch_pickle():
    import zipfile
    def pickle_of(path):
        with zipfile.ZipFile(path) as z:
            return z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
    fixtures = os.path.join(ROOT, "tests", "data", "torch_pt")
    for name in sorted(os.listdir(fixtures)):
        if name.endswith(".pt"):
            write("torch_pickle", name[:-3] + ".pkl", pickle_of(os.path.join(fixtures, name)))
    write("torch_pickle", "reference_kd_shard.pkl", pickle_of(os.path.join(GOLDEN, "kd_cache_sample", "shard_00000.pt")))
    write("torch_pickle", "os_system.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.")


TORCH_PICKLE_WORDS = ["\x80\x02", "\x80\x04\x95", "ccollections\nOrderedDict\n", "ctorch._utils\n_rebuild_tensor_v2\n",
                      "ctorch._utils\n_rebuild_parameter\n", "ctorch\nFloatStorage\n", "ctorch\nHalfStorage\n",
                      "ctorch\nBFloat16Storage\n", "ctorch\nLongStorage\n", "ctorch\nBoolStorage\n",
                      "X\x07\x00\x00\x00storage", "X\x03\x00\x00\x00cpu", "X\x10\x00\x00\x00model_state_dict",
                      "X\x09\x00\x00\x00_metadata", "\x8c\x05torch", "\x93", "\x94", "q\x00", "h\x00",
                      "r\x00\x00\x00\x00", "j\x00\x00\x00\x00", "J\xff\xff\xff\xff", "\x8a\x08", "G", "Q", "R",
                      "b", "s", "u", "t", "(", ")", "}", "]", "a", "e", "N", "\x85", "\x86", "\x87", "\x88", "\x89", "."]


# --- dictionaries (libFuzzer -dict): the words of each format ------------------------------

JSON_WORDS = ["{", "}", "[", "]", ":", ",", '""', "null", "true", "false", "-1", "0", "1e999", "-0.0",
              "18446744073709551615", "9223372036854775808", "-9223372036854775809", "2147483648", "\\u0000",
              "\\ud800"]


def dict_entry(word):
    out = ""
    for ch in word.encode("latin-1"):  # one char per byte
        if ch in (0x22, 0x5C):
            out += "\\" + chr(ch)
        elif 0x20 <= ch < 0x7F:
            out += chr(ch)
        else:
            out += "\\x%02X" % ch
    return '"%s"' % out


def write_dict(target, words):
    seen = []
    for w in words:
        if w not in seen:
            seen.append(w)
    with open(os.path.join(HERE, target + ".dict"), "w") as f:
        f.write("# libFuzzer dictionary of the %s fuzzer, written by make_corpus.py\n" % target)
        f.writelines(dict_entry(w) + "\n" for w in seen)


def make_dicts():
    import re
    quoted = lambda keys: ['"%s"' % k for k in keys]
    write_dict("safetensors", JSON_WORDS + quoted(
        ["__metadata__", "dtype", "shape", "data_offsets", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8",
         "BOOL", "F64"]))
    write_dict("tokenizer", JSON_WORDS + quoted(
        ["model", "type", "BPE", "vocab", "merges", "dropout", "continuing_subword_prefix", "end_of_word_suffix",
         "byte_fallback", "ignore_merges", "added_tokens", "id", "content", "special", "lstrip", "rstrip",
         "single_word", "normalized", "normalizer", "NFC", "pre_tokenizer", "Sequence", "pretokenizers", "Split",
         "ByteLevel", "pattern", "Regex", "String", "behavior", "Isolated", "invert", "add_prefix_space",
         "use_regex", "decoder"]) + ["\\\\p{L}", "\\\\p{N}", "(?i:", "(?!\\\\S)", "\\u0120", "\\u010a"])
    meta_keys = ["format", "qatd_kd_cache_v1", "qwen_kd_topk_cache_v1", "teacher_model", "tokenizer_sha256",
                 "dataset_path", "dataset_format", "dataset_text_field", "dataset_text_unit", "dataset_sha256",
                 "thinking", "max_length", "top_k", "rand_neg", "vocab_size", "eos_token_id", "num_sequences",
                 "shard_size", "seed", "shuffle", "dtype", "device", "dataset_records", "dataset_bad_records",
                 "versions", "qatd", "libtorch", "created_utc", "n_written", "next_shard_id", "done"]
    write_dict("kd_cache", JSON_WORDS + quoted(meta_keys) + ["\n#progress.json\n", "\n#shard\n"] + quoted(
        ["input_ids", "topk_idx", "topk_logits", "rand_idx", "rand_logits", "dtype", "shape", "data_offsets",
         "I32", "F16"]))
    write_dict("model_config", JSON_WORDS + quoted(
        ["architectures", "Qwen3ForCausalLM", "model_type", "qwen3", "hidden_size", "intermediate_size",
         "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
         "max_position_embeddings", "rms_norm_eps", "head_dim", "rope_theta", "rope_parameters", "rope_scaling",
         "tie_word_embeddings", "bos_token_id", "eos_token_id", "torch_dtype", "dtype", "bfloat16"]))
    words = ["{", "}", ":", "<", ">", "[", "]", '"', "true", "false", "-1", "0", "1e308", "nan", "inf",
             "2147483648", "9223372036854775808", "/nonexistent/qatd-fuzz/in/", "/nonexistent/qatd-fuzz/out/",
             "/nonexistent/qatd-fuzz/jobs/", "/..", "checkpoint", "kd_cache"]
    for name in ("specs.proto", "job.proto"):
        with open(os.path.join(ROOT, "proto", "qatd", "v1", name)) as f:
            text = f.read()
        words += re.findall(r"^\s+(?:optional |repeated )?[\w.]+ (\w+) = \d+;", text, re.M)
        words += re.findall(r"^\s+([A-Z][A-Z0-9_]+) = \d+;", text, re.M)
    write_dict("pipeline_spec", words)
    write_dict("torch_pickle", TORCH_PICKLE_WORDS)
    write_dict("worker_frames", ["\x00\x00\x00\x00", "\xff\xff\xff\xff", "\x00\x00\x00\x04",
                                 "\x08\x01", "\x0a\x00", "\x12\x00", "\x1a\x00", "\x22\x00", "\x2a\x00",
                                 "\x32\x00"])


def main():
    targets = {"safetensors": make_safetensors, "tokenizer": make_tokenizer, "kd_cache": make_kd_cache,
               "pipeline_spec": make_pipeline_spec, "worker_frames": make_worker_frames,
               "model_config": make_model_config, "torch_pickle": make_torch_pickle}
    for target, make in targets.items():
        shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)
        os.makedirs(os.path.join(CORPUS, target))
        make()
    make_dicts()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CORPUS) for f in fs)
    print("corpus: %d bytes in %s" % (total, CORPUS), file=sys.stderr)


if __name__ == "__main__":
    main()
