"""The model catalog: which models ship, their tokenizer family and chat format.

Architecture configs live next to this file in configs/<org>/<name>/ (config.json and
generation_config.json, verbatim copies of the public Hugging Face files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CONFIGS_DIR = Path(__file__).with_name("configs")

# --- chat templates (the models' real chat formats, simplified: no tool calling) --------

LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}\n"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}\n"
    "{{- system_message }}\n"
    "{{- '<|eot_id|>' }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'system' and loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# CodeLlama-Instruct's (Llama 2 chat) template, as published.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content | trim + ' ' + eos_token }}{% endif %}{% endfor %}"
)


# --- tokenizer families --------------------------------------------------------------------


def _llama2_specials() -> dict[int, str]:
    return {0: "<unk>", 1: "<s>", 2: "</s>"}


def _llama3_specials(v31: bool) -> dict[int, str]:
    named = {
        128000: "<|begin_of_text|>",
        128001: "<|end_of_text|>",
        128006: "<|start_header_id|>",
        128007: "<|end_header_id|>",
        128009: "<|eot_id|>",
    }
    if v31:
        named.update({128004: "<|finetune_right_pad_id|>", 128008: "<|eom_id|>", 128010: "<|python_tag|>"})
    out, n = {}, 0
    for i in range(128000, 128256):
        if i in named:
            out[i] = named[i]
        else:
            out[i] = f"<|reserved_special_token_{n}|>"
            n += 1
    return out


QWEN2_NAMED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
# The real tokenizer marks these as added but not special (they survive skip_special_tokens).
QWEN2_NON_SPECIAL = frozenset(QWEN2_NAMED[14:])


def _qwen2_specials(vocab_size: int) -> dict[int, str]:
    # The real tokenizer has 151665 entries while the embedding has 152064 rows; we pad the
    # difference with reserved tokens so that len(tokenizer) == vocab_size.
    out = {151643 + i: t for i, t in enumerate(QWEN2_NAMED)}
    for n, i in enumerate(range(151643 + len(QWEN2_NAMED), vocab_size)):
        out[i] = f"<|extra_reserved_{n}|>"
    return out


@dataclass(frozen=True)
class ModelEntry:
    name: str  # hub id, "<org>/<name>"
    family: str  # llama2 | llama3 | llama31 | qwen2
    eos_token: str  # tokenizer_config eos
    chat_template: str | None = None

    @property
    def config_dir(self) -> Path:
        return CONFIGS_DIR / self.name

    def config(self) -> dict:
        return json.loads((self.config_dir / "config.json").read_text())

    def generation_config(self) -> dict | None:
        p = self.config_dir / "generation_config.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def specials(self) -> dict[int, str]:
        vocab_size = self.config()["vocab_size"]
        if self.family == "llama2":
            return _llama2_specials()
        if self.family in ("llama3", "llama31"):
            return _llama3_specials(self.family == "llama31")
        if self.family == "qwen2":
            return _qwen2_specials(vocab_size)
        raise ValueError(self.family)

    def tokenizer_files(self) -> dict[str, dict]:
        """tokenizer_config.json and special_tokens_map.json contents (tokenizer.json is
        built by revati.models.tokenizer)."""
        cfg = self.config()
        specials = self.specials()
        non_special = QWEN2_NON_SPECIAL if self.family == "qwen2" else frozenset()
        if self.family == "llama2":
            bos, unk, pad = "<s>", "<unk>", None
        elif self.family in ("llama3", "llama31"):
            bos, unk, pad = "<|begin_of_text|>", None, None
        else:
            bos, unk, pad = None, None, "<|endoftext|>"
        added = {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": t not in non_special}
            for i, t in sorted(specials.items())
        }
        tc: dict = {
            "added_tokens_decoder": added,
            "bos_token": bos,
            "clean_up_tokenization_spaces": False,
            "eos_token": self.eos_token,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": cfg["max_position_embeddings"],
            "pad_token": pad,
            "unk_token": unk,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        if self.family == "llama2":
            tc["add_bos_token"] = True
            tc["add_eos_token"] = False
        if self.chat_template:
            tc["chat_template"] = self.chat_template
        stm = {k: tc[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if tc[k] is not None}
        return {"tokenizer_config.json": tc, "special_tokens_map.json": stm}

    @property
    def bos_token(self) -> str | None:
        return {"llama2": "<s>", "llama3": "<|begin_of_text|>", "llama31": "<|begin_of_text|>"}.get(self.family)


_ENTRIES = [
    ModelEntry("meta-llama/Llama-2-7b-hf", "llama2", "</s>"),
    ModelEntry("meta-llama/Llama-2-70b-hf", "llama2", "</s>"),
    ModelEntry("meta-llama/Meta-Llama-3-8B", "llama3", "<|end_of_text|>"),
    ModelEntry("meta-llama/Meta-Llama-3-70B", "llama3", "<|end_of_text|>"),
    ModelEntry("meta-llama/Llama-3.1-8B", "llama31", "<|end_of_text|>"),
    ModelEntry("meta-llama/Llama-3.1-70B", "llama31", "<|end_of_text|>"),
    ModelEntry("meta-llama/Llama-3.1-8B-Instruct", "llama31", "<|eot_id|>", LLAMA31_CHAT_TEMPLATE),
    ModelEntry("meta-llama/Llama-3.1-70B-Instruct", "llama31", "<|eot_id|>", LLAMA31_CHAT_TEMPLATE),
    ModelEntry("mistralai/Mixtral-8x7B-v0.1", "llama2", "</s>"),
    ModelEntry("codellama/CodeLlama-34b-Instruct-hf", "llama2", "</s>", LLAMA2_CHAT_TEMPLATE),
    ModelEntry("Qwen/Qwen2.5-7B-Instruct", "qwen2", "<|im_end|>", QWEN25_CHAT_TEMPLATE),
]


@cache
def entries() -> dict[str, ModelEntry]:
    return {e.name: e for e in _ENTRIES}
