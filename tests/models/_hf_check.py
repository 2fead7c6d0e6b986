"""Run in a subprocess with the offline-hub environment (HF constants are read at import).

Prints one JSON line per model with what transformers resolved."""

import json
import sys

from transformers import AutoConfig, AutoTokenizer

TEXT = (
    "The quick brown fox jumps over the lazy dog. In the beginning of the twentieth century, "
    "many people moved from farms to cities in search of work, and the government responded by "
    "building new schools, roads and hospitals. Researchers at the university reported that the "
    "performance of the system improved significantly after the change."
)

for name in sys.argv[1:]:
    cfg = AutoConfig.from_pretrained(name)
    tok = AutoTokenizer.from_pretrained(name)
    ids = tok.encode(TEXT, add_special_tokens=False)
    regular = [i for i in range(0, tok.vocab_size, 997) if i not in tok.all_special_ids]
    text = tok.decode(regular)
    reenc = tok.encode(text, add_special_tokens=False)
    out = {
        "name": name,
        "architectures": cfg.architectures,
        "config_vocab_size": cfg.get_text_config().vocab_size,
        "len_tokenizer": len(tok),
        "bos": [tok.bos_token, tok.bos_token_id],
        "eos": [tok.eos_token, tok.eos_token_id],
        "chars_per_token": len(TEXT) / len(ids),
        "roundtrip": tok.decode(ids) == TEXT,
        "reencoded": len(reenc) > 0,
        "with_special": tok.encode("hi")[:1],
        "has_chat_template": bool(getattr(tok, "chat_template", None)),
        "vocab": {t: i for t, i in tok.get_vocab().items() if t.startswith("<") and t.endswith(">") and "reserved" not in t},
    }
    if out["has_chat_template"]:
        out["chat"] = tok.apply_chat_template(
            [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
        )
    print(json.dumps(out), flush=True)
