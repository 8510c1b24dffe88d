"""`--task glue_ehft`: GLUE and SuperGLUE data written by `ehft prepare`.

Everything fairseq's `sentence_prediction` needs on the command line
(--num-classes, --regression-target, --init-token, --separator-token) is read
from the data directory's metadata instead, so one flag set fits every task.
Inputs are built as RoBERTa expects: `<s> A </s> </s> B </s>` (and a third
segment the same way for WiC); a ranking task (COPA) gets one such input per
choice, scored by a one-output head and compared with a softmax.

Longer than ~300 lines because fairseq's task is one class (data loading, batching,
model building and validation hooks); the readers and binarising live in data/.
"""

import contextlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np
from fairseq import metrics
from fairseq.data import (
    ConcatSentencesDataset,
    IdDataset,
    NestedDictionaryDataset,
    NumelDataset,
    NumSamplesDataset,
    OffsetTokensDataset,
    PrependTokenDataset,
    RawLabelDataset,
    RightPadDataset,
    SortDataset,
    StripTokenDataset,
    data_utils,
)
from fairseq.data.shorten_dataset import maybe_shorten_dataset
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, OmegaConf, open_dict

from ..data.binarize import load_metadata
from ..data.task_table import RANKING, REGRESSION
from ..data.tokenisers import load_dictionary
from ..errors import ConfigError, EhftError, one_line_errors
from ..fairseq_compat.kernels import layer_norm_kernels
from ..metrics import PREDICTIONS_KEY, derived_metric, needs_predictions

logger = logging.getLogger(__name__)

SHORTEN_METHODS = ChoiceEnum(["none", "truncate", "random_crop"])
BATCH_ORDERS = ChoiceEnum(["length", "random"])


class RightPadToMultiple(RightPadDataset):
    """fairseq's right padding, to a length that is a multiple of `multiple`."""

    def __init__(self, dataset, pad_idx, multiple=1):
        super().__init__(dataset, pad_idx=pad_idx)
        self.multiple = multiple

    def collater(self, samples):
        return data_utils.collate_tokens(samples, self.pad_idx, left_pad=False,
                                         pad_to_multiple=self.multiple)


class HasPadsFlag(NumelDataset):
    """Whether a batch holds padding, as a host bool beside its tokens (`has_pads`): the
    encoder then need not read it back from the device (RobertaEhftModel.forward). The batch
    length is fairseq's collate_tokens rule, so the flag and RightPadToMultiple agree."""

    def __init__(self, dataset, multiple=1):
        super().__init__(dataset, reduce=False)
        self.multiple = multiple

    def collater(self, samples):
        if not samples:
            return False
        size = max(samples)
        if self.multiple != 1 and size % self.multiple != 0:
            size = int(((size - 0.1) // self.multiple + 1) * self.multiple)
        return any(length != size for length in samples)


class MissingSplit(EhftError, FileNotFoundError):
    """A split the run needs was not prepared."""


@dataclass
class GlueEhftConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "directory written by `ehft prepare`"})
    max_positions: int = field(
        default=512, metadata={"help": "longest input in tokens, <s> and </s> included (> 0)"}
    )
    shorten_method: SHORTEN_METHODS = field(
        default="truncate",
        metadata={"help": "what to do with inputs longer than --max-positions: truncate (keep the "
                          "first tokens), random_crop, or none (fairseq then skips or refuses them)"},
    )
    shorten_data_split_list: str = field(
        default="", metadata={"help": "comma-separated splits to shorten; empty = all"}
    )
    classification_head_name: str = field(
        default="sentence_classification_head", metadata={"help": "name of the head to train"}
    )
    no_shuffle: bool = field(default=False, metadata={"help": "keep the file order of examples"})
    batch_order: BATCH_ORDERS = field(
        default="length",
        metadata={"help": "length: shuffle, then sort by length within each window of "
                          "--length-window examples, so that a batch holds inputs of similar "
                          "length and little padding (fairseq shuffles the batches each epoch); "
                          "random: shuffled examples, as fairseq's sentence_prediction"},
    )
    length_window: int = field(
        default=1024, metadata={"help": "examples sorted together by --batch-order length (>= 1)"}
    )
    pad_to_multiple: int = field(
        default=1,
        metadata={"help": "pad every batch to a length that is a multiple of N (>= 1): GPU "
                          "kernels and the CUDA caching allocator see fewer distinct shapes, "
                          "and fp16/bf16 matmuls stay tensor-core aligned; padded positions "
                          "are masked, so outputs are unchanged (benchmarks/speed_cuda.py "
                          "measures it)"},
    )
    log_drift_from: str = field(
        default="",
        metadata={"help": "a checkpoint (the pretrained model.pt): log the L2 distance of the "
                          "backbone's parameters from its weights as `drift` at every update "
                          "(for `ehft analyze`; costs one float32 copy of the backbone)"},
    )
    seed: int = II("common.seed")


