"""The plugin's encoder reads "does this batch have padding?" once per forward (fairseq reads
it before every layer, a host sync each on a GPU) and computes exactly what fairseq's
TransformerEncoder computes."""

import pytest
import torch
from conftest import tiny_batch, tiny_model
from fairseq.models.transformer import TransformerEncoder


def _host_reads(monkeypatch):
    """Count bool(tensor): the host reading a tensor's value (a sync on a GPU)."""
    reads = []
    original = torch.Tensor.__bool__

    def counted(self):
        reads.append(self.device.type)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counted)
    return reads


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
@pytest.mark.parametrize("kernel", ["sdpa", "fairseq"])
def test_the_padding_flag_is_read_once_per_forward_not_once_per_layer(monkeypatch, kernel,
                                                                     device):
    model = tiny_model("full", attention_kernel=kernel).eval().to(device)
    encoder = model.encoder.sentence_encoder
    assert len(encoder.layers) > 1
    reads = _host_reads(monkeypatch)
    encoder(tiny_batch().to(device))
    assert reads == [device]
    reads.clear()
    TransformerEncoder.forward_scriptable(encoder, tiny_batch().to(device))  # fairseq's own
    # what it replaces: one read per layer, after one of its CPU-side "is this XLA?" flag
    assert reads == ["cpu"] + [device] * len(encoder.layers)


@pytest.mark.parametrize("padded", [True, False])
def test_the_encoder_computes_what_fairseqs_forward_computes(padded):
    model = tiny_model("0:bitfit,1:lora(r=2,targets=q+v)")
    encoder = model.encoder.sentence_encoder
    tokens = tiny_batch() if padded else tiny_batch()[:1]  # example 0 has no padding
    for training in (False, True):  # dropout draws the same masks from the same seed
        model.train(training)
        torch.manual_seed(1)
        got = encoder(tokens, return_all_hiddens=True)
        torch.manual_seed(1)
        expected = TransformerEncoder.forward_scriptable(encoder, tokens, return_all_hiddens=True)
        assert got.keys() == expected.keys()
        for key in expected:
            assert len(got[key]) == len(expected[key]), key
            for a, b in zip(got[key], expected[key]):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)


def test_a_deep_copy_keeps_the_one_check_forward_on_the_copy():
    import copy

    model = tiny_model("full").eval()
    twin = copy.deepcopy(model)
    assert twin.encoder.sentence_encoder.forward_scriptable.__self__ is \
        twin.encoder.sentence_encoder
    torch.testing.assert_close(twin.encoder.sentence_encoder(tiny_batch())["encoder_out"][0],
                               model.encoder.sentence_encoder(tiny_batch())["encoder_out"][0])


@pytest.mark.parametrize("kernel", ["sdpa", "fairseq"])
def test_a_model_built_with_either_kernel_holds_fairseqs_weights_for_a_seed(kernel):
    """The plugin's encoder comes from fairseq's build_encoder/build_encoder_layer, and SDPA
    takes over after fairseq's initialisation: the same weights as fairseq's RoBERTa, and the
    random generator left where fairseq leaves it (a new head, dropout)."""
    from types import SimpleNamespace

    from fairseq.models.roberta import RobertaModel
    from conftest import tiny_args, tiny_dictionary

    from ehft_plugin.models.roberta_ehft import RobertaEhftModel

    task = SimpleNamespace(source_dictionary=tiny_dictionary(), max_positions=lambda: 64)
    torch.manual_seed(3)
    ours = RobertaEhftModel.build_model(tiny_args("full", attention_kernel=kernel), task)
    after_ours = torch.rand(4)
    torch.manual_seed(3)
    stock = RobertaModel.build_model(tiny_args("full"), task)
    after_stock = torch.rand(4)
    assert list(ours.state_dict()) == list(stock.state_dict())
    for name, value in stock.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    assert torch.equal(after_ours, after_stock)


def test_layer_norm_eps_reaches_every_layer_norm():
    model = tiny_model("full", layer_norm_eps=1e-12)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) >= 2 * len(model.encoder.sentence_encoder.layers) + 1
    assert {m.eps for m in norms} == {1e-12}
    assert {m.eps for m in tiny_model("full").modules()
            if isinstance(m, torch.nn.LayerNorm)} == {1e-5}
