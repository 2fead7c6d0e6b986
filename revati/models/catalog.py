"""The model catalog: which models ship, their tokenizer family and chat format.

Architecture configs live next to this file in configs/<org>/<name>/ (config.json and
generation_config.json, verbatim copies of the public Hugging Face files).

Where each file comes from:

* Llama-2/3/3.1, Mixtral-8x7B, CodeLlama-34B, Qwen2.5-7B: config.json and
  generation_config.json as published on the Hugging Face hub.
* Qwen3-14B, Qwen3-30B-A3B, DeepSeek-V2-Lite, Mistral-Nemo-Instruct-2407, Yi-34B and the
  Llama-4-Scout FP8 checkpoint: config.json byte for byte from ../shared/data/models/ (itself
  from inference-sim/inference-sim @ f90a1e3a, model_configs/, Apache-2.0).
  Llama-3.1-70B-Instruct's shipped config.json is byte-identical to that folder's copy.
* generation_config.json of Qwen3-14B and Qwen3-30B-A3B: the published file's values (both
  models publish the same one: bos/pad 151643, eos [151645, 151643], the model card's
  temperature 0.6 / top_p 0.95 / top_k 20), written here since the hub is not reachable; the
  ids agree with config.json. The others of the six ship none: vLLM then takes bos/eos
  from config.json (``try_get_generation_config`` returns nothing offline), and revati's
  sampler bans every special id anyway.

The Llama-4-Scout FP8 model is the RedHatAI checkpoint
(``RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic``): its config is an llm-compressor
"FP8-dynamic" compressed-tensors export (``for_llm_compressor``, per-channel FP8 weights,
dynamic per-token FP8 activations, attention, routers, vision tower and lm_head left in
bf16), which is what RedHatAI publishes under that name.

Tokenizer families (the specials are public facts of each real tokenizer; everything else
is the stand-in BPE of revati.models.tokenizer, see its docstring):

=========  =========================================================================
llama2     Llama 2 / Mixtral / CodeLlama: 32000 ids, <unk>=0 <s>=1 </s>=2, BOS added.
llama3     Llama 3: 128000 regular + 256 specials (<|begin_of_text|>=128000 ...).
llama31    Llama 3.1: llama3 plus <|finetune_right_pad_id|>, <|eom_id|>, <|python_tag|>.
qwen2      Qwen2.5: 22 named specials from <|endoftext|>=151643, no BOS, padded with
           reserved tokens to the embedding's 152064 rows (the real tokenizer has 151665).
qwen3      Qwen3: qwen2's 22 plus <tool_response>, </tool_response>, <think>, </think>
           (151665-151668, added but not special, like <tool_call>), padded to the
           embedding's 151936 rows (the real tokenizer has 151669). Qwen3's chat format has
           no default system prompt (Qwen2.5's has) and an empty <think></think> block when
           ``enable_thinking=False``.
deepseek   DeepSeek-V2: 100000 regular ids, then <｜begin▁of▁sentence｜>=100000 (BOS, added)
           and <｜end▁of▁sentence｜>=100001 (EOS), with the fullwidth bar and the "▁" of the
           real names; the rest of 100002-102399 reserved placeholders (the real tokenizer
           has a few more added tokens there, about 100015 in all; their names are not used
           by serving). Padded to the embedding's 102400 rows.
tekken     Mistral-Nemo (tekken v3): 1000 control tokens first, then 130072 regular ones
           (131072 in all, as the real one). The control tokens are tekken's defaults for a
           file without a special-token list, as mistral_common's
           ``Tekkenizer.DEPRECATED_SPECIAL_TOKENS`` lists them and as the Hugging Face
           tokenizer.json of Mistral-Nemo-Instruct-2407 has them: <unk>=0 <s>=1 </s>=2
           [INST]=3 [/INST]=4 [AVAILABLE_TOOLS]=5 ... [TOOL_CONTENT]=19, then
           <SPECIAL_20>..<SPECIAL_999>. BOS added. Chat format: tekken's "[INST]...[/INST]"
           without spaces, the system message folded into the last user turn.
yi         Yi: 64000 ids, <unk>=0 <|startoftext|>=1 <|endoftext|>=2, pad <unk> (the config's
           pad_token_id 0). Yi's tokenizer_config sets add_bos_token false: no BOS is added.
           A sentencepiece model in reality; the stand-in is byte-level like llama2's (what
           serving sees is the vocabulary size, the specials and the chars-per-token ratio).
llama4     Llama 4: 200000 regular ids, then the specials of Meta's llama-models Llama 4
           tokenizer from 200000: <|begin_of_text|>=200000 <|end_of_text|>=200001, the FIM
           tokens, <|header_start|>=200005 <|header_end|>=200006 <|eom|>=200007
           <|eot|>=200008 <|step|>=200009, <|python_start|>/<|python_end|>=200016/7,
           <|finetune_right_pad|>=200018 (the config's pad_token_id), <|image_start|>=200080
           <|image_end|>=200081 (boi/eoi_token_index), <|tile_x_separator|>=200084
           <|tile_y_separator|>=200085, <|image|>=200090, <|patch|>=200092 (the config's
           image_token_index), reserved tokens between and after them; padded to the
           embedding's 202048 rows (the real tokenizer has about 201135). BOS added; EOS
           <|eot|>.
=========  =========================================================================

Every family keeps ``len(tokenizer) == vocab_size`` of the config, padding with reserved
special tokens where the real tokenizer is shorter than the embedding (Qwen, DeepSeek-V2,
Llama 4): ids past a real tokenizer can never be sampled anyway, and the sampler stand-in
(revati.vllm_plugin.tokens) bans every special id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


# Qwen3's (Qwen3-14B, Qwen3-30B-A3B: the hybrid thinking models), simplified: no tools, no
# reasoning_content field. No default system prompt; the reasoning of earlier assistant turns
# is dropped; enable_thinking=False opens the answer with an empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'assistant' %}\n"
    "        {%- set content = message.content %}\n"
    "        {%- if '</think>' in content %}\n"
    "            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}\n"
    "    {%- elif not (message.role == 'system' and loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
)

# Mistral-Nemo-Instruct-2407's (tekken v3), simplified: no tools. No spaces around [INST];
# the system message goes into the last user turn.
TEKKEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- '[INST]' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- '[INST]' + message['content'] + '[/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- message['content'] + eos_token }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# Llama 4's, simplified: text only, no tools.
LLAMA4_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|header_start|>system<|header_end|>\\n\\n' + messages[0]['content'] | trim + '<|eot|>' }}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' + message['content'] | trim + '<|eot|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|header_start|>assistant<|header_end|>\\n\\n' }}\n"
    "{%- endif %}\n"
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


def _qwen2_specials(vocab_size: int, named: list[str] = QWEN2_NAMED) -> dict[int, str]:
    # The real tokenizer has 151665 entries while the embedding has 152064 rows; we pad the
    # difference with reserved tokens so that len(tokenizer) == vocab_size.
    out = {151643 + i: t for i, t in enumerate(named)}
    for n, i in enumerate(range(151643 + len(named), vocab_size)):
        out[i] = f"<|extra_reserved_{n}|>"
    return out


# Qwen3 adds these after Qwen2.5's <|file_sep|> (151665-151668), added but not special.
QWEN3_NAMED = QWEN2_NAMED + ["<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN3_NON_SPECIAL = frozenset(QWEN3_NAMED[14:])


def _qwen3_specials(vocab_size: int) -> dict[int, str]:
    return _qwen2_specials(vocab_size, QWEN3_NAMED)


DEEPSEEK_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"  # <｜begin▁of▁sentence｜>
DEEPSEEK_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"  # <｜end▁of▁sentence｜>


def _deepseek_specials(vocab_size: int) -> dict[int, str]:
    out = {100000: DEEPSEEK_BOS, 100001: DEEPSEEK_EOS}
    for n, i in enumerate(range(100002, vocab_size)):
        out[i] = f"<|reserved_special_token_{n}|>"
    return out


# tekken's control tokens 0-19 (mistral_common Tekkenizer.DEPRECATED_SPECIAL_TOKENS, used by
# tekken files without a special-token list, such as Mistral-Nemo's tekken_240718).
TEKKEN_CONTROL = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
]
TEKKEN_NUM_SPECIAL = 1000


def _tekken_specials(vocab_size: int) -> dict[int, str]:
    out = dict(enumerate(TEKKEN_CONTROL))
    for i in range(len(TEKKEN_CONTROL), TEKKEN_NUM_SPECIAL):
        out[i] = f"<SPECIAL_{i}>"
    return out


def _yi_specials(vocab_size: int) -> dict[int, str]:
    return {0: "<unk>", 1: "<|startoftext|>", 2: "<|endoftext|>"}


def _llama4_specials(vocab_size: int) -> dict[int, str]:
    # Meta's llama-models Llama 4 tokenizer: 5 basic tokens, 14 + 61 text post-training
    # tokens (200005-200079), 13 + 1041 vision tokens (200080-201133). The names of the
    # reserved ones follow its pattern; past 201133 the ids are our padding.
    text = ["<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>", "<|step|>"]
    text += [f"<|text_post_train_reserved_special_token_{i}|>" for i in range(6)]
    text += ["<|python_start|>", "<|python_end|>", "<|finetune_right_pad|>"]
    text += [f"<|text_post_train_reserved_special_token_{i}|>" for i in range(6, 6 + 61)]
    vision = ["<|image_start|>", "<|image_end|>", "<|vision_reserved_special_token_0|>",
              "<|vision_reserved_special_token_1|>", "<|tile_x_separator|>", "<|tile_y_separator|>"]
    vision += [f"<|vision_reserved_special_token_{i}|>" for i in range(2, 6)]
    vision += ["<|image|>", "<|vision_reserved_special_token_6|>", "<|patch|>"]
    vision += [f"<|vision_reserved_special_token_{i}|>" for i in range(7, 7 + 1041)]
    named = ["<|begin_of_text|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
    named += text + vision
    out = {200000 + i: t for i, t in enumerate(named)}
    for n, i in enumerate(range(200000 + len(named), vocab_size)):
        out[i] = f"<|extra_reserved_{n}|>"
    return out


@dataclass(frozen=True)
class TokenizerFamily:
    """What a family's tokenizer files say besides the vocabulary."""

    specials: Callable[[int], dict[int, str]]  # vocab_size -> {id: token}
    bos: str | None  # tokenizer_config's bos_token
    add_bos: bool  # the tokenizer prepends bos (tokenizer.json's post-processor)
    unk: str | None = None
    pad: str | None = None
    non_special: frozenset[str] = frozenset()  # added tokens that are not special
    # add_bos_token / add_eos_token written into tokenizer_config (None: keys left out)
    bos_eos_flags: tuple[bool, bool] | None = None