@register_task("glue_ehft", dataclass=GlueEhftConfig)
class GlueEhftTask(FairseqTask):
    def __init__(self, cfg, dictionary, label_dictionary, meta):
        super().__init__(cfg)
        self.dictionary = dictionary
        self.label_dictionary = label_dictionary
        self.meta = meta
        self.kind = meta["kind"]
        self.num_classes = meta["num_classes"]
        self.num_choices = meta["choices"]
        self.metric_names = meta["metrics"]
        # a task config written before these settings existed (a Namespace) takes the defaults
        self.batch_order = getattr(cfg, "batch_order", GlueEhftConfig.batch_order)
        self.length_window = getattr(cfg, "length_window", GlueEhftConfig.length_window)
        if self.length_window < 1:
            raise ConfigError("--length-window %d: expected an integer >= 1" % self.length_window)
        self.pad_to_multiple = getattr(cfg, "pad_to_multiple", 1)
        if self.pad_to_multiple < 1:
            raise ConfigError("--pad-to-multiple %d: expected an integer >= 1"
                             % self.pad_to_multiple)
        self._warned_multiple = False
        self.log_drift_from = getattr(cfg, "log_drift_from", "")
        if self.log_drift_from and not os.path.isfile(self.log_drift_from):
            raise ConfigError("--log-drift-from %s: no such checkpoint file" % self.log_drift_from)
        self._drift_reference = None

    @classmethod
    @one_line_errors
    def setup_task(cls, cfg, **kwargs):
        meta = load_metadata(cfg.data)
        dictionary = load_dictionary(os.path.join(cfg.data, "input0", "dict.txt"))
        label_dictionary = None
        if meta["kind"] != REGRESSION:
            label_dictionary = load_dictionary(os.path.join(cfg.data, "label", "dict.txt"))
        logger.info("task %s (%s): %d dictionary types, labels %s, metrics %s, splits %s",
                    meta["task"], meta["kind"], len(dictionary), meta["labels"], meta["metrics"],
                    ", ".join(meta["splits"]))
        return cls(cfg, dictionary, label_dictionary, meta)

    # ---- data -----------------------------------------------------------------

    def _stream(self, key, split, dictionary, combine):
        path = os.path.join(self.cfg.data, key, split)
        dataset = data_utils.load_indexed_dataset(path, dictionary, combine=combine)
        if dataset is None:
            raise MissingSplit("%s.{bin,idx} not found; prepared splits: %s"
                                    % (path, ", ".join(self.meta["splits"])))
        return dataset

    def _join(self, streams):
        # RoBERTa: <s> A </s> then </s> B </s> for every further segment; backbones
        # converted from BERT read [CLS] A [SEP] B [SEP] (ehft prepare --backbone)
        parts = [PrependTokenDataset(streams[0], self.dictionary.bos())]
        if self.meta.get("pair_format", "roberta") == "bert":
            parts += list(streams[1:])
        else:
            parts += [PrependTokenDataset(s, self.dictionary.eos()) for s in streams[1:]]
        return ConcatSentencesDataset(*parts) if len(parts) > 1 else parts[0]

    def _shorten(self, tokens, split):
        too_long = int((tokens.sizes > self.max_positions()).sum())
        if too_long:
            logger.warning(
                "%s: %d of %d inputs are longer than --max-positions %d; --shorten-method %s",
                split, too_long, len(tokens), self.max_positions(), self.cfg.shorten_method,
            )
        return maybe_shorten_dataset(tokens, split, self.cfg.shorten_data_split_list,
                                     self.cfg.shorten_method, self.max_positions(), self.cfg.seed)

    def _targets(self, split, combine):
        if self.kind == REGRESSION:
            path = os.path.join(self.cfg.data, "label", split + ".label")
            if not os.path.exists(path):
                return None
            with open(path) as f:
                return RawLabelDataset([float(line) for line in f])
        labels = self._stream("label", split, self.label_dictionary, combine)
        return OffsetTokensDataset(
            StripTokenDataset(labels, id_to_strip=self.label_dictionary.eos()),
            offset=-self.label_dictionary.nspecial,
        )

    @one_line_errors
    def load_dataset(self, split, combine=False, **kwargs):
        streams = [self._stream("input%d" % i, split, self.dictionary, combine)
                   for i in range(self.meta["segments"] + self.num_choices)]
        dataset = self.build_dataset(split, streams, self._targets(split, combine))
        self.datasets[split] = dataset
        return dataset

    def build_dataset(self, split, streams, targets=None):
        """The model inputs from per-segment token datasets (binarised or built in memory)."""
        segments = self.meta["segments"]
        if self.num_choices:
            candidates = [self._join(streams[:segments] + [c]) for c in streams[segments:]]
        else:
            candidates = [self._join(streams)]
        candidates = [self._shorten(c, split) for c in candidates]

        dataset = {
            "id": IdDataset(),
            "nsentences": NumSamplesDataset(),
            "ntokens": NumelDataset(ConcatSentencesDataset(*candidates), reduce=True),
        }
        for i, tokens in enumerate(candidates):
            key = "net_input%d" % (i + 1) if self.num_choices else "net_input"
            dataset[key] = {
                "src_tokens": RightPadToMultiple(tokens, self.dictionary.pad(),
                                                 self.pad_to_multiple),
                "src_lengths": NumelDataset(tokens, reduce=False),
                "has_pads": HasPadsFlag(tokens, self.pad_to_multiple),
            }
        if targets is not None:
            dataset["target"] = targets
        sizes = np.max([c.sizes for c in candidates], axis=0)
        dataset = NestedDictionaryDataset(dataset, sizes=[sizes])
        if not self.cfg.no_shuffle:
            dataset = SortDataset(dataset, sort_order=self._example_order(sizes))
        logger.info("loaded %s: %d examples", split, len(dataset))
        return dataset

    def _example_order(self, sizes):
        """np.lexsort keys, last = primary: a random key per example and, for --batch-order
        length, the window of that key and then the length ahead of it."""
        with data_utils.numpy_seed(self.cfg.seed):
            key = np.random.permutation(len(sizes))
        if self.batch_order == "random":
            return [key]
        return [key, sizes, key // self.length_window]

    def get_batch_iterator(self, dataset, **kwargs):
        # fairseq main drops the last batch when its size is not a multiple of
        # --required-batch-size-multiple (default 8): 5 of RTE's 277 dev examples
        # would never be scored. Every example counts here, so batches are
        # formed without that constraint.
        multiple = kwargs.get("required_batch_size_multiple", 1)
        if multiple != 1 and not self._warned_multiple:
            logger.info("glue_ehft uses --required-batch-size-multiple 1 (asked: %d) so that no "
                        "example is dropped from an epoch or a dev set", multiple)
            self._warned_multiple = True
        kwargs["required_batch_size_multiple"] = 1
        return super().get_batch_iterator(dataset, **kwargs)

    # ---- resuming ---------------------------------------------------------------

    # fairseq counts --patience in attributes of fairseq_cli.train.should_stop_early, which a
    # relaunch loses: a resumed stage would wait `patience` more validations than an
    # uninterrupted one. They travel in the checkpoint instead (fairseq stores this dict under
    # the task's class name and hands it back on resume).
    _PATIENCE = ("best", "num_runs")

    def get_checkpoint_dict(self):
        counter = _patience_counter()
        state = {k: getattr(counter, k) for k in self._PATIENCE if hasattr(counter, k)}
        return {type(self).__name__: {"patience": state}} if state else {}

    def set_checkpoint_dict(self, state):
        counter = _patience_counter()
        for key, value in (state.get("patience") or {}).items():
            if key in self._PATIENCE:
                setattr(counter, key, value)

    # ---- model and metrics ----------------------------------------------------

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.log_drift_from:
            self._log_drift(model)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    @one_line_errors
    def _log_drift(self, model):
        from ..models.drift import parameter_distance, reference_parameters

        if self._drift_reference is None:
            self._drift_reference = reference_parameters(self.log_drift_from, model)
        # before this update's step: the first record of a stage is its start
        metrics.log_scalar("drift", parameter_distance(model, self._drift_reference))

    @one_line_errors
    def build_model(self, cfg, from_checkpoint=False):
        from fairseq import models

        # the model is built with the task's length limit, as sentence_prediction does
        with open_dict(cfg) if OmegaConf.is_config(cfg) else contextlib.ExitStack():
            cfg.max_positions = self.cfg.max_positions
        model = models.build_model(cfg, self, from_checkpoint)
        outputs = 1 if self.kind in (RANKING, REGRESSION) else self.num_classes
        model.register_classification_head(self.cfg.classification_head_name, num_classes=outputs)
        logger.info("LayerNorm kernels: %s", layer_norm_kernels(model))
        return model

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        has_predictions = any(PREDICTIONS_KEY in log for log in logging_outputs)
        for name in self.metric_names:
            if needs_predictions(name) and not has_predictions:
                continue
            metrics.log_derived(name, derived_metric(name))

    def max_positions(self):
        return self.cfg.max_positions

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary


# fairseq's register_task returns an already registered class on a name clash
# instead of failing: make a clash loud rather than train with someone else's task
if GlueEhftTask.__module__ != __name__:
    raise ImportError("--task glue_ehft is already registered by %s; ehft_plugin cannot register it"
                      % GlueEhftTask.__module__)


def _patience_counter():
    """fairseq-train's early-stopping function, which keeps the patience count."""
    from fairseq_cli import train

    return train.should_stop_early
