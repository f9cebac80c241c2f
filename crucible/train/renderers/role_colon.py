"""Plain `User:` / `Assistant:` transcript for base models that have no chat template."""

from __future__ import annotations

from collections.abc import Sequence

from crucible.train.renderers.base import Message, RenderedMessage, Renderer


class RoleColonRenderer(Renderer):
    """Each turn is `Role: content` followed by a blank line; the blank line is the end-of-turn
    marker, and generation stops when the model starts the next user turn."""

    name = "role_colon"
    stop_strings = ("\n\nUser:",)

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        if tools:
            raise ValueError("role_colon renderer: base-model transcripts have no tool definitions")
        message = messages[index]
        role = message["role"].capitalize()
        return RenderedMessage(f"{role}:", " " + message.get("content", ""), "\n\n")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return "Assistant:"

    def parse_assistant_text(self, text: str) -> Message:
        return {"role": "assistant", "content": text.strip()}
