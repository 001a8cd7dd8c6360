"""Writes a Llama-shaped checkpoint with random weights for the speed benchmarks.

The directory is a Hugging Face model directory both quantserve and transformers load:
config.json (LlamaForCausalLM), bf16 safetensors (sharded with model.safetensors.index.json
above --max_shard_mib), generation_config.json and the tokenizer of assets/models/kjv-llama,
so text prompts tokenize. The vocabulary is that tokenizer's 4096 tokens, not Llama's 32000:
the embedding and lm_head are therefore smaller than TinyLlama's (2 x 8.4M instead of
2 x 65.5M parameters at hidden 2048), so the default model has 0.99B parameters instead of
1.10B; every other shape is TinyLlama-1.1B's.

Weights are normal(0, 1) * --init_std from one torch.Generator seeded with --seed, drawn
tensor by tensor in checkpoint order, so the same flags give the same bytes. RMSNorm weights
are ones. The output only needs to be fast to run, not meaningful: greedy decoding of random
weights produces arbitrary (but deterministic) tokens.

Cached: the flags are stored in bench_model.json; a directory whose stamp matches is left
alone (the script prints "cached"), any other existing directory is replaced.

    .venv/bin/python bench/make_bench_model.py --out ~/.cache/quantserve/bench/llama-1b
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_DIR = os.path.join(HERE, "..", "assets", "models", "kjv-llama")
STAMP = "bench_model.json"
TOKENIZER_VOCAB = 4096


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden_size", type=int, default=2048)
    ap.add_argument("--intermediate_size", type=int, default=5632)
    ap.add_argument("--num_hidden_layers", type=int, default=22)
    ap.add_argument("--num_attention_heads", type=int, default=32)
    ap.add_argument("--num_key_value_heads", type=int, default=4)
    ap.add_argument("--head_dim", type=int, default=64)
    ap.add_argument("--max_position_embeddings", type=int, default=2048)
    ap.add_argument("--vocab_size", type=int, default=TOKENIZER_VOCAB,
                    help="must be >= the tokenizer's 4096 tokens")
    ap.add_argument("--tie_word_embeddings", action="store_true")
    ap.add_argument("--init_std", type=float, default=0.02)
    ap.add_argument("--max_shard_mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true",
                    help="small smoke-test shape: hidden 512, intermediate 1408, 4 layers, "
                         "8 heads, 2 kv heads (overrides the shape flags)")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden_size, args.intermediate_size, args.num_hidden_layers = 512, 1408, 4
        args.num_attention_heads, args.num_key_value_heads = 8, 2
    if args.vocab_size < TOKENIZER_VOCAB:
        ap.error(f"--vocab_size must be >= {TOKENIZER_VOCAB} (the tokenizer's vocabulary)")
    if args.num_attention_heads % args.num_key_value_heads != 0:
        ap.error("--num_attention_heads must be a multiple of --num_key_value_heads")
    return args


def stamp_of(args):
    """The flags that determine the bytes written (not --out)."""
    keys = ["seed", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
            "vocab_size", "tie_word_embeddings", "init_std", "max_shard_mib"]
    return {"format": 1, **{k: getattr(args, k) for k in keys}}


def config_of(args):
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "dtype": "bfloat16",
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "hidden_size": args.hidden_size,
        "initializer_range": args.init_std,
        "intermediate_size": args.intermediate_size,
        "max_position_embeddings": args.max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": args.num_attention_heads,
        "num_hidden_layers": args.num_hidden_layers,
        "num_key_value_heads": args.num_key_value_heads,
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": args.tie_word_embeddings,
        "use_cache": True,
        "vocab_size": args.vocab_size,
    }


def tensor_shapes(args):
    """(name, shape, is_norm) in checkpoint order."""
    h, i, d = args.hidden_size, args.intermediate_size, args.head_dim
    q, kv = args.num_attention_heads * d, args.num_key_value_heads * d
    yield "model.embed_tokens.weight", (args.vocab_size, h), False
    for layer in range(args.num_hidden_layers):
        p = f"model.layers.{layer}."
        yield p + "input_layernorm.weight", (h,), True
        yield p + "self_attn.q_proj.weight", (q, h), False
        yield p + "self_attn.k_proj.weight", (kv, h), False
        yield p + "self_attn.v_proj.weight", (kv, h), False
        yield p + "self_attn.o_proj.weight", (h, q), False
        yield p + "post_attention_layernorm.weight", (h,), True
        yield p + "mlp.gate_proj.weight", (i, h), False
        yield p + "mlp.up_proj.weight", (i, h), False
        yield p + "mlp.down_proj.weight", (h, i), False
    yield "model.norm.weight", (h,), True
    if not args.tie_word_embeddings:
        yield "lm_head.weight", (args.vocab_size, h), False


def write_weights(args, tmp):
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(args.seed)
    limit = args.max_shard_mib << 20
    shards, current, current_bytes, total = [], {}, 0, 0
    for name, shape, is_norm in tensor_shapes(args):
        if is_norm:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=gen) * args.init_std).to(torch.bfloat16)
        nbytes = t.numel() * t.element_size()
        if current and current_bytes + nbytes > limit:
            shards.append(current)
            current, current_bytes = {}, 0
        current[name] = t
        current_bytes += nbytes
        total += nbytes
    shards.append(current)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata=meta)
        return total, 1
    weight_map = {}
    for n, shard in enumerate(shards):
        fname = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(tmp, fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total, len(shards)


def write_tokenizer(args, tmp):
    shutil.copy(os.path.join(TOKENIZER_DIR, "tokenizer.json"), tmp)
    with open(os.path.join(TOKENIZER_DIR, "tokenizer_config.json")) as f:
        tok_cfg = json.load(f)
    tok_cfg["model_max_length"] = args.max_position_embeddings
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 1}, f, indent=2)


def main(argv):
    args = parse_args(argv)
    out = os.path.abspath(os.path.expanduser(args.out))
    stamp = stamp_of(args)
    try:
        with open(os.path.join(out, STAMP)) as f:
            if json.load(f) == stamp:
                print(f"make_bench_model: cached {out}")
                return 0
    except (OSError, ValueError):
        pass
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config_of(args), f, indent=2)
    write_tokenizer(args, tmp)
    total, n_shards = write_weights(args, tmp)
    params = total // 2
    with open(os.path.join(tmp, STAMP), "w") as f:  # last: a partial directory never matches
        json.dump(stamp, f, indent=2)
    for name in os.listdir(tmp):  # safetensors writes 0600; the model is shared read-only
        os.chmod(os.path.join(tmp, name), 0o644)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    print(f"make_bench_model: wrote {out}: {params / 1e9:.3f}B parameters, "
          f"{total / 2**30:.2f} GiB bf16 in {n_shards} shard(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
