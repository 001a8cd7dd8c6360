#!/usr/bin/env python3
"""Converts a bench model directory (bench/make_bench_model.py) to a BF16 GGUF file with
llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python sdist that
bench/llamacpp.sh unpacks).

The bench model carries the default model's BPE tokenizer, whose pre-tokenizer hash the
converter does not know, so it refuses the vocabulary. llama-bench never tokenizes text (it
times random token ids), so this script, not a patch to their file, tells the converter to
treat the tokenizer as GPT-2-style byte-level BPE (which it is: ByteLevel pre-tokenizer and
decoder).

usage: convert_to_gguf.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf
"""
import sys


def main() -> None:
    llama_dir, model_dir, out = sys.argv[1:4]
    sys.path.insert(0, llama_dir)
    sys.path.insert(0, f"{llama_dir}/gguf-py")
    import convert_hf_to_gguf as convert  # noqa: E402  (llama.cpp's converter)
    from conversion import base  # noqa: E402

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"

    # Llama's set_vocab tries SentencePiece first and only a missing tokenizer.model sends it
    # on to the BPE paths; without the sentencepiece package it fails on the import instead.
    def no_sentencepiece(self):
        raise FileNotFoundError("no tokenizer.model (byte-level BPE tokenizer)")

    base.TextModel._set_vocab_sentencepiece = no_sentencepiece
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out, "--outtype", "bf16"]
    convert.main()


if __name__ == "__main__":
    main()
