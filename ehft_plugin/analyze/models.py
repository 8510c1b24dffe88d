"""Models of a run, rebuilt from the fairseq-train command it recorded, and what the
diagnostics measure on them: backbone features, the head's hidden layer, the gradient that
reaches the backbone.

Everything runs in eval mode (no dropout), so that two measurements differ only by the
weights they compare.
"""

import os

import torch

from ..data.task_table import RANKING
from ..drift import BACKBONE
from ..handover import load_head, strip_heads
from ..safe_loading import safe_load
from .runs import AnalyzeError


class Built:
    """A glue_ehft task, its criterion and one model, built as fairseq-train built them."""

    def __init__(self, command, source, seed=0, peft=None, device="cpu"):
        from fairseq import options, tasks
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        args = list(command[1:])
        if peft is not None:
            args[args.index("--peft") + 1] = peft
        data = args[0]
        if not os.path.isfile(os.path.join(data, "ehft_task.json")):
            raise AnalyzeError("%s: the data directory it was trained on, %s, is gone (expected "
                               "the output of `ehft prepare` there)" % (source, data))
        parser = options.get_training_parser()
        self.cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, args))
        self.task = tasks.setup_task(self.cfg.task)
        torch.manual_seed(seed)  # the head a fresh model gets
        self.model = self.task.build_model(self.cfg.model).to(device).eval()
        self.criterion = self.task.build_criterion(self.cfg.criterion)
        self.head_name = self.task.cfg.classification_head_name
        self.device = device

    @property
    def head(self):
        return self.model.classification_heads[self.head_name]

    def load(self, path, strict=True):
        """Weights from a fairseq checkpoint; with strict=False (a pretrained original) its
        heads are dropped and the model keeps its own; the backbone must be complete."""
        state = safe_load(path, map_location="cpu")["model"]
        if not strict:
            state = strip_heads(state)
        result = self.model.load_state_dict(state, strict=strict, model_cfg=self.cfg.model)
        missing = [k for k in getattr(result, "missing_keys", []) if k.startswith(BACKBONE)]
        if missing:
            raise AnalyzeError("%s lacks %d backbone weights of the model, e.g. %s"
                               % (path, len(missing), missing[0]))
        return self

    def load_head(self, path):
        """A head handed over by stage 1 (stage1/head.safetensors)."""
        tensors = load_head(path)
        prefix = "classification_heads.%s." % self.head_name
        own = self.head.state_dict()
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            raise AnalyzeError("%s: a head of another shape or name than the task's %r"
                               % (path, self.head_name))
        self.head.load_state_dict(state)

    def batches(self, split, limit, batch_size=32):
        """The first `limit` examples of `split` (file order) in batches of `batch_size`, the
        same examples whatever the task's batch order (which sorts by length)."""
        from fairseq import utils

        if split not in self.task.datasets:
            self.task.load_dataset(split)
        dataset = self.task.dataset(split)
        ids = list(range(min(limit, len(dataset))))
        for start in range(0, len(ids), batch_size):
            sample = dataset.collater([dataset[i] for i in ids[start:start + batch_size]])
            yield utils.move_to_cuda(sample) if self.device.startswith("cuda") else sample

    def _inputs(self, sample):
        if self.task.kind != RANKING:
            return [sample["net_input"]]
        return [sample["net_input%d" % (i + 1)] for i in range(self.task.num_choices)]

    @torch.no_grad()
    def features(self, sample):
        """The backbone's final-layer features at <s> (what the head reads), [batch, dim]; a
        ranking task's candidates side by side, [batch, choices * dim]."""
        return torch.cat([self.model(**net_input, features_only=True)[0][:, 0, :].float()
                          for net_input in self._inputs(sample)], dim=1)

    @torch.no_grad()
    def head_hidden(self, sample):
        """The head's hidden layer (activation of its dense layer) at <s>, [batch, inner]."""
        head = self.head
        features = self.model(**sample["net_input"], features_only=True)[0][:, 0, :]
        return head.activation_fn(head.dense(features)).float()

    def backbone_gradient_norm(self, sample):
        """‖∂L/∂θ_backbone‖ of the mean loss over `sample`, with the current head."""
        self.model.zero_grad(set_to_none=True)
        loss, sample_size, _ = self.criterion(self.model, sample)
        (loss / sample_size).backward()
        squares = [p.grad.float().pow(2).sum() for n, p in self.model.named_parameters()
                   if n.startswith(BACKBONE) and p.grad is not None]
        self.model.zero_grad(set_to_none=True)
        if not squares:
            raise AnalyzeError("no gradient reached the backbone (is it frozen by --peft?)")
        return float(torch.stack(squares).sum().sqrt())

