"""The inference engine on a tiny Llama: batching never changes greedy text, seeded sampling is
reproducible, stops cut text, log-likelihoods match a direct forward pass, LoRA loads merged."""

from __future__ import annotations

import json

import pytest
import torch

from crucible.inference import GenerationRequest, InferenceEngine, LoglikelihoodRequest
from crucible.train.config import TinyModelSpec
from crucible.train.models import IM_END, build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.renderers import get_renderer

SPEC = TinyModelSpec(family="llama", vocab_size=384, hidden_size=64, num_layers=2, num_heads=4,
                     max_position_embeddings=256)
CORPUS = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
          "Question: how many apples are left? Answer: 12 apples are left.", "the cat sat on the mat " * 5]
PROMPTS = ["Hi", "Question: how many clips did Natalia sell?", "the cat", "Answer: 12 apples are left and",
           "In May she sold half as many clips as in April, so", "x", "the mat the cat the", "Natalia sold 48"]


def _sharpen(model) -> None:
    """A freshly initialised model is nearly uniform; larger output weights make greedy choices
    far from ties, so a difference between runs means a real bug, not rounding."""
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(CORPUS * 4, vocab_size=SPEC.vocab_size)


@pytest.fixture(scope="module")
def engine(tokenizer):
    torch.manual_seed(0)
    model = build_tiny_causal_lm(SPEC, tokenizer, seed=1)
    _sharpen(model)
    return InferenceEngine(model, tokenizer, batch_size=8, renderer=get_renderer("chatml"))


def test_batched_greedy_equals_one_at_a_time_and_hf_generate(engine):
    requests = [GenerationRequest(prompt=p, max_new_tokens=12) for p in PROMPTS]
    batched = engine.generate(requests, batch_size=8)
    alone = [engine.generate([r], batch_size=1)[0] for r in requests]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in alone]
    assert len({g.text for g in batched}) > 4  # the prompts lead to different completions
    for prompt, generation in zip(PROMPTS, alone, strict=True):
        ids = engine.tokenizer.encode(prompt)
        output = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                       max_new_tokens=12, do_sample=False,
                                       eos_token_id=engine.tokenizer.eos_token_id,
                                       pad_token_id=engine.tokenizer.pad_token_id)
        completion = output[0, len(ids):].tolist()
        if completion[-1] == engine.tokenizer.eos_token_id:
            completion = completion[:-1]
        assert generation.text == engine.tokenizer.decode(completion, skip_special_tokens=True)
        assert generation.prompt_tokens == len(ids)


def test_seeded_sampling_is_reproducible_in_any_batch_and_differs_across_seeds(engine):
    def sample(seed: int) -> GenerationRequest:
        return GenerationRequest(prompt="the cat", max_new_tokens=16, temperature=1.5, top_p=0.95, seed=seed)

    greedy_neighbours = [GenerationRequest(prompt=p, max_new_tokens=16) for p in PROMPTS[:5]]
    alone = {seed: engine.generate([sample(seed)])[0].text for seed in (7, 8, 9)}
    in_batch = engine.generate([*greedy_neighbours, sample(7), sample(8)])
    assert (in_batch[5].text, in_batch[6].text) == (alone[7], alone[8])
    assert engine.generate([sample(7)])[0].text == alone[7]
    assert len(set(alone.values())) == 3
    # Greedy rows do not shift when sampled rows share their batch.
    assert [g.text for g in in_batch[:5]] == [g.text for g in engine.generate(greedy_neighbours)]


def test_stop_strings_cut_the_text_and_set_the_finish_reason(engine):
    free = engine.generate([GenerationRequest(prompt="Question:", max_new_tokens=20)])[0]
    assert free.finish_reason == "length" and free.completion_tokens == 20
    stop = free.text[5:8]
    cut = engine.generate([GenerationRequest(prompt="Question:", max_new_tokens=20, stop=(stop,))])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[:free.text.index(stop)]
    assert stop not in cut.text and cut.completion_tokens < 20


