"""Writes examples/config/, the configurations for fairseq-hydra-train, from their sources:
the plugin's dataclasses (every option listed, so `model.peft=...`, `task.batch_order=...`
are overrides of existing keys), fairseq's RoBERTa GLUE recipe (ehft_plugin/train/recipes.py),
the method table (ehft_plugin/train/methods.py) and the task table.

    python scripts/hydra_configs.py            # rewrite examples/config
    python scripts/hydra_configs.py --check    # exit 1 if the committed files differ

fairseq-hydra-train composes its configuration before it imports --user-dir, so the keys
have to be in the files: nothing the plugin registers is known at that point.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "examples", "config")

# SuperGLUE has no fairseq recipe: the same shape (batch 16, lr 1e-5, 6% warmup, 10 epochs
# over the official training split, whose size is fixed here and checked against the data)
SUPERGLUE_TRAIN_EXAMPLES = {"boolq": 9427, "cb": 250, "copa": 400, "wic": 5428,
                            "superglue-rte": 2490}
SUPERGLUE = {"lr": 1e-5, "batch_size": 16, "epochs": 10, "warmup_share": 0.06}

USAGE = """\
# {title}
#   fairseq-hydra-train --config-dir examples/config --config-name {name} \\
#       common.user_dir=$(ehft user-dir) task.data=data-bin/{name} \\
#       checkpoint.finetune_from_model=roberta.large/model.pt [method=bitfit] [model.peft=...]
# methods: ft (default), bitfit, lora, prefix, spafit, mixout, child_tuning_d,
# ehft_stage1_bitfit, ehft_stage1_lora, ehft_stage1_prefix, ehft_stage2;
# model=roberta_ehft_base for a 12-layer backbone.
# Written by scripts/hydra_configs.py: edit that, not this file.
"""


def _yaml(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(node)


def _structured(dc, **values):
    from omegaconf import OmegaConf

    node = OmegaConf.structured(dc())
    OmegaConf.set_struct(node, False)
    for key, value in values.items():
        node[key] = value
    return OmegaConf.create(OmegaConf.to_container(node, enum_to_str=True))


def plugin_sections():
    """ehft.yaml: every section the plugin registers, with all its keys."""
    from fairseq.optim.lr_scheduler.polynomial_decay_schedule import (
        PolynomialDecayLRScheduleConfig)
    from omegaconf import OmegaConf

    from ehft_plugin.criterions.sentence_prediction_ehft import SentencePredictionEhftConfig
    from ehft_plugin.optim.ehft_adamw import EhftAdamWConfig
    from ehft_plugin.tasks.glue_ehft import GlueEhftConfig

    return OmegaConf.create({
        "common": {"log_format": "json", "log_interval": 10},
        "task": _structured(GlueEhftConfig, _name="glue_ehft"),
        "criterion": _structured(SentencePredictionEhftConfig, _name="sentence_prediction_ehft"),
        # the settings every `ehft train` stage uses (fairseq's recipe's Adam settings)
        "optimizer": _structured(EhftAdamWConfig, _name="ehft_adamw", adam_betas="(0.9,0.98)",
                                 adam_eps=1e-6, weight_decay=0.1),
        "lr_scheduler": _structured(PolynomialDecayLRScheduleConfig, _name="polynomial_decay"),
        "checkpoint": {"finetune_from_model": "???", "maximize_best_checkpoint_metric": True,
                       "no_epoch_checkpoints": True},
        "dataset": {"required_batch_size_multiple": 1},
    })


def model_config(arch):
    from ehft_plugin.models.roberta_ehft import RobertaEhftConfig

    # sizes stay null: the architecture fills them, as `fairseq-train --arch` does
    return _structured(RobertaEhftConfig, _name=arch, head_type="ehft")


def method_configs():
    from ehft_plugin.train.methods import PEFT_DEFAULTS

    lr = {name: PEFT_DEFAULTS[name][1] for name in ("bitfit", "lora", "prefix")}
    plans = {"bitfit": "bitfit", "lora": "lora(r=32,alpha=32,targets=q+v)",
             "prefix": "prefix(len=16)"}
    methods = {"ft": ("full finetuning at the task's learning rate", "full", None),
               "spafit": ("SPAFIT: layers 1-4 frozen, 5-9 BitFit, the rest LoRA r=64 + BitFit "
                          "(ffn)", "spafit-4-9-I", 5e-4),
               "ehft_stage2": ("EH-FT stage 2: full finetuning at the task's learning rate, "
                               "from the original backbone with stage 1's head: "
                               "checkpoint.finetune_from_model=START, START written by "
                               "`ehft handover`; the other nine tenths of the updates",
                               "full", None),
               "mixout": ("Mixout (Lee et al. 2020): full finetuning at the task's learning "
                          "rate, every layer's weights mixed with the pretrained ones (p=0.9)",
                          "mixout(p=0.9)", None),
               "child_tuning_d": ("Child-Tuning_D (Xu et al. 2021): full finetuning at the "
                                  "task's learning rate of the child `ehft child-mask` chose: "
                                  "model.child_tuning_mask=MASK", "full", None)}
    for name in plans:
        methods[name] = (name + " on every layer", plans[name], lr[name])
        methods["ehft_stage1_" + name] = (
            "EH-FT stage 1: %s with a new head for a tenth of the task's updates (set "
            "optimization.max_update, lr_scheduler.total_num_update and "
            "lr_scheduler.warmup_updates; `ehft train --dry-run` prints them)" % name,
            plans[name], lr[name])
    out = {}
    for name, (about, plan, rate) in sorted(methods.items()):
        body = {"model": {"peft": plan}}
        if rate is not None:
            body["optimization"] = {"lr": [rate]}
        out[name] = (about, body)
    return out


def task_settings():
    """name -> (title, best metric, lr, batch size, updates, warmup, max epochs)."""
    from ehft_plugin.data.task_table import get_task
    from ehft_plugin.train.recipes import FAIRSEQ_GLUE

    out = {}
    for name, (lr, batch, updates, warmup) in sorted(FAIRSEQ_GLUE.items()):
        out[name] = ("%s (GLUE), fairseq's RoBERTa recipe (examples/roberta/config/"
                     "finetuning/%s.yaml)" % (name.upper(), name), get_task(name).metrics[0],
                     lr, batch, updates, warmup, 10)
    s = SUPERGLUE
    for name, examples in sorted(SUPERGLUE_TRAIN_EXAMPLES.items()):
        updates = s["epochs"] * -(-examples // s["batch_size"])
        out[name] = ("%s (SuperGLUE): no fairseq recipe; batch %d, lr %g, %d epochs of %d "
                     "examples, %d%% warmup" % (name.upper(), s["batch_size"], s["lr"],
                                                s["epochs"], examples,
                                                round(100 * s["warmup_share"])),
                     get_task(name).metrics[0], s["lr"], s["batch_size"], updates,
                     round(s["warmup_share"] * updates), s["epochs"])
    return out


def recipe_config(settings):
    """recipe/<task>.yaml: the task's own settings, laid over ehft.yaml."""
    from omegaconf import OmegaConf

    title, metric, lr, batch, updates, warmup, epochs = settings
    return "# @package _global_\n# %s\n# Written by scripts/hydra_configs.py: edit that, not this file.\n" % title + _yaml(OmegaConf.create({
        "checkpoint": {"best_checkpoint_metric": metric},
        "dataset": {"batch_size": batch, "max_tokens": 4400},
        "optimization": {"lr": [lr], "max_update": updates, "max_epoch": epochs,
                         "clip_norm": 0.0},
        "lr_scheduler": {"warmup_updates": warmup},  # total_num_update: max_update
    }))


