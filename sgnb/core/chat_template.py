"""Teach SGLang's frontend (``sglang.lang``) SmolLM2's chat template.

``RuntimeEndpoint`` picks a chat template from ``/get_model_info``'s ``model_path`` through
``sglang.lang.chat_template``'s matching functions. SmolLM2 speaks ChatML with its own default
system prompt, which SGLang does not know (its only ChatML match is ``tinyllama``; any other
path falls back to ``default``, ``USER:``/``ASSISTANT:``). Registering a matcher for ``smollm``
makes ``RuntimeEndpoint`` render exactly what ``tokenizer.apply_chat_template`` renders.
"""

from __future__ import annotations

import re

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
_registered = False


def match_smollm(model_path: str) -> str | None:
    return "smollm2" if re.search(r"smollm", model_path, re.IGNORECASE) else None


def register() -> None:
    """Add the ``smollm2`` template and its matcher to SGLang's registries (idempotent)."""
    global _registered
    if _registered:
        return
    from sglang.lang import chat_template as ct

    if "smollm2" not in ct.chat_template_registry:
        ct.register_chat_template(
            ct.ChatTemplate(
                name="smollm2",
                default_system_prompt=SMOLLM2_SYSTEM,
                role_prefix_and_suffix={
                    "system": ("<|im_start|>system\n", "<|im_end|>\n"),
                    "user": ("<|im_start|>user\n", "<|im_end|>\n"),
                    "assistant": ("<|im_start|>assistant\n", "<|im_end|>\n"),
                },
                style=ct.ChatTemplateStyle.PLAIN,
                stop_str=("<|im_end|>",),
            )
        )
    if not any(getattr(f, "__name__", "") == "match_smollm" for f in ct.matching_function_registry):
        ct.register_chat_template_matching_function(match_smollm)
    _registered = True
