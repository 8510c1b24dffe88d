"""`--arch roberta_ehft_base|roberta_ehft_large`: fairseq's RoBERTa with a PEFT plan (`--peft`)
and a choice of classification head (`--head-type`).

Only `build_model`, `register_classification_head` and `upgrade_state_dict_named` change:
the plan is applied right after fairseq builds the model, heads registered later are
trainable, and a stock RoBERTa checkpoint (no PEFT keys) loads with the PEFT parameters
created fresh.
"""

import logging

from fairseq.models import (
    BaseFairseqModel,
    FairseqEncoder,
    register_model,
    register_model_architecture,
)
from fairseq.models.roberta.model import (
    RobertaClassificationHead,
    RobertaModel,
    base_architecture,
    roberta_large_architecture,
)
from fairseq.utils import safe_hasattr

import torch
from omegaconf import OmegaConf

from ..errors import CheckpointError, ConfigError, one_line_errors
from ..peft.apply import apply_plan
from ..peft.child_tuning import apply_mask, load_mask
from ..peft.mixout import TARGET as MIXOUT_TARGET
from ..peft.mixout import MixoutLinear
from ..peft.plan import SHORTHANDS, Mixout, format_plan, parse_plan
from ..peft.trainable import count_parameters, format_counts
from .attention import KERNELS
from .config import dataclass_from_add_args
from .encoder import EhftRobertaEncoder, use_attention_kernel

logger = logging.getLogger(__name__)

HEAD_TYPES = ("fairseq", "ehft")


# fairseq's set_num_updates that only pass the count on to submodules
_PASSING_ON = (BaseFairseqModel.set_num_updates, FairseqEncoder.set_num_updates)


