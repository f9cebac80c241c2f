"""Qwen 3 chat format: ChatML plus `<think>` blocks. Thinking is kept only on assistant turns
after the last user query; earlier turns lose it, as in Qwen 3's own template."""

from __future__ import annotations

import re
from collections.abc import Sequence

from crucible.train.renderers.base import Message
from crucible.train.renderers.chatml import ChatMLRenderer

_EMPTY_THINK = "<think>\n\n</think>\n\n"
_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*", re.DOTALL)


def split_thinking(message: Message) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message, from `thinking` or a `</think>` in content."""
    content = message.get("content", "")
    if message.get("thinking") is not None:
        return message["thinking"], content
    if "</think>" in content:
        before, after = content.split("</think>")[0], content.split("</think>")[-1]
        return before.rstrip("\n").split("<think>")[-1].lstrip("\n"), after.lstrip("\n")
    return "", content


def _is_tool_response(message: Message) -> bool:
    content = message.get("content", "")
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


class Qwen3Renderer(ChatMLRenderer):
    """`enable_thinking=False` is Qwen 3's no-think mode: the generation prompt carries an empty
    think block, so in training that block is part of the (untrained) header."""

    name = "qwen3"
    special_tokens = ChatMLRenderer.special_tokens + ("<think>", "</think>")

    def __init__(self, enable_thinking: bool = True):
        super().__init__(default_system_prompt=None)
        self.enable_thinking = enable_thinking

    def _last_query_index(self, messages: Sequence[Message]) -> int:
        for index in range(len(messages) - 1, -1, -1):
            if messages[index]["role"] == "user" and not _is_tool_response(messages[index]):
                return index
        return len(messages) - 1

    def assistant_content(self, messages: Sequence[Message], index: int) -> tuple[str, str]:
        reasoning, answer = split_thinking(messages[index])
        is_last = index == len(messages) - 1
        if index > self._last_query_index(messages) and (is_last or reasoning):
            reasoning = reasoning.strip("\n")
            if not reasoning and not self.enable_thinking:
                return _EMPTY_THINK, answer.lstrip("\n")
            return "", f"<think>\n{reasoning}\n</think>\n\n{answer.lstrip(chr(10))}"
        return "", answer

    def generation_prompt(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        prompt = super().generation_prompt(messages, tools)
        return prompt if self.enable_thinking else prompt + _EMPTY_THINK

    def parse_assistant_text(self, text: str) -> Message:
        thinking = None
        match = _THINK.match(text)
        if match:
            thinking, text = match.group(1).strip("\n"), text[match.end() :]
        message = super().parse_assistant_text(text)
        if thinking:
            message["thinking"] = thinking
        return message