FAMILIES: dict[str, TokenizerFamily] = {
    "llama2": TokenizerFamily(lambda v: _llama2_specials(), "<s>", True, unk="<unk>", bos_eos_flags=(True, False)),
    "llama3": TokenizerFamily(lambda v: _llama3_specials(False), "<|begin_of_text|>", True),
    "llama31": TokenizerFamily(lambda v: _llama3_specials(True), "<|begin_of_text|>", True),
    "qwen2": TokenizerFamily(_qwen2_specials, None, False, pad="<|endoftext|>", non_special=QWEN2_NON_SPECIAL),
    "qwen3": TokenizerFamily(_qwen3_specials, None, False, pad="<|endoftext|>", non_special=QWEN3_NON_SPECIAL),
    "deepseek": TokenizerFamily(_deepseek_specials, DEEPSEEK_BOS, True, bos_eos_flags=(True, False)),
    "tekken": TokenizerFamily(_tekken_specials, "<s>", True, unk="<unk>", bos_eos_flags=(True, False)),
    "yi": TokenizerFamily(_yi_specials, "<|startoftext|>", False, unk="<unk>", pad="<unk>", bos_eos_flags=(False, False)),
    "llama4": TokenizerFamily(_llama4_specials, "<|begin_of_text|>", True, pad="<|finetune_right_pad|>"),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str  # hub id, "<org>/<name>"
    family: str  # a key of FAMILIES
    eos_token: str  # tokenizer_config eos
    chat_template: str | None = None

    @property
    def config_dir(self) -> Path:
        return CONFIGS_DIR / self.name

    def config(self) -> dict:
        return json.loads((self.config_dir / "config.json").read_text())

    def text_config(self) -> dict:
        """The language model's part of the config: ``text_config`` of a multimodal config
        (Llama 4) that has no top-level vocab_size, else the config itself."""
        cfg = self.config()
        if "vocab_size" not in cfg and isinstance(cfg.get("text_config"), dict):
            return cfg["text_config"]
        return cfg

    @property
    def vocab_size(self) -> int:
        return int(self.text_config()["vocab_size"])

    def generation_config(self) -> dict | None:
        p = self.config_dir / "generation_config.json"
        return json.loads(p.read_text()) if p.is_file() else None

    @property
    def tokenizer_family(self) -> TokenizerFamily:
        try:
            return FAMILIES[self.family]
        except KeyError:
            raise ValueError(self.family) from None

    def specials(self) -> dict[int, str]:
        return self.tokenizer_family.specials(self.vocab_size)

    @property
    def non_special(self) -> frozenset[str]:
        return self.tokenizer_family.non_special

    def tokenizer_files(self) -> dict[str, dict]:
        """tokenizer_config.json and special_tokens_map.json contents (tokenizer.json is
        built by revati.models.tokenizer)."""
        fam = self.tokenizer_family
        specials = self.specials()
        added = {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": t not in fam.non_special}
            for i, t in sorted(specials.items())
        }
        tc: dict = {
            "added_tokens_decoder": added,
            "bos_token": fam.bos,
            "clean_up_tokenization_spaces": False,
            "eos_token": self.eos_token,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": self.text_config()["max_position_embeddings"],
            "pad_token": fam.pad,
            "unk_token": fam.unk,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        if fam.bos_eos_flags is not None:
            tc["add_bos_token"], tc["add_eos_token"] = fam.bos_eos_flags
        if self.chat_template:
            tc["chat_template"] = self.chat_template
        stm = {k: tc[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if tc[k] is not None}
        return {"tokenizer_config.json": tc, "special_tokens_map.json": stm}

    @property
    def bos_token(self) -> str | None:
        """The token the tokenizer prepends to every encoding, or None."""
        fam = self.tokenizer_family
        return fam.bos if fam.add_bos else None


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
    ModelEntry("Qwen/Qwen3-14B", "qwen3", "<|im_end|>", QWEN3_CHAT_TEMPLATE),
    ModelEntry("Qwen/Qwen3-30B-A3B", "qwen3", "<|im_end|>", QWEN3_CHAT_TEMPLATE),
    ModelEntry("deepseek-ai/DeepSeek-V2-Lite", "deepseek", DEEPSEEK_EOS),
    ModelEntry("mistralai/Mistral-Nemo-Instruct-2407", "tekken", "</s>", TEKKEN_CHAT_TEMPLATE),
    ModelEntry("01-ai/Yi-34B", "yi", "<|endoftext|>"),
    ModelEntry("RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic", "llama4", "<|eot|>", LLAMA4_CHAT_TEMPLATE),
]


@cache
def entries() -> dict[str, ModelEntry]:
    return {e.name: e for e in _ENTRIES}
