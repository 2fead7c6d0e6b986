"""Builds stand-in tokenizers locally, with no download.

The emulator never sees real weights, and the real tokenizers sit behind the Hugging Face
hub (some gated). What the serving stack needs from a tokenizer is its shape: the exact
vocabulary size, the real special tokens at their real ids, the chat format, and a
realistic text-to-token ratio so that prompt lengths are right. So we build one:

* A byte-level BPE (the GPT-2 / Llama 3 / Qwen scheme) whose vocabulary and merges are
  constructed programmatically (no training): the 256 byte symbols, then pieces of
  common English words ranked by a Zipf-weighted substring count, digits and code
  punctuation, then pronounceable pseudo-words until the required size is reached.
  Every token can be produced by the merges, and every string can be encoded (all bytes
  are in the vocabulary). English encodes at about 4 characters per token.
* The model family's special tokens at their real ids, padding the vocabulary to the
  config's ``vocab_size`` exactly (``len(tokenizer) == vocab_size``).

Builds are deterministic and cached on disk under ``cache_dir()/tokenizers/v<BUILDER_VERSION>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from revati import envs
from revati.models._words import WORDS

# Bump whenever the produced tokenizer files change (vocabulary, specials, configs).
BUILDER_VERSION = "1"

# The most regular (non-special) tokens any family needs: Llama 4's 200000. A smaller
# vocabulary is a prefix of the same stream (build_base_bpe), so raising this does not change
# the tokenizers of smaller families (Qwen2's 151643 and below).
MAX_REGULAR = 200000

SPACE = "\u0120"  # "Ġ": the byte-level symbol of b" "
NEWLINE = "\u010a"  # "Ċ": b"\n"
TAB = "\u0109"  # "ĉ": b"\t"


def cache_dir() -> Path:
    """Root of revati's on-disk cache: $REVATI_CACHE_DIR, else $XDG_CACHE_HOME/revati."""
    env = envs.get("REVATI_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "revati"


def tokenizer_cache_dir() -> Path:
    return cache_dir() / "tokenizers" / f"v{BUILDER_VERSION}"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable symbol map (what the ByteLevel pre-tokenizer uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _to_symbols(text: str) -> str:
    m = bytes_to_unicode()
    return "".join(m[b] for b in text.encode("utf-8"))


# ---------------------------------------------------------------------------------------
# Candidate pieces, best first
# ---------------------------------------------------------------------------------------

_PUNCT_PIECES = [
    SPACE * 2, SPACE * 3, SPACE * 4, SPACE * 8, SPACE * 7, SPACE * 15, NEWLINE * 2, NEWLINE * 3,
    TAB * 2, TAB * 3, ",", ".", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
    SPACE + "(", SPACE + '"', SPACE + "'", SPACE + "-", SPACE + "=", SPACE + "{", SPACE + "}",
    SPACE + "[", SPACE + "*", SPACE + "/", SPACE + "+", SPACE + "<", SPACE + ">", SPACE + "&",
    SPACE + "$", SPACE + "#", SPACE + "@", SPACE + "|", SPACE + "==", SPACE + "!=", SPACE + "->",
    SPACE + "=>", SPACE + "+=", SPACE + "--", SPACE + "//", SPACE + "/*", SPACE + "**",
    SPACE + "&&", SPACE + "||", SPACE + "<=", SPACE + ">=", SPACE + "...", SPACE + "`",
    "),", ").", ");", "()", "():", "();", "(),", "()).", "[]", "{}", "{\n", '",', '".', '":',
    "':", "',", ".,", "...", "--", "---", "----", "========", "////", "**", "##", "###", "__",
    "</", "/>", "://", ".\"", ".'", "?\"", "!\"", ":", ";", "?", "!", ")", "]", "}", "'", '"',
]


def _number_pieces() -> list[str]:
    out = [str(i) for i in range(10, 100)]
    out += [SPACE + str(i) for i in range(10)]
    out += [SPACE + str(i) for i in range(10, 100)]
    out += ["%03d" % i for i in range(1000)]
    out += [str(i) for i in range(1900, 2040)]
    return out


def _word_candidates() -> list[str]:
    """Pieces of common English words, ranked like BPE would rank them: by a Zipf-weighted
    count of the substring across word forms (" word", " Word", "word", "Word", plurals, ...)."""
    score: dict[str, float] = defaultdict(float)
    order: dict[str, int] = {}
    for rank, w in enumerate(WORDS):
        f = 1.0 / (rank + 8)
        cap = w[:1].upper() + w[1:]
        forms = [
            (SPACE + w, 1.0), (SPACE + cap, 0.2), (w, 0.12), (cap, 0.1), (SPACE + w.upper(), 0.01),
            (SPACE + w + "s", 0.08), (SPACE + w + "ed", 0.04), (SPACE + w + "ing", 0.04),
            (SPACE + w + "ly", 0.01), (SPACE + w + "er", 0.02), (w + "s", 0.01),
        ]
        for form, wf in forms:
            n = len(form)
            for i in range(n):
                for j in range(i + 2, n + 1):
                    # Short pieces anywhere; longer ones only as a prefix or suffix (BPE
                    # rarely keeps long word-internal pieces).
                    if j - i > 4 and i != 0 and j != n:
                        continue
                    s = form[i:j]
                    score[s] += f * wf
                    order.setdefault(s, len(order))
    return sorted(score, key=lambda s: (-score[s], order[s]))


_ONSETS = ("b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr kn ph pl pr "
           "qu sc sh sk sl sm sn sp st str sw th tr tw wh").split()
_NUCLEI = "a e i o u ai ea ee ie oa oo ou ay".split()
_CODAS = [""] + "b ck d f g l ll m n nd ng nt p r rd rk rn rt s ss st t th x".split()


def _pseudo_words():
    """Endless deterministic stream of pronounceable pieces: syllables, then pairs of them."""
    syllables = [o + n + c for o in _ONSETS for n in _NUCLEI for c in _CODAS]
    syllables += [n + c for n in _NUCLEI for c in _CODAS if c]
    for s in syllables:
        yield SPACE + s
        yield s
        yield SPACE + s[:1].upper() + s[1:]
    n = len(syllables)
    step = 7919  # prime, coprime with n: walks pairs in a scrambled but fixed order
    for k in range(n * n):
        a = syllables[k % n]
        b = syllables[(k * step // n + k) % n]
        yield SPACE + a + b
        if k % 3 == 0:
            yield a + b


# ---------------------------------------------------------------------------------------
# The merge table
# ---------------------------------------------------------------------------------------


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    parts = list(word)
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            break
        a, b = parts[best_i], parts[best_i + 1]
        # Merge every occurrence of the pair, left to right, as BPE does.
        out, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


def build_base_bpe(n_regular: int = MAX_REGULAR) -> tuple[list[str], list[tuple[str, str]]]:
    """Returns (tokens, merges): tokens[i] is regular token i (the 256 byte symbols first,
    then one new token per merge, merges[k] producing tokens[256 + k]). Any prefix of the
    result is itself a consistent BPE, so smaller vocabularies are truncations."""
    byte_syms = [bytes_to_unicode()[b] for b in range(256)]
    tokens: list[str] = list(byte_syms)
    have: set[str] = set(tokens)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}

    def add_merge(a: str, b: str) -> None:
        ranks[(a, b)] = len(merges)
        merges.append((a, b))
        tokens.append(a + b)
        have.add(a + b)

    word_cands = _word_candidates()
    prio = {s: i for i, s in enumerate(word_cands)}

    def add(piece: str) -> None:
        if piece in have:
            return
        while len(tokens) < n_regular:
            parts = _bpe(piece, ranks)
            if len(parts) == 1:
                return
            if len(parts) == 2:
                add_merge(parts[0], parts[1])
                return
            # Needs an intermediate token first: the best-ranked adjacent pair.
            i = min(range(len(parts) - 1), key=lambda k: (prio.get(parts[k] + parts[k + 1], 1 << 30), k))
            add_merge(parts[i], parts[i + 1])

    def stream():
        # Interleave the streams so that small vocabularies get a bit of everything.
        punct, nums = iter(_PUNCT_PIECES), iter(_number_pieces())
        for k, w in enumerate(word_cands):
            yield w
            if k % 20 == 0:
                yield next(punct, None)
            if k % 40 == 0:
                yield next(nums, None)
        yield from punct
        yield from nums
        yield from _pseudo_words()

    for piece in stream():
        if len(tokens) >= n_regular:
            break
        if piece:
            add(_to_symbols(piece) if not piece.startswith((SPACE, NEWLINE, TAB)) and piece.isascii() else piece)
    if len(tokens) < n_regular:
        raise RuntimeError(f"could only construct {len(tokens)} tokens, wanted {n_regular}")
    return tokens, merges


@lru_cache(maxsize=1)
def base_bpe() -> tuple[list[str], list[tuple[str, str]]]:
    """The full-size base BPE, from the disk cache when present."""
    path = tokenizer_cache_dir() / "base-bpe.json"
    try:
        data = json.loads(path.read_text())
        # A cache written when MAX_REGULAR was smaller is a prefix: rebuild it at full size.
        if len(data["tokens"]) >= MAX_REGULAR:
            return data["tokens"][:MAX_REGULAR], [tuple(m) for m in data["merges"][: MAX_REGULAR - 256]]
    except (OSError, ValueError, KeyError):
        pass
    tokens, merges = build_base_bpe()
    _atomic_write(path, json.dumps({"tokens": tokens, "merges": merges}, ensure_ascii=False))
    return tokens, merges


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------
# Per-model tokenizer files
# ---------------------------------------------------------------------------------------


def build_tokenizer_json(
    vocab_size: int,
    specials: dict[int, str],
    *,
    non_special: frozenset[str] = frozenset(),
    bos_token: str | None = None,
) -> str:
    """Returns a tokenizer.json (as text) with exactly ``vocab_size`` ids: ``specials`` at
    their ids, regular BPE tokens filling every other id from 0 up (specials must sit at
    the start or the end of the id range)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    low = sorted(i for i in specials if i < len(specials) and all(j in specials for j in range(i + 1)))
    n_low = len(low)
    n_regular = vocab_size - len(specials)
    if sorted(specials) != list(range(n_low)) + list(range(n_low + n_regular, vocab_size)):
        raise ValueError("special token ids must form a prefix and/or a suffix of the id range")
    if n_regular > MAX_REGULAR:
        raise ValueError(f"vocab_size {vocab_size} needs {n_regular} regular tokens; the builder makes at most {MAX_REGULAR}")
    tokens, merges = base_bpe()
    vocab = {specials[i]: i for i in low}
    vocab.update((t, n_low + i) for i, t in enumerate(tokens[:n_regular]))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges[: n_regular - 256]), fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    added = [AddedToken(specials[i], special=specials[i] not in non_special, normalized=False) for i in sorted(specials)]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    # add_tokens/add_special_tokens append in call order; the ids must match the real ones.
    got = {tok.token_to_id(s): s for s in specials.values()}
    if got != specials:
        # Re-add in id order when special and non-special tokens interleave.
        tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges[: n_regular - 256]), fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        for a in added:
            (tok.add_special_tokens if a.special else tok.add_tokens)([a])
        got = {tok.token_to_id(s): s for s in specials.values()}
        if got != specials:
            raise RuntimeError("special token ids came out wrong")
    if bos_token is not None:
        bos_id = tok.token_to_id(bos_token)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token}:0 $A:0",
            pair=f"{bos_token}:0 $A:0 {bos_token}:1 $B:1",
            special_tokens=[(bos_token, bos_id)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if tok.get_vocab_size(with_added_tokens=True) != vocab_size:
        raise RuntimeError(f"built {tok.get_vocab_size(with_added_tokens=True)} tokens, wanted {vocab_size}")
    return tok.to_str(pretty=False)
