"""The bundled model's conversion writes the same, correct tokenizer files whatever transformers runs it.

SGLang's grammar backend (xgrammar, ``sglang/srt/constrained/xgrammar_backend.py``) builds its
``TokenizerInfo.from_huggingface`` from the tokenizer the Engine loads from these files. xgrammar 0.2.1 (the GPU
bundle's) reads the vocabulary type from the serialized tokenizer's decoder alone
(``TokenizerInfo._detect_metadata_from_hf``); the files transformers 5.12.1 wrote made it a byte-fallback
vocabulary, and every token with a leading space ("Ġ...") was masked. The recorded 5.12.1 output is
``tests/fixtures/tokenizer-transformers-5.12.1.json`` (vocabulary and merges left out: they were the same).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from sgnb.core.models import (
    CACHE_ENV,
    CONVERSION_FORMAT,
    MARKER,
    bundled_model_dir,
    normalize_tokenizer_files,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tokenizer-transformers-5.12.1.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# HuggingFaceTB/SmolLM2-135M-Instruct's own tokenizer: byte-level BPE; the GGUF's tokenizer.ggml.eos_token_id 2.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
EOS, EOS_ID = "<|im_end|>", 2


@pytest.fixture(scope="module")
def bundled() -> Path:
    return bundled_model_dir()


def old_converter_files(bundled: Path, out: Path) -> Path:
    """``out`` with the tokenizer files transformers 5.12.1 wrote for the bundled GGUF (and the rest)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json", "chat_template.jinja"):
        shutil.copy(bundled / name, out / name)
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    good = json.loads((bundled / "tokenizer.json").read_text(encoding="utf-8"))
    tok = dict(recorded["tokenizer.json"], added_tokens=good["added_tokens"])
    tok["model"] = {**tok["model"], "vocab": good["model"]["vocab"], "merges": good["model"]["merges"]}
    (out / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps(recorded["tokenizer_config.json"]), encoding="utf-8"
    )
    return out


def vocab_types(folder: Path) -> tuple[Any, Any, Any]:
    """(xgrammar's vocab type, the type read from the serialized tokenizer alone, the tokenizer)."""
    from transformers import AutoTokenizer
    from xgrammar import TokenizerInfo

    tok = AutoTokenizer.from_pretrained(folder)
    info = TokenizerInfo.from_huggingface(tok)
    from_decoder = TokenizerInfo._detect_metadata_from_hf(tok.backend_tokenizer.to_str())["vocab_type"]
    return info.vocab_type, from_decoder, tok


def space_first_token_allowed(folder: Path, vocab_type: Any) -> bool:
    """Does a grammar that must start with a space allow " 12"'s first token (as 03-sglang-programs asks)?"""
    from transformers import AutoTokenizer
    from xgrammar import GrammarCompiler, GrammarMatcher, TokenizerInfo, allocate_token_bitmask

    tok = AutoTokenizer.from_pretrained(folder)
    vocab = tok.get_vocab()
    encoded = [""] * len(vocab)
    for piece, i in vocab.items():
        encoded[i] = piece
    info = TokenizerInfo(encoded, vocab_type=vocab_type, stop_token_ids=[tok.eos_token_id])
    matcher = GrammarMatcher(GrammarCompiler(info).compile_regex(r" [0-9]+ [-+*/] [0-9]+"))
    mask = allocate_token_bitmask(1, info.vocab_size)
    matcher.fill_next_token_bitmask(mask)
    first = tok.encode(" 12", add_special_tokens=False)[0]
    return bool((int(mask[0, first // 32]) >> (first % 32)) & 1)  # one bit per token, 32 to an int32


def test_bundled_tokenizer_is_plain_byte_level_with_eos_im_end(bundled: Path) -> None:
    from xgrammar import VocabType

    tok_json = json.loads((bundled / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((bundled / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tok_json["decoder"] == BYTE_LEVEL
    assert tok_json["pre_tokenizer"]["type"] == "ByteLevel" and tok_json["normalizer"] is None
    assert tok_json["model"]["byte_fallback"] is False
    assert config["eos_token"] == EOS and config["pad_token"] == EOS and config["bos_token"] == "<|im_start|>"
    assert not {"eos_token_id", "bos_token_id"} & config.keys()  # no ids that can contradict the names
    for name in ("config.json", "generation_config.json"):
        assert json.loads((bundled / name).read_text())["eos_token_id"] == EOS_ID
    assert json.loads((bundled / MARKER).read_text())["format"] == CONVERSION_FORMAT

    detected, from_decoder, tok = vocab_types(bundled)
    assert detected == VocabType.BYTE_LEVEL and from_decoder == VocabType.BYTE_LEVEL
    assert tok.eos_token == EOS and tok.eos_token_id == EOS_ID
    assert tok.decode(tok.encode(" The capital of France is Paris.")) == " The capital of France is Paris."
    assert space_first_token_allowed(bundled, from_decoder)


def test_the_old_converters_files_are_rewritten_to_the_same_files(bundled: Path, tmp_path: Path) -> None:
    from xgrammar import VocabType

    old = old_converter_files(bundled, tmp_path / "old")
    _, from_decoder, tok = vocab_types(old)
    # The fault as the GPU saw it: a byte-fallback reading, eos <|im_start|>, " 12" masked.
    assert from_decoder == VocabType.BYTE_FALLBACK and tok.eos_token == "<|im_start|>"
    assert not space_first_token_allowed(old, from_decoder)

    normalize_tokenizer_files(old)
    for name in TOKENIZER_FILES:
        assert (old / name).read_bytes() == (bundled / name).read_bytes(), name
    detected, from_decoder, tok = vocab_types(old)
    assert detected == from_decoder == VocabType.BYTE_LEVEL and tok.eos_token_id == EOS_ID
    assert space_first_token_allowed(old, from_decoder)


def test_a_cached_copy_from_an_older_sgnb_is_repaired_in_place(
    bundled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "models" / "smollm2-135m-instruct"
    old_converter_files(bundled, target)
    os.symlink(bundled / "model.safetensors", target / "model.safetensors")  # no reconversion wanted
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))

    assert bundled_model_dir() == target
    assert (target / "model.safetensors").is_symlink()  # repaired, not converted again
    for name in TOKENIZER_FILES:
        assert (target / name).read_bytes() == (bundled / name).read_bytes(), name
    assert json.loads((target / MARKER).read_text())["format"] == CONVERSION_FORMAT


def test_normalize_refuses_a_vocabulary_that_is_not_byte_level(bundled: Path, tmp_path: Path) -> None:
    old = old_converter_files(bundled, tmp_path / "bf")
    tok = json.loads((old / "tokenizer.json").read_text(encoding="utf-8"))
    tok["model"]["vocab"] = {f"<0x{b:02X}>": b for b in range(256)}
    (old / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    with pytest.raises(ValueError, match="not a byte-level BPE vocabulary"):
        normalize_tokenizer_files(old)
