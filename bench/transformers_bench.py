"""Batch-1 prefill and decode tok/s of the bench presets in Python transformers (+ each
method's library) on CPU: the reference side of qs_decode_bench's comparison.

Same checkpoint, same presets (bench/presets.json: dtype + quantization_config), same thread
count (torch.set_num_threads), same prompt length and decode length, greedy, min_new_tokens =
max_new_tokens so generation never stops early. A streamer timestamps every token: prefill
tok/s = prompt_tokens / time to first token, decode tok/s = (tokens - 1) / (last - first),
each the median over --repeats after one warm-up generation, exactly as qs_decode_bench
measures. The prompt is random token ids (another RNG than the C++ side; the speed of a
forward does not depend on the ids).

A preset that the library cannot run on this CPU is reported "n/a: <reason>": either the
reason recorded in presets.json ("transformers_na") or the exception the load or generation
raised. Nothing is dropped silently.

    .venv/bin/python bench/transformers_bench.py --model DIR --threads 2 --json out.json
"""

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_METHODS = ("fp32,bf16,bnb_int8,torchao_int8,quanto_int8,bnb_nf4,torchao_int4,hqq4,"
                   "quanto_int4")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--presets_file", default=os.path.join(HERE, "presets.json"))
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--prompt_tokens", type=int, default=128)
    ap.add_argument("--decode_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup_tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    return ap.parse_args(argv)


def select_presets(path, methods):
    with open(path) as f:
        table = {p["name"]: p for p in json.load(f)["presets"]}
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [n for n in names if n not in table]
    if unknown or not names:
        sys.exit(f"transformers_bench: unknown preset(s) {unknown}; known: {sorted(table)}")
    return [table[n] for n in names]


def transformers_config(qc):
    """The transformers quantization config object for a preset's quantization_config."""
    import transformers as tf

    method = qc.get("quant_method")
    kwargs = {k: v for k, v in qc.items() if k != "quant_method"}
    if method == "bitsandbytes":
        return tf.BitsAndBytesConfig.from_dict(dict(qc))
    if method == "hqq":
        return tf.HqqConfig.from_dict(dict(qc)) if "quant_config" in qc else tf.HqqConfig(**kwargs)
    if method == "quanto":
        return tf.QuantoConfig(**kwargs)
    if method == "torchao":
        return tf.TorchAoConfig.from_dict(dict(qc))
    from transformers import AutoQuantizationConfig

    return AutoQuantizationConfig.from_dict(dict(qc))


class TokenTimes:
    """A generate() streamer recording when each new token arrives (the first put() is the
    prompt)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.times = []
        self._prompt_seen = False

    def put(self, value):
        now = time.perf_counter() - self.start
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.extend([now] * int(value.numel()))

    def end(self):
        pass


def run_generation(model, prompt, new_tokens):
    import torch

    times = TokenTimes()
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, streamer=times, pad_token_id=0)
    generated = out.shape[1] - prompt.shape[1]
    if generated != new_tokens or len(times.times) != new_tokens:
        raise RuntimeError(f"generated {generated} tokens ({len(times.times)} streamed), "
                           f"wanted {new_tokens}")
    return times.times


def load_hqq(model_dir, dtype, qc):
    """transformers 5.23 has no HQQ path in from_pretrained (NotImplementedError), so do what
    it would: load the float model, let HqqConfig + prepare_for_hqq_linear pick each Linear's
    config, and replace those Linears with hqq's HQQLinear (compute dtype = model dtype)."""
    import torch
    from hqq.core.quantize import HQQLinear
    from transformers import AutoModelForCausalLM
    from transformers.integrations import prepare_for_hqq_linear

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    prepare_for_hqq_linear(model, quantization_config=transformers_config(qc))
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and getattr(module, "quant_config", None):
            parent, leaf = name.rsplit(".", 1)
            setattr(model.get_submodule(parent), leaf,
                    HQQLinear(module, module.quant_config, compute_dtype=dtype, device="cpu"))
    return model


def run_preset(preset, args, prompt):
    import torch
    from transformers import AutoModelForCausalLM

    row = {"preset": preset["name"], "dtype": preset["dtype"],
           "quantization_config": preset.get("quantization_config")}
    if preset.get("transformers_na"):
        row["na"] = preset["transformers_na"]
        return row
    qc = preset.get("quantization_config")
    model = None
    warnings.simplefilter("ignore")  # libraries re-enable theirs on import (bnb per call)
    try:
        dtype = getattr(torch, preset["dtype"])
        t0 = time.perf_counter()
        if qc is not None and qc.get("quant_method") == "hqq":
            model = load_hqq(args.model, dtype, qc).eval()
            row["via"] = "HqqConfig + prepare_for_hqq_linear + hqq HQQLinear"
            row["footprint_note"] = "get_memory_footprint counts only HQQLinear.W_q"
        else:
            kwargs = {"dtype": dtype}
            if qc is not None:
                kwargs["quantization_config"] = transformers_config(qc)
                kwargs["device_map"] = "cpu"
            model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs).eval()
        row["load_seconds"] = time.perf_counter() - t0
        row["memory_footprint_bytes"] = int(model.get_memory_footprint())
        if args.warmup_tokens > 0:
            run_generation(model, prompt[:, :16], args.warmup_tokens)
        prefill, decode = [], []
        for i in range(args.repeats):
            times = run_generation(model, prompt, args.decode_tokens)
            prefill.append(args.prompt_tokens / times[0])
            decode.append((len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0)
            print(f"[{preset['name']}] run {i + 1}: prefill {prefill[-1]:.1f} tok/s, "
                  f"decode {decode[-1]:.2f} tok/s", file=sys.stderr, flush=True)
        row.update(prefill_runs=prefill, decode_runs=decode,
                   prefill_tokens_per_s=statistics.median(prefill),
                   decode_tokens_per_s=statistics.median(decode))
    except Exception as e:  # a library that cannot run this preset on CPU: report why
        first_line = (str(e).strip().splitlines() or [""])[0][:300]
        row["na"] = f"{type(e).__name__}: {first_line}"
        print(f"[{preset['name']}] n/a: {row['na']}", file=sys.stderr, flush=True)
    finally:
        del model
        gc.collect()
    return row


def main(argv):
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a cast warning per forward
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    presets = select_presets(args.presets_file, args.methods)
    gen = torch.Generator().manual_seed(args.seed)
    with open(os.path.join(args.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    prompt = torch.randint(2, vocab, (1, args.prompt_tokens), generator=gen)
    rows = []
    for p in presets:
        print(f"[{p['name']}] loading", file=sys.stderr, flush=True)
        rows.append(run_preset(p, args, prompt))

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for lib in ("bitsandbytes", "torchao", "hqq", "optimum.quanto"):
        try:
            versions[lib] = __import__(lib, fromlist=["_"]).__version__
        except Exception:  # not installed or no __version__: leave it out
            pass
    print(f"\n## transformers_bench: {args.model}\n\nthreads {threads}, prompt "
          f"{args.prompt_tokens} tokens, decode {args.decode_tokens} tokens, {args.repeats} "
          f"repeats (median), batch 1, greedy; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + "\n")
    print("| preset | dtype | footprint MiB | prefill tok/s | decode tok/s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        if "na" in r:
            print(f"| {r['preset']} | {r['dtype']} | n/a: {r['na']} | | |")
        else:
            print(f"| {r['preset']} | {r['dtype']} | {r['memory_footprint_bytes'] / 2**20:.0f} | "
                  f"{r['prefill_tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.2f} |")
    sys.stdout.flush()
    if args.json:
        doc = {"benchmark": "transformers_bench", "model": args.model, "threads": threads,
               "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens,
               "repeats": args.repeats, "versions": versions, "results": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