class RobertaEhftModel(RobertaModel):
    def __init__(self, args, encoder):
        super().__init__(args, encoder)  # fairseq's init_bert_params over the whole model
        use_attention_kernel(encoder.sentence_encoder, args)

    @staticmethod
    def add_args(parser):
        RobertaModel.add_args(parser)
        parser.add_argument(
            "--peft", type=str, metavar="PLAN",
            help="parameter-efficient plan by layer stratum, e.g. "
                 "'0-3:frozen,4-8:bitfit,9-23:lora(r=64,alpha=128,targets=q+k+v+out)+bitfit(ffn)'"
                 " or a shorthand: %s (default: full)" % ", ".join(SHORTHANDS))
        parser.add_argument(
            "--head-type", choices=HEAD_TYPES,
            help="classification head: fairseq (dense-tanh-out, inner dim = hidden size) or "
                 "ehft (hidden -> --head-inner-dim -> classes with ReLU, as in the EH-FT paper)")
        parser.add_argument("--head-inner-dim", type=int, metavar="N",
                            help="inner size of the ehft head (default 2048, > 0)")
        parser.add_argument("--head-init-std", type=float, metavar="S",
                            help="draw a new head's weight matrices from N(0, S), biases as "
                                 "torch initialises them (the EH-FT authors' S=0.005); default: "
                                 "fairseq's initialisation")
        parser.add_argument("--mixout-head", action="store_true",
                            help="with a mixout plan, the head's Linear layers mix too, toward "
                                 "the head the run starts with (the EH-FT authors' Mixout)")
        parser.add_argument("--layer-norm-eps", type=float, metavar="EPS",
                            help="epsilon of every LayerNorm (default: fairseq's 1e-5; "
                                 "backbones converted from BERT record 1e-12)")
        parser.add_argument(
            "--attention-kernel", choices=KERNELS,
            help="encoder self-attention: sdpa (default: one F.scaled_dot_product_attention "
                 "call with a boolean key mask, so a GPU runs its fused kernels, for every "
                 "--peft plan) or fairseq (its MultiheadAttention; prefix layers use sdpa)")
        parser.add_argument(
            "--child-tuning-mask", metavar="FILE",
            help="Child-Tuning_D: update only the encoder-layer parameters the mask file (ehft "
                 "child-mask) chooses; gradients elsewhere in the layers are zeroed")
        parser.add_argument("--reset-classification-heads", action="store_true",
                            help="a checkpoint head of another size is replaced by a new one "
                                 "instead of being an error")

    @classmethod
    @one_line_errors
    def build_model(cls, args, task):
        """fairseq's RobertaModel.build_model with the plugin's encoder (models/encoder.py),
        then the PEFT plan and the Child-Tuning mask."""
        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, False)
        base_architecture(args)
        if not safe_hasattr(args, "max_positions"):
            if not safe_hasattr(args, "tokens_per_sample"):
                args.tokens_per_sample = task.max_positions()
            args.max_positions = args.tokens_per_sample
        model = cls(args, EhftRobertaEncoder(args, task.source_dictionary))
        if OmegaConf.is_config(args):
            OmegaConf.set_struct(args, True)
        layers = model.encoder.sentence_encoder.layers
        std = getattr(args, "head_init_std", None)
        if std is not None and not std > 0:
            raise ConfigError("--head-init-std %r: expected a number > 0" % std)
        model.plan = parse_plan(args.peft, len(layers))
        if getattr(args, "mixout_head", False) and model.plan.method(len(layers) - 1,
                                                                     Mixout) is None:
            raise ConfigError("--mixout-head needs a --peft plan with mixout on the top layer, "
                              "e.g. mixout(p=0.7); --peft is %r" % args.peft)
        apply_plan(model, model.plan, layers)
        logger.info("--peft %s", format_plan(model.plan))
        mask_file = getattr(args, "child_tuning_mask", None)
        if mask_file:
            masks, metadata = load_mask(mask_file)
            apply_mask(model, masks, mask_file)
            logger.info("--child-tuning-mask %s: %d of %d encoder-layer weights update "
                        "(share %s)", mask_file, sum(int(m.sum()) for m in masks.values()),
                        sum(m.numel() for m in masks.values()), metadata.get("share"))
        return model

    def train(self, mode=True):
        """fairseq's task sets train mode before every update, which walks every module and
        sets each one's flag (about 1 ms of host time for 24 layers, every step); a model
        already wholly in that mode is left as it is."""
        if all(m.training == mode for m in self.modules()):
            return self
        return super().train(mode)

    def set_num_updates(self, num_updates):
        """fairseq hands the update count to every module with a `set_num_updates`, and
        fairseq's encoders hand it on by walking their own submodules again (about 4 ms of
        host time for 24 layers, every step). The modules that only hand it on are skipped;
        every other receiver is called, once."""
        for module in self.modules():
            method = getattr(type(module), "set_num_updates", None)
            if module is not self and method is not None and method not in _PASSING_ON:
                module.set_num_updates(num_updates)

    def forward(self, src_tokens, *args, has_pads=None, **kwargs):
        """fairseq's forward; `has_pads` (glue_ehft's batches carry it, a host bool) tells the
        encoder whether the batch holds padding without reading the tokens back from the
        device. Left out, the encoder reads it once."""
        encoder = self.encoder.sentence_encoder
        encoder.known_has_pads = has_pads
        try:
            return super().forward(src_tokens, *args, **kwargs)
        finally:
            encoder.known_has_pads = None

    def register_classification_head(self, name, num_classes=None, inner_dim=None, **kwargs):
        if self.args.head_type != "ehft":
            super().register_classification_head(name, num_classes, inner_dim, **kwargs)
        else:
            self.classification_heads[name] = RobertaClassificationHead(
                input_dim=self.args.encoder_embed_dim,
                inner_dim=inner_dim or self.args.head_inner_dim,
                num_classes=num_classes,
                activation_fn="relu",
                pooler_dropout=self.args.pooler_dropout,
            )
        head = self.classification_heads[name]
        std = getattr(self.args, "head_init_std", None)
        if std:  # a checkpoint's head, if any, replaces these values when it loads
            for linear in (head.dense, head.out_proj):
                torch.nn.init.normal_(linear.weight, mean=0.0, std=std)
        if getattr(self.args, "mixout_head", False):
            mixout = self.plan.method(self.plan.num_layers - 1, Mixout)
            head.dense = MixoutLinear.wrap(head.dense, mixout.p)
            head.out_proj = MixoutLinear.wrap(head.out_proj, mixout.p)
        logger.info("classification head %r (%s, %d outputs)\n%s", name, self.args.head_type,
                    num_classes, format_counts(count_parameters(self)))

    @one_line_errors
    def upgrade_state_dict_named(self, state_dict, name):
        prefix = name + "." if name != "" else ""
        self._check_head_sizes(state_dict, prefix)
        super().upgrade_state_dict_named(state_dict, name)
        # PEFT parameters a stock checkpoint lacks start from their initial values; mixout
        # mixes with the weights the run starts from, those of the checkpoint
        for key, value in self.state_dict().items():
            if prefix + key in state_dict:
                continue
            if "lora_" in key or ".prefix" in key:
                state_dict[prefix + key] = value
            elif key.endswith("." + MIXOUT_TARGET):
                weight = prefix + key[:-len(MIXOUT_TARGET)] + "weight"
                state_dict[prefix + key] = state_dict.get(weight, value)

    def _check_head_sizes(self, state_dict, prefix):
        if getattr(self.args, "reset_classification_heads", False):
            return
        for head_name, head in self.classification_heads.items():
            key = "%sclassification_heads.%s.out_proj.weight" % (prefix, head_name)
            dense = "%sclassification_heads.%s.dense.weight" % (prefix, head_name)
            if key not in state_dict:
                continue
            saved = (tuple(state_dict[key].shape), tuple(state_dict[dense].shape))
            current = (tuple(head.out_proj.weight.shape), tuple(head.dense.weight.shape))
            if saved != current:
                raise CheckpointError(
                    "the checkpoint's head %r has out_proj %s and dense %s, the model's has %s "
                    "and %s (other number of classes or head type); pass "
                    "--reset-classification-heads to start a new head"
                    % (head_name, saved[0], saved[1], current[0], current[1]))


# fairseq-hydra-train's `model.peft=...`: the options as a dataclass, read from add_args
RobertaEhftConfig = dataclass_from_add_args("RobertaEhftConfig", RobertaEhftModel.add_args)
RobertaEhftModel = register_model("roberta_ehft", dataclass=RobertaEhftConfig)(RobertaEhftModel)


def _ehft_defaults(args):
    args.peft = getattr(args, "peft", None) or "full"
    args.head_type = getattr(args, "head_type", None) or "fairseq"
    args.head_inner_dim = getattr(args, "head_inner_dim", None) or 2048
    args.attention_kernel = getattr(args, "attention_kernel", None) or "sdpa"


@register_model_architecture("roberta_ehft", "roberta_ehft_base")
def roberta_ehft_base(args):
    args.arch = getattr(args, "arch", None) or "roberta_ehft_base"  # hydra sets only _name
    _ehft_defaults(args)
    base_architecture(args)


@register_model_architecture("roberta_ehft", "roberta_ehft_large")
def roberta_ehft_large(args):
    args.arch = getattr(args, "arch", None) or "roberta_ehft_large"
    _ehft_defaults(args)
    roberta_large_architecture(args)


# fairseq's register_model returns an existing class on a name clash instead of failing
if RobertaEhftModel.__module__ != __name__:
    raise ImportError("--arch roberta_ehft is already registered by %s"
                      % RobertaEhftModel.__module__)
