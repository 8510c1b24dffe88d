"""`roberta_ehft`'s dataclass configuration, for fairseq's hydra route.

fairseq's RoBERTa declares its options with legacy `add_args`; the dataclass holds those and
the plugin's, read from the same `add_args` so the two can never disagree (a missing field
would be dropped from a checkpoint's configuration). Every field is Optional and
keeps the default written in add_args; where none is written it is None, so the architecture
functions (`roberta_ehft_base/large`) still fill the sizes, as they do for `fairseq-train
--arch`. Switches too: fairseq parses model options with argparse.SUPPRESS, so an option not
given is absent, not False, and the architecture decides (RoBERTa's `layernorm_embedding`
is on unless a config says otherwise).
"""

import argparse
from dataclasses import field, make_dataclass
from typing import Optional

from fairseq.dataclass import FairseqDataclass


def _field(action):
    kind = action.type or str
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        kind = bool
    help_text = (action.help or "") + (" (one of: %s)" % ", ".join(map(str, action.choices))
                                       if action.choices else "")
    default = None if action.default is argparse.SUPPRESS else action.default
    return action.dest, Optional[kind], field(default=default, metadata={"help": help_text})


def dataclass_from_add_args(name, add_args):
    """A FairseqDataclass with one field per option `add_args` declares, and `arch`: readers
    of a checkpoint's configuration find the architecture where argparse put it."""
    parser = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    add_args(parser)  # as fairseq parses model options: a default only where one is written
    fields = [("arch", Optional[str], field(default=None, metadata={"help": "architecture"}))]
    fields += [_field(a) for a in parser._actions if a.dest != argparse.SUPPRESS]
    return make_dataclass(name, fields, bases=(FairseqDataclass,))
