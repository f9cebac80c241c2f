"""Gemma chat formats, following the chat templates of google/gemma-3 instruct models (the system
prompt opens the first user turn, content is trimmed) and google/gemma-2 ones (no system prompt)."""

from __future__ import annotations

from collections.abc import Sequence

from crucible.train.renderers.base import Message, RenderedMessage, Renderer


class GemmaRenderer(Renderer):
    name = "gemma"
    bos_text = "<bos>"
    special_tokens = ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")
    stop_strings = ("<end_of_turn>",)

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        if tools:
            raise ValueError("gemma renderer: Gemma's template has no tool definitions")
        message, role = messages[index], messages[index]["role"]
        has_system = messages[0]["role"] == "system"
        if role == "system":
            if index != 0:
                raise ValueError(f"gemma renderer: system message {index} is not the first message")
            return RenderedMessage("", "", "")
        turn = index - 1 if has_system else index
        if role not in ("user", "assistant") or (role == "user") != (turn % 2 == 0):
            raise ValueError(
                f"gemma renderer: message {index} has role {role!r}; Gemma needs user and "
                "assistant turns alternating, starting with user"
            )
        content = message.get("content", "").strip()
        if turn == 0 and has_system:
            content = messages[0].get("content", "") + "\n\n" + content
        lead = "\n" if turn > 0 else ""
        speaker = "model" if role == "assistant" else "user"
        return RenderedMessage(f"{lead}<start_of_turn>{speaker}\n", content, "<end_of_turn>")

    def generation_prompt(
        self, messages: Sequence[Message], tools: Sequence[dict] | None = None
    ) -> str:
        return self.closing(messages) + "<start_of_turn>model\n"

    def closing(self, messages: Sequence[Message]) -> str:
        return "\n" if any(m["role"] != "system" for m in messages) else ""

    def parse_assistant_text(self, text: str) -> Message:
        return {"role": "assistant", "content": text.strip()}


class Gemma2Renderer(GemmaRenderer):
    """Gemma 2 (google/gemma-2-*-it): the same turns as Gemma 3, but its template refuses a system
    message instead of folding it into the first user turn."""

    name = "gemma2"

    def render_message(
        self, messages: Sequence[Message], index: int, tools: Sequence[dict] | None = None
    ) -> RenderedMessage:
        if messages[index]["role"] == "system":
            raise ValueError(
                f"gemma2 renderer: message {index} is a system message, which Gemma 2's chat template refuses "
                "('System role not supported'); put the instructions into the first user turn, or use the "
                "gemma renderer (Gemma 3 folds a system prompt into the first user turn)")
        return super().render_message(messages, index, tools)
