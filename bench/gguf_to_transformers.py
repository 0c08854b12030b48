"""Turn a GGUF file into a transformers model folder, so `transformers serve` (an OpenAI-compatible server with
continuous batching on a GPU) can serve the same small model the CPU runs used (docs/planning.md).

Usage: python bench/gguf_to_transformers.py model.gguf out_folder
The weights are dequantized (transformers' GGUF reader, which needs the `gguf` package) and saved in bf16; the
tokenizer and chat template come from the file's metadata. `transformers serve repo:file.gguf` itself fails on a
local GGUF in transformers 5.23 (its config has no `architectures`), and transformers will not save a model it
loaded from GGUF (the quantizer marks it unserializable): a plain model of the same config takes the tensors.
A GGUF file carries no generation config, and transformers' default one decodes greedily: `transformers serve`
then ignores a request's temperature (it only turns sampling off at 0), so every retry of the planner would get
the same answer. The folder's generation config samples (`do_sample`), so the request's temperature applies, as
on llama.cpp, Ollama and vLLM.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, out = Path(sys.argv[1]), sys.argv[2]
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.do_sample = True
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"{source} -> {out} ({config.architectures[0]}) in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
