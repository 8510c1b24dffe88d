"""The plugin's encoder reads "does this batch have padding?" once per forward (fairseq reads
it before every layer, a host sync each on a GPU) and computes exactly what fairseq's
TransformerEncoder computes."""

import pytest
import torch
from fairseq.models.transformer import TransformerEncoder
from peft_helpers import tiny_batch, tiny_model


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
