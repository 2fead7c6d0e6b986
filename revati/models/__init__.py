"""Model catalog and offline Hugging Face hub.

The emulator runs the real vLLM stack with ``--load-format dummy``: it needs a model's
architecture config and a tokenizer, never its weights. This package ships the public
architecture configs of the models in the catalog, builds stand-in tokenizers locally
(revati.models.tokenizer), and lays both out as a Hugging Face hub cache so that
``vllm serve meta-llama/Llama-3.1-8B --load-format dummy`` resolves with no network.

Typical use (what ``revati exec`` does)::

    env = prepare_offline_hub(hf_home)     # idempotent; seconds the first time
    os.environ.update(env)                 # or pass env= to the vLLM subprocess
    r = resolve(args.model)                # catalog id or local config dir
    argv = ["vllm", "serve", r.model, *(["--tokenizer", r.tokenizer] if r.tokenizer else [])]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from revati.models import tokenizer as _tok
from revati.models.catalog import ModelEntry, entries
from revati.models.tokenizer import BUILDER_VERSION, cache_dir, tokenizer_cache_dir

__all__ = [
    "UnknownModelError",
    "ResolvedModel",
    "list_models",
    "model_config",
    "generation_config",
    "resolve",
    "build_tokenizer",
    "prepare_offline_hub",
    "offline_env",
    "default_hf_home",
    "cache_dir",
]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class UnknownModelError(KeyError, ValueError):
    """A model name that is neither in the catalog nor a local config directory."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def list_models() -> list[str]:
    """Hub ids of every model in the catalog, in catalog order."""
    return list(entries())


def _entry(name: str) -> ModelEntry:
    table = entries()
    if name in table:
        return table[name]
    # Forgive case and a missing org ("llama-3.1-8b").
    low = name.lower()
    hits = [e for k, e in table.items() if k.lower() == low or k.split("/", 1)[1].lower() == low]
    if len(hits) == 1:
        return hits[0]
    raise UnknownModelError(
        f"unknown model {name!r}: not in the catalog and not a local directory. "
        f"Known models: {', '.join(table)}. Or pass a path to a directory with a Hugging Face config.json."
    )


def model_config(name: str) -> dict:
    """The architecture config (config.json contents) of a catalog model or a local dir."""
    p = Path(name).expanduser()
    if p.is_dir():
        return json.loads(_require_config(p).read_text())
    return _entry(name).config()


def generation_config(name: str) -> dict | None:
    return _entry(name).generation_config()


@dataclass(frozen=True)
class ResolvedModel:
    """What to hand vLLM: ``--model model`` and, when set, ``--tokenizer tokenizer``."""

    model: str  # hub id (served from the offline hub) or an absolute local path
    tokenizer: str | None  # a local tokenizer dir to pass as --tokenizer, or None
    config: dict = field(repr=False)
    in_catalog: bool


def resolve(name_or_path: str | os.PathLike) -> ResolvedModel:
    """Resolves a catalog name (exact hub id, or case-insensitive, org optional) or a local
    Hugging Face-style config directory. A local dir without tokenizer files gets a built
    stand-in tokenizer (in the cache, the dir is left untouched) returned as ``tokenizer``.
    Raises UnknownModelError (listing the catalog) for anything else."""
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.is_dir():
        cfg_path = _require_config(p)
        cfg = json.loads(cfg_path.read_text())
        tok = None
        if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "tekken.json")):
            tok = str(_build_local_tokenizer(cfg))
        return ResolvedModel(model=str(p.resolve()), tokenizer=tok, config=cfg, in_catalog=False)
    if s.startswith((".", "/", "~")) or os.sep in s.strip("/").replace("/", "", 1):
        raise UnknownModelError(f"model path {s!r} is not a directory. Known models: {', '.join(entries())}")
    e = _entry(s)
    return ResolvedModel(model=e.name, tokenizer=None, config=e.config(), in_catalog=True)


def _require_config(p: Path) -> Path:
    cfg = p / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(
            f"{p} has no config.json: a local model directory must hold a Hugging Face config.json "
            f"(architectures, hidden_size, vocab_size, ...). Known catalog models: {', '.join(entries())}"
        )
    return cfg


# ---------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------


def _tokenizer_dir(key: str) -> Path:
    return tokenizer_cache_dir() / key.replace("/", "--")