def test_chat_stops_on_the_renderers_end_of_turn_token(tokenizer):
    model = build_tiny_causal_lm(SPEC, tokenizer, seed=1)
    with torch.no_grad():  # make <|im_end|> the model's favourite token after any input
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(IM_END)] = model.model.norm.weight * 5.0
    engine = InferenceEngine(model, tokenizer, renderer=get_renderer("chatml"))
    chat = engine.generate([GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_new_tokens=5)])[0]
    assert (chat.text, chat.finish_reason, chat.completion_tokens) == ("", "stop", 1)
    assert chat.prompt_tokens == len(tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                                   add_generation_prompt=True)["input_ids"])
    # A raw prompt has no chat format, so only end-of-sequence and its own stops end it.
    raw = engine.generate([GenerationRequest(prompt="hi", max_new_tokens=5)])[0]
    assert (raw.finish_reason, raw.completion_tokens) == ("length", 5)
    assert [g.finish_reason for g in engine.chat(["hi", "the cat sat"], system="Be brief.")] == ["stop", "stop"]


def test_loglikelihood_equals_a_direct_forward_pass(engine):
    requests = [LoglikelihoodRequest(c, x) for c, x in [
        ("Question: how many apples?\nAnswer:", " A"), ("Question: how many apples?\nAnswer:", " B"),
        ("Question: how many apples?\nAnswer:", " 12 apples are left."), ("the cat sat on the ", "mat"),
        ("", "the cat sat"), ("x", " y z"), ("Natalia sold clips to 48 of her friends", " in April")]]
    scored = engine.loglikelihood(requests, batch_size=3)
    tokenizer = engine.tokenizer
    for request, result in zip(requests, scored, strict=True):
        context, continuation = request.context, request.continuation
        if not context:
            ids, n_context = [tokenizer.bos_token_id, *tokenizer.encode(continuation)], 1
        else:
            trimmed = context.rstrip()  # the harness moves trailing spaces into the continuation
            ids, n_context = tokenizer.encode(context + continuation), len(tokenizer.encode(trimmed))
        with torch.no_grad():
            logprobs = torch.log_softmax(engine.model(torch.tensor([ids])).logits[0], dim=-1)
        targets = ids[n_context:]
        picked = logprobs[n_context - 1:-1].gather(1, torch.tensor(targets).unsqueeze(1))
        assert result.num_tokens == len(targets)
        assert result.logprob == pytest.approx(float(picked.sum()), abs=1e-5)
        assert result.is_greedy == bool((logprobs[n_context - 1:-1].argmax(-1) == torch.tensor(targets)).all())
    one_at_a_time = engine.loglikelihood(requests, batch_size=1)
    assert max(abs(a.logprob - b.logprob) for a, b in zip(one_at_a_time, scored, strict=True)) <= 1e-5
    with pytest.raises(ValueError, match="request 0: continuation ''"):
        engine.loglikelihood([LoglikelihoodRequest("the cat", "")])


def test_lora_adapter_loads_merged_and_generates_as_its_merged_model(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    base = build_tiny_causal_lm(SPEC, tokenizer, seed=1)
    _sharpen(base)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter: B is no longer zero
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    lora.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    lora.save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]

    requests = [GenerationRequest(prompt=p, max_new_tokens=10) for p in PROMPTS]
    from_adapter = InferenceEngine.from_checkpoint(tmp_path / "adapter").generate(requests)
    from_merged = InferenceEngine.from_checkpoint(tmp_path / "merged").generate(requests)
    from_base = InferenceEngine.from_checkpoint(tmp_path / "base").generate(requests)
    assert [g.text for g in from_adapter] == [g.text for g in from_merged]
    assert [g.text for g in from_adapter] != [g.text for g in from_base]


def test_checkpoint_uses_the_renderer_its_run_recorded(tmp_path, tokenizer):
    run = tmp_path / "run"
    folder = run / "train" / "final"
    build_tiny_causal_lm(SPEC, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert InferenceEngine.from_checkpoint(folder).renderer is None  # nothing recorded: the chat template
    (run / "recipe.yaml").write_text("renderer: role_colon\nbase_model: {tiny: {}}\n")
    assert InferenceEngine.from_checkpoint(folder).renderer.name == "role_colon"
    (run / "recipe.yaml").write_text("renderer: auto\nbase_model: {tiny: {}}\n")
    assert InferenceEngine.from_checkpoint(folder).renderer.name == "chatml"
    with pytest.raises(FileNotFoundError, match="config.json"):
        InferenceEngine.from_checkpoint(tmp_path / "nothing")
