"""Chat renderers: one small class per chat format, turning conversations into the exact text
and tokens a model family was trained on, with per-token loss weights for supervised training.

    renderer = get_renderer("meta-llama/Llama-3.1-8B-Instruct")
    tokens, weights = build_supervised_example(renderer, tokenizer, messages)
"""

from __future__ import annotations

from typing import Any

from crucible.train.renderers.base import (
    Message,
    RenderedMessage,
    Renderer,
    ToolCall,
    TrainOn,
    build_supervised_example,
)
from crucible.train.renderers.chatml import ChatMLRenderer, SmolLM2Renderer
from crucible.train.renderers.deepseek_v3 import DeepSeekV3Renderer
from crucible.train.renderers.deepseek_v3_1 import DeepSeekV31Renderer
from crucible.train.renderers.gemma import Gemma2Renderer, GemmaRenderer
from crucible.train.renderers.gpt_oss import GptOssRenderer
from crucible.train.renderers.kimi_k2 import KimiK2Renderer
from crucible.train.renderers.llama3 import Llama3Renderer
from crucible.train.renderers.mistral import MistralRenderer, MistralV3Renderer, MistralV7Renderer
from crucible.train.renderers.qwen3 import Qwen3Renderer
from crucible.train.renderers.role_colon import RoleColonRenderer

RENDERERS: dict[str, type[Renderer]] = {
    cls.name: cls
    for cls in (
        Llama3Renderer,
        Qwen3Renderer,
        DeepSeekV3Renderer,
        DeepSeekV31Renderer,
        KimiK2Renderer,
        MistralRenderer,
        MistralV3Renderer,
        MistralV7Renderer,
        GemmaRenderer,
        Gemma2Renderer,
        GptOssRenderer,
        ChatMLRenderer,
        SmolLM2Renderer,
        RoleColonRenderer,
    )
}

# Substrings of lower-cased model names, checked in order; the first match wins.
_MODEL_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    ("gpt-oss", "gpt_oss"),
    ("kimi-k2", "kimi_k2"),
    ("deepseek-v3.1", "deepseek_v3_1"),
    ("deepseek-v3", "deepseek_v3"),
    ("qwen3", "qwen3"),
    ("qwen2", "chatml"),
    ("smollm", "smollm2"),
    ("llama-3", "llama3"),
    ("llama3", "llama3"),
    ("gemma-2", "gemma2"),
    ("gemma", "gemma"),
    # SentencePiece generations before Tekken: v3 (7B v0.3, Mixtral 8x22B) and v7 (Large 2411).
    ("mistral-7b-instruct-v0.3", "mistral_v3"),
    ("mixtral-8x22b-instruct", "mistral_v3"),
    ("mistral-large-instruct-2411", "mistral_v7"),
    ("mistral", "mistral"),
    ("mixtral", "mistral"),
)


def renderer_name_for(model_or_renderer: str) -> str:
    """The renderer name for a renderer name or a model name such as 'Qwen/Qwen3-8B'."""
    if model_or_renderer in RENDERERS or model_or_renderer == "qwen3_disable_thinking":
        return model_or_renderer
    lowered = model_or_renderer.lower()
    for pattern, name in _MODEL_NAME_PATTERNS:
        if pattern in lowered:
            return name
    raise ValueError(
        f"no chat format known for {model_or_renderer!r}; pass a renderer name, one of "
        f"{sorted(RENDERERS) + ['qwen3_disable_thinking']} ('role_colon' suits base models)"
    )


def get_renderer(model_or_renderer: str, **options: Any) -> Renderer:
    """A renderer chosen by model name or renderer name; options go to its constructor
    (for example `enable_thinking=False` for qwen3, `thinking=True` for deepseek_v3_1,
    `current_date=...` for gpt_oss)."""
    name = renderer_name_for(model_or_renderer)
    if name == "qwen3_disable_thinking":
        return Qwen3Renderer(enable_thinking=False, **options)
    return RENDERERS[name](**options)


__all__ = [
    "RENDERERS",
    "ChatMLRenderer",
    "DeepSeekV31Renderer",
    "DeepSeekV3Renderer",
    "Gemma2Renderer",
    "GemmaRenderer",
    "GptOssRenderer",
    "KimiK2Renderer",
    "Llama3Renderer",
    "Message",
    "MistralRenderer",
    "MistralV3Renderer",
    "MistralV7Renderer",
    "Qwen3Renderer",
    "RenderedMessage",
    "Renderer",
    "RoleColonRenderer",
    "SmolLM2Renderer",
    "ToolCall",
    "TrainOn",
    "build_supervised_example",
    "get_renderer",
    "renderer_name_for",
]
