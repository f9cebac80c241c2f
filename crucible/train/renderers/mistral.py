"""Mistral chat formats as mistral-common encodes them: Tekken (``mistral``, e.g. Mistral Nemo) and
the SentencePiece v3 (``mistral_v3``, e.g. Mistral 7B Instruct v0.3) and v7 (``mistral_v7``, e.g.
Mistral Large 2411) instruct tokenizers.

v3 and Tekken put the system prompt into the last user turn and list tools just before it; v7
writes each system prompt in place between ``[SYSTEM_PROMPT]`` markers. SentencePiece formats
write a space after each control marker (``[INST] Hi[/INST] Hello!</s>``), as their Hugging Face
chat templates do: a SentencePiece tokenizer turns it into the word-start ``▁`` that
mistral-common's encoder produces, so text and tokens both match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from crucible.train.renderers.base import (
    Message,
    RenderedMessage,
    Renderer,
    arguments_as_dict,
    tool_function,
)


def _last_user_index(messages: Sequence[Message]) -> int:
    return max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)


class MistralRenderer(Renderer):
    """Tekken: the assistant header is empty, an assistant turn is its content and `</s>`."""

    name = "mistral"
    bos_text = "<s>"
    special_tokens = (
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_CALLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
    )
    stop_strings = ("</s>",)
    # What follows a control marker before text: a space for SentencePiece tokenizers.
    gap: str = ""
    # v7 writes system prompts in place instead of folding them into the last user turn.
    system_in_place: bool = False

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        message, role = messages[index], messages[index]["role"]
        content = message.get("content", "")
        gap = self.gap
        if role == "system":
            if self.system_in_place:
                return RenderedMessage("[SYSTEM_PROMPT]" + gap, content, "[/SYSTEM_PROMPT]")
            if _last_user_index(messages) < 0:
                raise ValueError(f"{self.name} renderer: a system prompt needs a user message to join")
            return RenderedMessage("", "", "")
        if role == "user":
            prefix = "[INST]" + gap
            if index == _last_user_index(messages):
                if not self.system_in_place:
                    system = "\n\n".join(m.get("content", "") for m in messages if m["role"] == "system")
                    content = f"{system}\n\n{content}" if system else content
                if tools:
                    listing = [{"type": "function", "function": tool_function(t)} for t in tools]
                    prefix = f"[AVAILABLE_TOOLS]{gap}{json.dumps(listing)}[/AVAILABLE_TOOLS]{prefix}"
            return RenderedMessage(prefix, content, "[/INST]")
        if role == "tool":
            return RenderedMessage("[TOOL_RESULTS]" + gap, self.tool_result(message), "[/TOOL_RESULTS]")
        calls = message.get("tool_calls", [])
        if calls:
            listed = []
            for call in calls:
                entry = {"name": call["name"], "arguments": arguments_as_dict(call)}
                if call.get("id"):
                    entry["id"] = call["id"]
                listed.append(entry)
            content = (gap + content if content else "") + "[TOOL_CALLS]" + gap + json.dumps(listed)
        elif content:
            content = gap + content
        return RenderedMessage("", content, "</s>")

    def tool_result(self, message: Message) -> str:
        return json.dumps({"content": message.get("content", ""), "call_id": message.get("tool_call_id", "")})

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return ""

    def parse_assistant_text(self, text: str) -> Message:
        content, _, calls_text = text.partition("[TOOL_CALLS]")
        # SentencePiece decoding may keep the word-start space of the first piece.
        message: Message = {"role": "assistant", "content": content.removeprefix(self.gap) if self.gap else content}
        if calls_text:
            message["tool_calls"] = [
                {key: call[key] for key in ("name", "arguments", "id") if key in call}
                for call in json.loads(calls_text)
            ]
        return message


class MistralV3Renderer(MistralRenderer):
    """SentencePiece v3 (Mistral 7B Instruct v0.3, Mixtral 8x22B Instruct)."""

    name = "mistral_v3"
    gap = " "


class MistralV7Renderer(MistralRenderer):
    """SentencePiece v7 (Mistral Large 2411): system prompts in place, tool results as
    ``[TOOL_RESULTS] <call id>[TOOL_CONTENT] <content>[/TOOL_RESULTS]``."""

    name = "mistral_v7"
    gap = " "
    system_in_place = True
    special_tokens = (*MistralRenderer.special_tokens, "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")

    def tool_result(self, message: Message) -> str:
        return f"{message.get('tool_call_id', '')}[TOOL_CONTENT]{self.gap}{message.get('content', '')}"
