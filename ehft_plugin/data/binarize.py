"""Raw GLUE/SuperGLUE files -> fairseq-binarised data plus a metadata file.

Layout (the same as fairseq's RoBERTa GLUE recipe, so stock
`--task sentence_prediction` reads classification and regression data too):

    out_dir/input0/{dict.txt,train.bin,...}   first segment (input1, input2: later ones;
                                              for ranking tasks the choices follow)
    out_dir/label/{dict.txt,train.bin,...}    class ids via a label dictionary
    out_dir/label/train.label                 regression targets, one float a line
    out_dir/tokenizer/                        copies of the tokeniser files
    out_dir/ehft_task.json                    task, label map, metrics, tokeniser

Everything is written to a temporary sibling directory that is renamed into
place at the end, so a failure never leaves a half-written output behind.
"""

import json
import logging
import os
import shutil
from dataclasses import asdict

import torch

from ..atomic import atomic_dir
from ..errors import EhftError, TokeniserError
from .readers import read_examples
from .task_table import REGRESSION, TaskSpec, label_token
from .tokenisers import TokeniserSpec, build_encoder, load_dictionary

logger = logging.getLogger(__name__)

METADATA_FILE = "ehft_task.json"
FORMAT_VERSION = 1
# more unknown tokens than this means the dictionary belongs to another tokeniser
MAX_UNKNOWN_RATE = 0.05


def _write_indexed(prefix, items, vocab_size):
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=vocab_size)
    for item in items:
        builder.add_item(item)
    builder.finalize(prefix + ".idx")


class _UnknownCounter:
    def __init__(self, unk_index):
        self.unk_index, self.total, self.unknown, self.first = unk_index, 0, 0, None

    def __call__(self, word, idx):
        self.total += 1
        if idx == self.unk_index and word != "<unk>":
            self.unknown += 1
            self.first = self.first or word

    def check(self, tokeniser: TokeniserSpec):
        rate = self.unknown / max(self.total, 1)
        if rate > MAX_UNKNOWN_RATE:
            raise TokeniserError(
                "dictionary/tokeniser mismatch: %.0f%% of the %s tokens are not in --srcdict %s "
                "(first unknown: %r); expected the dictionary that belongs to this tokeniser"
                % (100 * rate, tokeniser.bpe, tokeniser.srcdict, self.first)
            )
        if self.unknown:
            logger.warning("%d of %d tokens mapped to <unk>", self.unknown, self.total)


def encode_examples(examples, encode, dictionary, consumer):
    """Token tensors per input stream: segments first, then ranking choices."""
    streams = []
    for ex in examples:
        texts = ex.segments + ex.choices
        streams.append([
            # multiprocessing_bpe_encoder strips each line before encoding
            dictionary.encode_line(encode(t.strip()), add_if_not_exist=False, consumer=consumer)
            for t in texts
        ])
    return list(zip(*streams))


def truncate_longest_first(segments, max_length, extra_per_segment):
    """Shorten the longest segment, one token at a time, until the joined input (one <s>,
    each segment with its </s>, `extra_per_segment` separators before each further segment)
    fits `max_length` tokens; each segment keeps its final </s> (HF's "longest_first")."""
    lengths = [len(s) for s in segments]
    overhead = 1 + extra_per_segment * (len(segments) - 1)
    while sum(lengths) + overhead > max_length:
        longest = max(range(len(lengths)), key=lambda i: (lengths[i], -i))
        if lengths[longest] <= 1:
            break
        lengths[longest] -= 1
    return [s if n == len(s) else torch.cat([s[:n - 1], s[-1:]]) for s, n in
            zip(segments, lengths)]


def _write_labels(spec, label_dir, split, examples):
    if spec.kind == REGRESSION:
        with open(os.path.join(label_dir, split + ".label"), "w") as f:
            f.writelines("%r\n" % ex.label for ex in examples)
        return
    label_dict = load_dictionary(os.path.join(label_dir, "dict.txt"))
    items = [
        label_dict.encode_line(label_token(spec.labels[int(ex.label)]), add_if_not_exist=False)
        for ex in examples
    ]
    _write_indexed(os.path.join(label_dir, split), items, len(label_dict))


def label_counts(spec, examples):
    """Examples of each class, in `spec.labels` order."""
    counts = [0] * len(spec.labels)
    for ex in examples:
        counts[int(ex.label)] += 1
    return counts