def _write_tokenizer_dir(d: Path, tokenizer_json: str, extra: dict[str, dict]) -> Path:
    tmp = d.with_name(d.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    for fname, obj in extra.items():
        (tmp / fname).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        os.replace(tmp, d)  # atomic when d does not exist
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent builder won: same content
    return d


def build_tokenizer(name: str) -> Path:
    """Directory holding tokenizer.json, tokenizer_config.json and special_tokens_map.json
    for a catalog model; built on first use (a few seconds) and cached by model + builder
    version under cache_dir()/tokenizers/."""
    e = _entry(name)
    d = _tokenizer_dir(e.name)
    if all((d / f).is_file() for f in TOKENIZER_FILES):
        return d
    text = _tok.build_tokenizer_json(
        e.vocab_size,
        e.specials(),
        non_special=e.non_special,
        bos_token=e.bos_token,
    )
    return _write_tokenizer_dir(d, text, e.tokenizer_files())


def _ids(v) -> list[int]:
    if isinstance(v, int):
        return [v]
    if isinstance(v, list):
        return [x for x in v if isinstance(x, int)]
    return []


def _build_local_tokenizer(cfg: dict) -> Path:
    """A stand-in tokenizer for an arbitrary config: vocab_size ids, a BOS/EOS at the
    config's ids, other ids near them reserved."""
    vocab_size = int(cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size") or 0)
    if vocab_size < 512:
        raise ValueError(f"cannot build a tokenizer: config vocab_size is {vocab_size!r}")
    bos, eos = _ids(cfg.get("bos_token_id")), _ids(cfg.get("eos_token_id"))
    names = {}
    for i in eos:
        names.setdefault(i, "<|end_of_text|>" if i == eos[0] else None)
    for i in bos:
        names.setdefault(i, "<|begin_of_text|>")
    low = [i for i in names if 0 <= i < 16]
    high = [i for i in names if 16 <= i < vocab_size]
    n_low = max(low) + 1 if low else 0
    start_high = min(high) if high else vocab_size - 1
    start_high = max(n_low + 256, min(start_high, n_low + _tok.MAX_REGULAR))
    if start_high > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} too small for special ids {sorted(names)}")
    specials: dict[int, str] = {}
    n = 0
    for i in list(range(n_low)) + list(range(start_high, vocab_size)):
        name = names.get(i)
        if name is None or name in specials.values():
            name = f"<|reserved_special_token_{n}|>"
            n += 1
        specials[i] = name
    bos_tok = specials[bos[0]] if bos and bos[0] in specials else None
    eos_tok = specials[eos[0]] if eos and eos[0] in specials else specials[vocab_size - 1]
    key = hashlib.sha1(json.dumps([vocab_size, sorted(specials.items())]).encode()).hexdigest()[:16]
    d = _tokenizer_dir(f"local-{key}")
    if all((d / f).is_file() for f in TOKENIZER_FILES):
        return d
    text = _tok.build_tokenizer_json(vocab_size, specials, bos_token=bos_tok)
    tc = {
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
            for i, t in sorted(specials.items())
        },
        "bos_token": bos_tok,
        "eos_token": eos_tok,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(cfg.get("max_position_embeddings") or 4096),
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    stm = {k: tc[k] for k in ("bos_token", "eos_token") if tc[k]}
    return _write_tokenizer_dir(d, text, {"tokenizer_config.json": tc, "special_tokens_map.json": stm})


# ---------------------------------------------------------------------------------------
# Offline hub
# ---------------------------------------------------------------------------------------


def default_hf_home() -> Path:
    """Where revati keeps its offline hub unless told otherwise: cache_dir()/hf_home."""
    return cache_dir() / "hf_home"


def offline_env(hf_home: str | os.PathLike) -> dict[str, str]:
    """Environment for any process (vLLM, transformers, the benchmark client) that must
    resolve catalog models from the offline hub at hf_home and never touch the network."""
    hf_home = Path(hf_home).resolve()
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),  # wins over a user's HF_HUB_CACHE pointing elsewhere
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def _revision(e: ModelEntry) -> str:
    h = hashlib.sha1(f"revati-offline-hub\0{e.name}\0{BUILDER_VERSION}\0".encode())
    for f in ("config.json", "generation_config.json"):
        p = e.config_dir / f
        if p.is_file():
            h.update(f.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(json.dumps(e.tokenizer_files(), sort_keys=True).encode())
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _materialize(repo: Path, e: ModelEntry, rev: str) -> None:
    snap = repo / "snapshots" / rev
    tmp = repo / "snapshots" / f".{rev}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("config.json", "generation_config.json"):
        p = e.config_dir / f
        if p.is_file():
            shutil.copyfile(p, tmp / f)
    tok_dir = build_tokenizer(e.name)
    for f in TOKENIZER_FILES:
        _link_or_copy(tok_dir / f, tmp / f)
    if snap.exists():
        shutil.rmtree(snap)
    try:
        os.replace(tmp, snap)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer got there first
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    ref_tmp = repo / "refs" / f".main.tmp{os.getpid()}"
    ref_tmp.write_text(rev)
    os.replace(ref_tmp, repo / "refs" / "main")


def _snapshot_complete(repo: Path, e: ModelEntry, rev: str) -> bool:
    snap = repo / "snapshots" / rev
    try:
        if (repo / "refs" / "main").read_text().strip() != rev:
            return False
    except OSError:
        return False
    want = ["config.json", *TOKENIZER_FILES]
    if (e.config_dir / "generation_config.json").is_file():
        want.append("generation_config.json")
    return all((snap / f).is_file() for f in want)


def prepare_offline_hub(hf_home: str | os.PathLike | None = None, models: list[str] | None = None) -> dict[str, str]:
    """Lays out every catalog model (or just ``models``) as a Hugging Face hub cache under
    ``hf_home/hub/models--<org>--<name>/`` (refs/main -> snapshots/<revision>/ with
    config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json) and returns the environment to run vLLM with
    (see offline_env). Idempotent: a prepared hub is checked in milliseconds; the first
    call builds the tokenizers (seconds each, cached across hubs)."""
    hf_home = Path(hf_home) if hf_home is not None else default_hf_home()
    hub = hf_home / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    names = [_entry(m).name for m in models] if models else list_models()
    for name in names:
        e = entries()[name]
        org, short = e.name.split("/", 1)
        repo = hub / f"models--{org}--{short}"
        rev = _revision(e)
        if not _snapshot_complete(repo, e, rev):
            _materialize(repo, e, rev)
    return offline_env(hf_home)
