"""--batch-order length (the default) batches inputs of similar length: the same examples once
per epoch as the random order, with far less padding; --batch-order random is fairseq's
sentence_prediction order."""

import pytest
from conftest import prepare_rte

from ehft_plugin.tasks.glue_ehft import GlueEhftConfig, GlueEhftTask

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("batching"), rows=300)


def _epoch(data, **settings):
    task = GlueEhftTask.setup_task(GlueEhftConfig(data=str(data), seed=1, **settings))
    dataset = task.load_dataset("train")
    batches = task.get_batch_iterator(dataset, max_sentences=16, seed=1).next_epoch_itr(
        shuffle=True)
    ids, real, padded = [], 0, 0
    for batch in batches:
        ids += batch["id"].tolist()
        real += batch["ntokens"]
        padded += batch["net_input"]["src_tokens"].numel()
    return ids, 1 - real / padded


def test_length_order_keeps_every_example_once_and_cuts_padding(data):
    random_ids, random_padding = _epoch(data, batch_order="random")
    length_ids, length_padding = _epoch(data, batch_order="length")
    assert sorted(length_ids) == sorted(random_ids) == list(range(300))
    assert length_padding < random_padding / 3, (length_padding, random_padding)
    assert _epoch(data, batch_order="length")[0] == length_ids  # the seed fixes it


def test_a_window_of_one_example_is_the_random_order(data):
    assert _epoch(data, batch_order="length", length_window=1)[0] == _epoch(
        data, batch_order="random")[0]


def test_a_window_below_one_is_refused(data):
    with pytest.raises(ValueError, match="--length-window 0: expected an integer >= 1"):
        _epoch(data, length_window=0)
