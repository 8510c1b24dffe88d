"""A glue_ehft task, its criterion and one model, built from a recorded fairseq-train command
(`ehft analyze` measures runs on them, Child-Tuning_D's Fisher information is computed on one).
"""

import os

import torch

from ..data.task_table import RANKING
from ..errors import EhftError
from ..fairseq_compat.safe_loading import safe_load
from ..models.drift import BACKBONE
from .handover import strip_heads
from .provenance import PLUGIN_DIR


def _this_plugin(args):
    """The command's arguments with its --user-dir dropped where it names a copy of this
    plugin (another checkout it was trained from): the running one is registered already,
    and fairseq refuses to import a second package of the same name."""
    if "--user-dir" in args:
        at = args.index("--user-dir")
        if os.path.basename(os.path.normpath(args[at + 1])) == os.path.basename(PLUGIN_DIR):
            return args[:at] + args[at + 2:]
    return args


class Built:
    """A glue_ehft task, its criterion and one model, built as fairseq-train built them."""

    def __init__(self, command, source, seed=0, peft=None, device="cpu"):
        import ehft_plugin
        from fairseq import options, tasks
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        ehft_plugin.register()  # glue_ehft and roberta_ehft in fairseq's registries
        args = _this_plugin(list(command[1:]))
        if peft is not None:
            args[args.index("--peft") + 1] = peft
        data = args[0]
        if not os.path.isfile(os.path.join(data, "ehft_task.json")):
            raise EhftError("%s: the data directory it was trained on, %s, is gone (expected "
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
            raise EhftError("%s lacks %d backbone weights of the model, e.g. %s"
                            % (path, len(missing), missing[0]))
        return self

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