def task_config(name, settings):
    """<task>.yaml, the --config-name. fairseq's schema is merged into the primary config
    (its `task: null` ...), so the primary comes first and everything else after it."""
    from omegaconf import OmegaConf

    body = OmegaConf.create({"defaults": ["_self_", "ehft", {"model": "roberta_ehft_large"},
                                          {"recipe": name}, {"method": "ft"}]})
    return USAGE.format(title=settings[0], name=name) + _yaml(body)


def files():
    """relative path -> text of every file under examples/config."""
    import ehft_plugin  # noqa: F401  (registers what the dataclasses import)

    generated = "# Written by scripts/hydra_configs.py: edit that, not this file.\n"
    out = {"ehft.yaml": "# @package _global_\n" + generated
                        + "# Every option of the plugin's task, criterion and optimizer.\n"
                        + _yaml(plugin_sections())}
    for arch in ("roberta_ehft_base", "roberta_ehft_large"):
        out["model/%s.yaml" % arch] = "# @package _group_\n" + generated + _yaml(
            model_config(arch))
    for name, (about, body) in method_configs().items():
        from omegaconf import OmegaConf

        out["method/%s.yaml" % name] = ("# @package _global_\n%s# %s\n" % (generated, about)
                                        + _yaml(OmegaConf.create(body)))
    for name, settings in task_settings().items():
        out["%s.yaml" % name] = task_config(name, settings)
        out["recipe/%s.yaml" % name] = recipe_config(settings)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    wanted = files()
    if args.check:
        stale = []
        for rel, text in wanted.items():
            path = os.path.join(args.out, rel)
            if not os.path.isfile(path) or open(path).read() != text:
                stale.append(rel)
        present = {os.path.relpath(os.path.join(d, f), args.out)
                   for d, _, names in os.walk(args.out) for f in names}
        stale += sorted(present - set(wanted))
        if stale:
            print("examples/config is stale (%s); run python scripts/hydra_configs.py"
                  % ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    for rel, text in wanted.items():
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    print("wrote %d files under %s" % (len(wanted), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