def _write_label_dict(spec, label_dir, train_examples):
    counts = label_counts(spec, train_examples)
    with open(os.path.join(label_dir, "dict.txt"), "w") as f:
        for value, count in zip(spec.labels, counts):
            f.write("%s %d\n" % (label_token(value), count))


def prepare(spec: TaskSpec, raw_dir: str, out_dir: str, tokeniser: TokeniserSpec,
            force: bool = False, pair_format: str = "roberta", max_length=None) -> dict:
    """Binarise every labeled split of `spec` from `raw_dir` into `out_dir`; returns the metadata."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise EhftError("--out-dir %s already exists; pass --force to replace it" % out_dir)
    if max_length is not None and (spec.choice_fields or max_length < 4):
        raise EhftError("--max-length %d: expected an integer >= 4, for a task without answer "
                        "choices (%s has %d)" % (max_length, spec.name, len(spec.choice_fields)))
    tokeniser.check()
    dictionary = load_dictionary(tokeniser.srcdict)
    encode = build_encoder(tokeniser)
    # read (and validate) every split before writing anything
    splits = {
        split: read_examples(spec, os.path.join(raw_dir, name), split)
        for split, name in spec.splits.items()
    }
    if spec.test_file:  # a custom task's test file, read as `ehft predict` will read it
        read_examples(spec, spec.test_file, "test", labeled=False)
    with atomic_dir(out_dir) as tmp:
        return _write_all(spec, raw_dir, tmp, tokeniser, dictionary, encode, splits,
                          pair_format, max_length)


def _write_all(spec, raw_dir, tmp, tokeniser, dictionary, encode, splits, pair_format,
               max_length=None):
    counter = _UnknownCounter(dictionary.unk())
    num_streams = len(next(iter(splits.values()))[0].segments) + len(spec.choice_fields)
    stream_dirs = [os.path.join(tmp, "input%d" % i) for i in range(num_streams)]
    label_dir = os.path.join(tmp, "label")
    for d in stream_dirs + [label_dir]:
        os.makedirs(d)
        if d != label_dir:
            shutil.copyfile(tokeniser.srcdict, os.path.join(d, "dict.txt"))
    if spec.kind != REGRESSION:
        _write_label_dict(spec, label_dir, splits["train"])
    split_info = {}
    for split, examples in splits.items():
        streams = encode_examples(examples, encode, dictionary, counter)
        if max_length:
            extra = 0 if pair_format == "bert" else 1  # roberta: </s> </s> between segments
            streams = list(zip(*[truncate_longest_first(list(example), max_length, extra)
                                 for example in zip(*streams)]))
        for d, items in zip(stream_dirs, streams):
            _write_indexed(os.path.join(d, split), items, len(dictionary))
        _write_labels(spec, label_dir, split, examples)
        split_info[split] = {"raw_file": spec.splits[split], "examples": len(examples)}
        if spec.kind != REGRESSION:  # per class, in `labels` order (the constant level)
            split_info[split]["label_counts"] = label_counts(spec, examples)
        logger.info("%s: %d examples", split, len(examples))
    counter.check(tokeniser)
    meta = {
        "format_version": FORMAT_VERSION,
        "task": spec.name,
        "kind": spec.kind,
        "labels": list(spec.labels),
        "num_classes": spec.num_classes,
        "metrics": list(spec.metrics),
        "segments": num_streams - len(spec.choice_fields),
        "choices": len(spec.choice_fields),
        "splits": split_info,
        "raw_dir": os.path.abspath(raw_dir) if raw_dir else os.path.dirname(spec.splits["train"]),
        "tokenizer": asdict(tokeniser.copy_into(os.path.join(tmp, "tokenizer"))),
        "pair_format": pair_format,  # how glue_ehft joins segments: roberta or bert
        "max_length": max_length,  # inputs truncated longest-first to this many tokens
    }
    if spec.benchmark == "custom":
        from .custom import SPEC_KEY, spec_record

        meta[SPEC_KEY] = spec_record(spec)
    with open(os.path.join(tmp, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def load_metadata(data_dir: str) -> dict:
    path = os.path.join(data_dir, METADATA_FILE)
    if not os.path.isfile(path):
        raise EhftError(
            "%s not found: is %s a directory written by `ehft prepare`?" % (path, data_dir)
        )
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise EhftError("%s: format_version %r, expected %d; re-run `ehft prepare`"
                         % (path, meta.get("format_version"), FORMAT_VERSION))
    return meta


