"""Run in a subprocess with the offline-hub environment: vLLM's own model-config and
tokenizer resolution, and its random benchmark dataset, for one model. Prints JSON."""

import json
import sys

from vllm.benchmarks.datasets import RandomDataset
from vllm.engine.arg_utils import EngineArgs
from vllm.tokenizers import get_tokenizer

name = sys.argv[1]
mc = EngineArgs(model=name, load_format="dummy").create_model_config()
tok = get_tokenizer(name)
reqs = RandomDataset(random_seed=0).sample(
    tokenizer=tok, num_requests=6, input_len=128, output_len=16, range_ratio=0.0, prefix_len=0
)
print(
    json.dumps(
        {
            "architectures": list(mc.hf_config.architectures),
            "max_model_len": mc.max_model_len,
            "vocab_size": mc.get_vocab_size(),
            "hidden_size": mc.get_hidden_size(),
            "dtype": str(mc.dtype),
            "len_tokenizer": len(tok),
            "prompt_lens": [r.prompt_len for r in reqs],
            "reencoded": [len(tok.encode(r.prompt, add_special_tokens=False)) for r in reqs],
            "num_special": tok.num_special_tokens_to_add(),
        }
    )
)
