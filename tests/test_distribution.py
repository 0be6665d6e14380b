"""One probability distribution everywhere: over the tokenizer's 50,257 tokens, never the padding rows that make a
trained model's vocab_size 50,304. Each path is checked against transformers' GPT2LMHeadModel holding the same
weights cut to the 50,257 tokens (what export_hf.py writes and lm-eval's `hf` model scores), on a model whose
padding rows are random or made to win every argmax: if any path counted them, these tests would see it."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval_lm
import sample
from cheapgpt2.generate import generate
from cheapgpt2.hf import hf_state_dict
from cheapgpt2.model import GPT
from cheapgpt2.multiple_choice import score_batch
from cheapgpt2.quantize import quantize
from cheapgpt2.tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, get_encoding
from measure.bench_inference import quality_sums
from test_model import randomize_, small_config

transformers = pytest.importorskip("transformers")

PADDED = 50304
BLOCK_SIZE = 48


def padded_model(loud_padding=False):
    """A random GPT-2 with 50,304 rows. loud_padding: the padding rows' embeddings are the final hidden state's
    direction scaled up, so they would take nearly all the probability (and every argmax) if counted."""
    model = GPT(small_config(block_size=BLOCK_SIZE, vocab_size=PADDED, n_layer=2, n_head=2, n_embd=64)).eval()
    randomize_(model, seed=5)
    if loud_padding:
        with torch.no_grad():
            model.transformer.ln_f.weight.fill_(1.0)
            model.transformer.ln_f.bias.fill_(1.0)  # every final hidden state has a large component along ones
            model.transformer.wte.weight[GPT2_VOCAB_SIZE:] = 5.0
    return model


def transformers_twin(model):
    """transformers' GPT2LMHeadModel with the model's weights on the tokenizer's 50,257 tokens."""
    cfg = model.config
    hf_config = transformers.GPT2Config(vocab_size=GPT2_VOCAB_SIZE, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    missing, unexpected = hf_model.load_state_dict(hf_state_dict(model), strict=False)
    assert unexpected == [] and all(k.endswith(("attn.bias", "attn.masked_bias", "lm_head.weight")) for k in missing)
    return hf_model


def tokens(n, seed=0):
    return torch.randint(0, GPT2_VOCAB_SIZE, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("loud", [False, True], ids=["random_padding", "loud_padding"])
def test_the_models_log_probs_are_transformers_over_the_tokens(loud):
    model = padded_model(loud)
    idx = tokens(BLOCK_SIZE)
    head_out = []  # what the head computed for the padding rows, before they are set to -inf
    hook = model.lm_head.register_forward_hook(lambda module, args, out: head_out.append(out.clone()))
    with torch.no_grad():
        logits, _ = model(idx)
        theirs = F.log_softmax(transformers_twin(model)(idx).logits.float(), dim=-1)
    hook.remove()
    assert logits.shape[-1] == PADDED and torch.isneginf(logits[..., GPT2_VOCAB_SIZE:]).all()
    ours = F.log_softmax(logits.float(), dim=-1)
    torch.testing.assert_close(ours[..., :GPT2_VOCAB_SIZE], theirs, atol=1e-4, rtol=0)
    # the padding rows are not negligible here: counted, they would take this share of every position's probability
    padding_mass = F.softmax(head_out[0].float(), dim=-1)[..., GPT2_VOCAB_SIZE:].sum(-1)
    assert padding_mass.min() > (0.99 if loud else 3e-4)  # 3x the tolerance


def test_multiple_choice_and_eval_lm_score_as_transformers():
    model = padded_model()
    hf_model = transformers_twin(model)
    enc = get_encoding()
    context = enc.encode("Where would you put a cup after washing it?")
    choices = [enc.encode(" " + c) for c in ("cupboard", "garden", "the car engine")]

    def reference(continuation):
        idx = torch.tensor([context + continuation])
        with torch.no_grad():
            log_p = F.log_softmax(hf_model(idx).logits[0].float(), dim=-1)
        return sum(log_p[len(context) - 1 + i, t].item() for i, t in enumerate(continuation))

    expected = [reference(c) for c in choices]
    np.testing.assert_allclose(score_batch(model, [(context, choices)], torch.device("cpu"))[0], expected, atol=1e-4)
    lm = eval_lm.make_lm_class()(model, batch_size=2, device="cpu")
    served = lm._loglikelihood_tokens([(None, context, c) for c in choices])
    np.testing.assert_allclose([ll for ll, _ in served], expected, atol=1e-4)


def test_perplexity_and_kl_of_bench_inference_are_over_the_tokens():
    model = padded_model()
    idx = tokens(BLOCK_SIZE + 1, seed=1)
    inputs, targets = idx[:, :-1], idx[:, 1:]
    with torch.no_grad():
        logits = model(inputs)[0][0]
        reference_logits = transformers_twin(model)(inputs).logits[0]
    sums = quality_sums(logits, logits, targets[0])
    assert sums["kl"] == 0 and sums["top1"] == BLOCK_SIZE  # not nan: the padding rows' 0 * -inf is left out
    reference_loss = F.cross_entropy(reference_logits, targets[0], reduction="sum").item()
    assert sums["loss"] == pytest.approx(reference_loss, abs=1e-3)
    other = quality_sums(reference_logits, logits, targets[0])  # c/gpt's dump: the padding rows as computed
    assert other["kl"] == pytest.approx(0, abs=1e-5) and other["top1"] == BLOCK_SIZE


@pytest.mark.parametrize("scheme", ["none", "q8_0", "int8wo"])
@pytest.mark.parametrize("options", [dict(temperature=1.0), dict(temperature=2.0, top_k=60000),
                                     dict(temperature=1.5, top_k=3), dict(temperature=1.0, top_p=0.999),
                                     dict(temperature=0)], ids=["plain", "top_k_all", "top_k_3", "top_p", "greedy"])
def test_no_padding_id_is_ever_sampled(scheme, options):
    model = quantize(padded_model(loud_padding=True), scheme)
    torch.manual_seed(0)
    out = generate(model, torch.tensor([[EOT_TOKEN]]), max_new_tokens=24, **options)
    assert out.max().item() < GPT2_VOCAB_SIZE


def test_sample_py_prints_only_tokens_of_the_tokenizer(tmp_path, capsys):
    model = padded_model(loud_padding=True)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, path)
    argv = [str(path), "--prompt", "Once", "--max_new_tokens", "16", "--temperature", "1.5", "--seed", "1", "--device", "cpu"]
    assert sample.main(argv) == 0
    out, _ = capsys.readouterr()
    enc = get_encoding()
    torch.manual_seed(1)
    expected = generate(model, torch.tensor([[EOT_TOKEN] + enc.encode("Once")]), 16, temperature=1.5)
    assert expected.max().item() < GPT2_VOCAB_SIZE
    assert out == enc.decode(expected[0, 1:].tolist()) + "\n"
