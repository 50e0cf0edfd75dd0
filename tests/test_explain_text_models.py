"""Text explanations beyond the recipe's BERT: DistilBERT and RoBERTa classifiers, sdpa-built models,
and the one tokenisation serving and explain share (the bundle's ``lowercase`` included)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from explain.engine import BundleExplainer
from lumenserve.assets import minilm_dir
from lumenserve.bundle import Bundle, TextPreprocessing
from lumenserve.bundle.text import tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def tiny(kind: str, vocab: int, attn: str = "eager") -> torch.nn.Module:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    if kind == "distilbert":
        config: Any = DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=2)
        model: Any = DistilBertForSequenceClassification._from_config(config, attn_implementation=attn)
    elif kind == "roberta":
        config = RobertaConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=130, pad_token_id=0, num_labels=2,
        )  # fmt: skip
        model = RobertaForSequenceClassification._from_config(config, attn_implementation=attn)
    else:
        config = BertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128, num_labels=2,
        )  # fmt: skip
        model = BertForSequenceClassification._from_config(config, attn_implementation=attn)
    return model.eval()  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["distilbert", "roberta"])
def test_token_attributions_and_attention_for_other_hf_classifiers(
    kind: str, text_bundle: Bundle, tokenizer: Any
) -> None:
    explainer = BundleExplainer(text_bundle, eager_model=tiny(kind, tokenizer.vocab_size))
    assert explainer.methods == ["attention", "integrated_gradients", "layer_integrated_gradients", "occlusion"]
    x = explainer.encode_texts(["a truly wonderful film", "dull and long"])
    result = explainer.explain(x, targets=[1, 0], params={"n_steps": 64, "aopc": True})
    ids, mask = torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])
    model = explainer.model
    baseline = torch.where(model.special_mask(ids), ids, torch.full_like(ids, model.pad_id))  # type: ignore[operator, arg-type]
    with torch.no_grad():
        gap = model(ids, mask)[[0, 1], [1, 0]] - model(baseline, mask)[[0, 1], [1, 0]]  # (batch,)
    for i, item in enumerate(result.items):
        assert item.tokens is not None and item.tokens[0] == "[CLS]"
        assert item.convergence_delta is not None and abs(item.convergence_delta) < 1e-2
        assert float(item.attributions.sum()) - float(gap[i]) == pytest.approx(item.convergence_delta, abs=1e-4)
        assert {"deletion_auc", "comprehensiveness", "sufficiency"} == set(item.scores)
    attention = explainer.explain(x, method="attention")
    short = attention.items[1]
    assert short.tokens is not None and {"attention_grid_png", "rollout_png"} <= set(short.pngs)
    assert float(short.attributions.sum()) == pytest.approx(1.0, abs=1e-4)  # the [CLS] row of the rollout


def test_an_sdpa_built_model_is_switched_to_eager_for_attention(text_bundle: Bundle, tokenizer: Any) -> None:
    model = tiny("bert", tokenizer.vocab_size, attn="sdpa")
    explainer = BundleExplainer(text_bundle, eager_model=model)
    x = explainer.encode_texts(["attention please"])
    with torch.no_grad():
        before = explainer.model(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"]))
    result = explainer.explain(x, method="attention")
    assert model.config._attn_implementation == "eager"
    assert np.allclose(result.items[0].logits, before[0].numpy(), atol=1e-5)  # the same model, other kernel


def test_explain_tokenises_like_the_server_honouring_lowercase(text_bundle: Bundle) -> None:
    from transformers import AutoTokenizer

    cased = AutoTokenizer.from_pretrained(minilm_dir(), do_lower_case=False)  # "Hello" is unknown to it
    pre = TextPreprocessing(tokenizer_dir="tokenizer", max_length=6, lowercase=True)
    as_is = pre.model_copy(update={"lowercase": False})
    lowered = tokenize(cased, pre, ["Hello World", "HELLO world and more words than fit"])
    assert lowered["input_ids"].dtype == np.int64 and lowered["input_ids"].shape == (2, 6)  # padded, truncated
    assert lowered["input_ids"][0, :4].tolist() == tokenize(cased, as_is, ["hello world"])["input_ids"][0].tolist()
    assert cased.unk_token_id in tokenize(cased, as_is, ["Hello World"])["input_ids"][0]
    explainer = BundleExplainer(text_bundle)
    explainer.tokenizer, explainer.text_pre = cased, pre  # a bundle whose tokenizer keeps case, lowercase=True
    assert np.array_equal(explainer.encode_texts(["Hello World"])["input_ids"], lowered["input_ids"][:1, :4])


def test_the_server_codec_uses_the_same_tokenisation(text_bundle: Bundle) -> None:
    from serving.codecs.text import TextCodec

    pre = text_bundle.manifest.preprocessing
    assert isinstance(pre, TextPreprocessing)
    explainer = BundleExplainer(text_bundle)
    codec = TextCodec(explainer.tokenizer, pre, max_chars=100)
    texts = ["Some Text", "another one, longer than the first"]
    served = codec([t.encode() for t in texts])
    explained = explainer.encode_texts(texts)
    assert served.keys() == explained.keys()
    assert all(np.array_equal(served[k], explained[k]) for k in served)


def test_token_occlusion_of_a_bag_of_words_is_each_tokens_own_weight() -> None:
    from explain.explanation import TextInputs
    from explain.methods.token_occlusion import TokenOcclusion
    from tests.bag_of_words import bag_of_words

    model = bag_of_words()
    ids = torch.tensor([[1, 5, 9, 12, 2, 0], [1, 7, 7, 2, 0, 0]])  # (batch, seq) with padding
    mask = (ids != 0).long()
    explanation = TokenOcclusion(model).explain(TextInputs(ids, mask), [1, 0], perturbations_per_eval=2)
    table = model.hf.table.detach()  # (vocab, classes)
    expected = table[ids, torch.tensor([1, 0])[:, None]] * mask  # replacing a token by PAD removes its row
    expected[:, 0] = 0.0  # [CLS] and [SEP] are never replaced
    expected[0, 4] = expected[1, 3] = 0.0
    assert torch.allclose(explanation.attributions, expected, atol=1e-6)
    assert explanation.params["perturbations_per_eval"] == 2
