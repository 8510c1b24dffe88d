"""The PEFT plan: which parameter-efficient method each encoder layer gets.

Grammar (`--peft`):

    plan     := stratum ("," stratum)*  |  shorthand
    stratum  := layers ":" method ("+" method)*
    layers   := N | N "-" M | "emb"            (0-based, inclusive)
    method   := frozen | full | bitfit[(targets)] | lora[(args)] | prefix[(args)]
              | mixout[(args)]

    bitfit(T)  or bitfit(targets=T)        T: '+'-joined targets (default all)
    lora(r=8,alpha=16,dropout=0,targets=q+v)
    prefix(len=16,mlp=0)                   mlp > 0: reparameterisation MLP hidden size
    mixout(p=0.9,targets=all)              the layer trains fully, its target weights mixed
                                           with their start values (Lee et al. 2020)

Bias targets: q k v out fc1 fc2 attn_ln ffn_ln, and the groups attn (q+k+v+out+attn_ln),
ffn (fc1+fc2+ffn_ln), all. LoRA targets: q k v out fc1 fc2, and attn (q+k+v+out), ffn, all.
Every layer needs exactly one stratum; embeddings are frozen unless `emb:full` is given.
`full+lora(...)` / `full+prefix(...)` train the whole layer together with those modules (the
stage 2 of EH-FT's -reserve variants). mixout stands alone in its stratum.

Shorthands: full (plain finetuning, embeddings included), head (linear probing: only the
head trains), bitfit, lora, prefix, mixout (every layer and the embeddings train, as
full) and any method with arguments, e.g. lora(r=8,targets=q+k+v),
prefix(len=32), bitfit(attn) (that method on every layer), topk-K (top K layers full,
the rest frozen; EH-FT paper Table 1), spafit-A-B-I / spafit-A-B-II (SPAFIT: layers 1..A
frozen, A+1..B BitFit on all sub-layers, B+1..L LoRA r=64 alpha=128 on q,k,v (I) or
q,k,v,out (II) plus BitFit on the feed-forward sub-layers; numbers are 1-based layer counts
as in the SPAFIT paper).

`parse_plan(text, num_layers)` is the only parser; `format_plan(plan)` writes the canonical
explicit form, and `parse_plan(format_plan(p), n) == p`.

Longer than ~300 lines because the grammar's parser and its formatter are one definition:
kept together, the round trip above stays visibly the same grammar.
"""

import re
from dataclasses import dataclass, fields
from typing import Tuple

from ..errors import EhftError

BIAS_TARGETS = ("q", "k", "v", "out", "fc1", "fc2", "attn_ln", "ffn_ln")
LORA_TARGETS = ("q", "k", "v", "out", "fc1", "fc2")
_BIAS_GROUPS = {"attn": ("q", "k", "v", "out", "attn_ln"), "ffn": ("fc1", "fc2", "ffn_ln"),
                "all": BIAS_TARGETS}
_LORA_GROUPS = {"attn": ("q", "k", "v", "out"), "ffn": ("fc1", "fc2"), "all": LORA_TARGETS}


class PlanError(EhftError, ValueError):
    """A --peft value that does not describe a valid plan."""


@dataclass(frozen=True)
class Frozen:
    name = "frozen"


@dataclass(frozen=True)
class Full:
    name = "full"


@dataclass(frozen=True)
class BitFit:
    """Ben Zaken et al. 2022: train bias terms only."""
    targets: Tuple[str, ...] = BIAS_TARGETS
    name = "bitfit"


@dataclass(frozen=True)
class LoRA:
    """Hu et al. 2022: W + (alpha/r) * B A on the target projections."""
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: Tuple[str, ...] = ("q", "v")
    name = "lora"


@dataclass(frozen=True)
class Prefix:
    """Li & Liang 2021: trainable key/value prefixes in every attention layer."""
    len: int = 16
    mlp: int = 0
    name = "prefix"


@dataclass(frozen=True)
class Mixout:
    """Lee et al. 2020: full training of the layer; in training each target weight matrix is
    mixed with its start value (probability p per input unit), see peft/mixout.py."""
    p: float = 0.9
    targets: Tuple[str, ...] = ("q", "k", "v", "out", "fc1", "fc2")
    name = "mixout"


METHODS = {m.name: m for m in (Frozen, Full, BitFit, LoRA, Prefix, Mixout)}


@dataclass(frozen=True)
class Stratum:
    first: int
    last: int
    methods: Tuple

    @property
    def layers(self):
        return range(self.first, self.last + 1)


@dataclass(frozen=True)
class Plan:
    strata: Tuple[Stratum, ...]
    num_layers: int
    train_embeddings: bool = False

    def methods_for_layer(self, layer: int) -> Tuple:
        for stratum in self.strata:
            if stratum.first <= layer <= stratum.last:
                return stratum.methods
        raise IndexError("layer %d is not in the plan" % layer)

    def method(self, layer: int, kind):
        """The method of type `kind` for `layer`, or None."""
        return next((m for m in self.methods_for_layer(layer) if isinstance(m, kind)), None)


# ---- parsing ------------------------------------------------------------------

def _split_top_level(text: str, sep: str):
    """Split on `sep` outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def _targets(value: str, allowed, groups, method):
    out = []
    for name in value.split("+"):
        name = name.strip()
        if name in groups:
            out.extend(groups[name])
        elif name in allowed:
            out.append(name)
        else:
            raise PlanError("unknown %s target %r; expected: %s" % (
                method, name, ", ".join(list(allowed) + list(groups))))
    return tuple(t for t in allowed if t in out)  # canonical order, no repeats


# Each number's valid range, as (test, what the error says): `lora r=0: r must be an integer >= 1`.
_RANGES = {
    ("lora", "r"): (lambda v: v >= 1, "an integer >= 1"),
    ("lora", "alpha"): (lambda v: v > 0, "a number > 0"),
    ("lora", "dropout"): (lambda v: 0 <= v < 1, "a number with 0 <= dropout < 1"),
    ("prefix", "len"): (lambda v: v >= 1, "an integer >= 1"),
    ("prefix", "mlp"): (lambda v: v >= 0, "an integer >= 0 (0: no MLP, else its hidden size)"),
    ("mixout", "p"): (lambda v: 0 <= v < 1, "a number with 0 <= p < 1"),
}


def _number(method, key, value, kind):
    ok, expected = _RANGES[(method, key)]
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not ok(number):
        raise PlanError("%s %s=%s: %s must be %s" % (method, key, value, key, expected))
    return number


def _method(text: str):
    match = re.fullmatch(r"([a-z_]+)\s*(?:\((.*)\))?", text.strip())
    if not match:
        raise PlanError("cannot read method %r; expected name or name(key=value,...)" % text)
    name, args = match.group(1), match.group(2)
    if name not in METHODS:
        raise PlanError("unknown method %r; expected one of: %s" % (name, ", ".join(METHODS)))
    cls = METHODS[name]
    kwargs = {}
    for arg in _split_top_level(args, ",") if args and args.strip() else []:
        key, eq, value = arg.partition("=")
        if not eq:  # bitfit(ffn): the positional argument is the target list
            key, value = "targets", arg
        key, value = key.strip(), value.strip()
        known = [f.name for f in fields(cls)]
        if key not in known:
            raise PlanError("%s has no argument %r; expected: %s"
                            % (name, key, ", ".join(known) or "none"))
        if key == "targets":
            allowed, groups = (BIAS_TARGETS, _BIAS_GROUPS) if cls is BitFit else (LORA_TARGETS,
                                                                                   _LORA_GROUPS)
            kwargs[key] = _targets(value, allowed, groups, name)
        else:
            kind = {f.name: f.type for f in fields(cls)}[key]
            kwargs[key] = _number(name, key, value, {"int": int, "float": float}.get(kind, kind))
    return cls(**kwargs)


def _layers(text: str, num_layers: int):
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if not match:
        raise PlanError("cannot read layers %r; expected N, N-M or emb" % text)
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if first > last:
        raise PlanError("layers %s: the first layer is after the last" % text)
    if last >= num_layers:
        raise PlanError("layers %s: layer %d is out of range; this model has layers 0-%d"
                        % (text, last, num_layers - 1))
    return first, last


def _stratum_methods(text: str):
    methods = tuple(_method(m) for m in _split_top_level(text, "+"))
    kinds = [type(m) for m in methods]
    if len(set(kinds)) != len(kinds):
        raise PlanError("%r names a method twice" % text)
    if len(methods) > 1 and Frozen in kinds:
        raise PlanError("%r: frozen cannot be combined with other methods" % text)
    if len(methods) > 1 and Mixout in kinds:
        raise PlanError("%r: mixout trains the whole layer and cannot be combined with other "
                        "methods" % text)
    if Full in kinds and BitFit in kinds:
        raise PlanError("%r: full already trains every bias; bitfit adds nothing" % text)
    return methods


def _explicit(text: str, num_layers: int) -> Plan:
    strata, train_embeddings = [], False
    for part in _split_top_level(text, ","):
        layers, colon, methods = part.partition(":")
        if not colon:
            raise PlanError("stratum %r: expected LAYERS:METHODS, e.g. 0-3:frozen" % part)
        if layers.strip() == "emb":
            if methods.strip() not in ("full", "frozen"):
                raise PlanError("emb:%s: embeddings are either full or frozen" % methods.strip())
            train_embeddings = methods.strip() == "full"
            continue
        first, last = _layers(layers, num_layers)
        strata.append(Stratum(first, last, _stratum_methods(methods)))
    strata.sort(key=lambda s: s.first)
    covered = [0] * num_layers
    for s in strata:
        for layer in s.layers:
            covered[layer] += 1
    overlap = [i for i, c in enumerate(covered) if c > 1]
    if overlap:
        raise PlanError("layer %d is in more than one stratum" % overlap[0])
    missing = [i for i, c in enumerate(covered) if c == 0]
    if missing:
        raise PlanError("%s %s no method; every layer 0-%d needs one (N-M:frozen to freeze)"
                        % ("layer" if len(missing) == 1 else "layers", _ranges(missing)
                           + (" has" if len(missing) == 1 else " have"), num_layers - 1))
    return Plan(tuple(strata), num_layers, train_embeddings)


def _ranges(layers):
    out, start = [], layers[0]
    for prev, cur in zip(layers, layers[1:] + [None]):
        if cur != prev + 1:
            out.append(str(start) if start == prev else "%d-%d" % (start, prev))
            start = cur
    return ",".join(out)


def _shorthand(name: str, n: int):
    every = lambda method: "0-%d:%s" % (n - 1, method)  # noqa: E731
    simple = {"full": every("full") + ",emb:full", "head": every("frozen"),
              "bitfit": every("bitfit"), "lora": every("lora"), "prefix": every("prefix"),
              "mixout": every("mixout") + ",emb:full"}
    if name in simple:
        return simple[name]
    topk = re.fullmatch(r"topk-(\d+)", name)
    if topk:
        k = int(topk.group(1))
        if not 1 <= k <= n:
            raise PlanError("%s: K must be between 1 and %d" % (name, n))
        return ("0-%d:frozen," % (n - k - 1) if k < n else "") + "%d-%d:full" % (n - k, n - 1)
    spafit = re.fullmatch(r"spafit-(\d+)-(\d+)-(I|II)", name)
    if spafit:
        a, b, variant = int(spafit.group(1)), int(spafit.group(2)), spafit.group(3)
        if not 0 <= a <= b <= n:
            raise PlanError("%s: expected 0 <= A <= B <= %d layers" % (name, n))
        lora_targets = "q+k+v" if variant == "I" else "q+k+v+out"
        groups = [(0, a, "frozen"), (a, b, "bitfit(all)"),
                  (b, n, "lora(r=64,alpha=128,targets=%s)+bitfit(ffn)" % lora_targets)]
        return ",".join("%d-%d:%s" % (lo, hi - 1, m) for lo, hi, m in groups if hi > lo)
    return None


SHORTHANDS = ("full", "head", "bitfit", "lora", "prefix", "topk-K", "spafit-A-B-I",
              "spafit-A-B-II", "mixout", "METHOD(ARGS) such as lora(r=8,targets=q+k+v)")


def parse_plan(text: str, num_layers: int) -> Plan:
    """The plan for a model with `num_layers` encoder layers (pure: no model needed)."""
    if num_layers <= 0:
        raise PlanError("num_layers must be > 0")
    if text is not None and not isinstance(text, str):  # model.peft=5 from a config
        raise PlanError("--peft %r (%s): expected a plan (a string) such as 'bitfit' or "
                        "'0-5:frozen,6-11:lora(r=8)'" % (text, type(text).__name__))
    text = (text or "").strip()
    if not text:
        raise PlanError("--peft is empty; expected a plan or one of: %s" % ", ".join(SHORTHANDS))
    expanded = _shorthand(text, num_layers)
    if expanded is None and ":" not in text and re.fullmatch(r"[a-z_]+\s*\(.*\)", text):
        expanded = "0-%d:%s" % (num_layers - 1, text)  # lora(r=4): that method on every layer
        if text.startswith("mixout"):  # finetuning with mixout: the embeddings train too
            expanded += ",emb:full"
    if expanded is None and ":" not in text:
        raise PlanError("unknown --peft %r; expected LAYERS:METHODS strata or one of: %s"
                        % (text, ", ".join(SHORTHANDS)))
    return _explicit(expanded or text, num_layers)


# ---- formatting -----------------------------------------------------------------

def _format_targets(targets, allowed, groups):
    for group in ("all", "attn", "ffn"):
        if tuple(targets) == tuple(t for t in allowed if t in groups[group]):
            return group
    return "+".join(targets)


def _format_method(m) -> str:
    if isinstance(m, (Frozen, Full)):
        return m.name
    args = []
    for f in fields(m):
        value = getattr(m, f.name)
        if f.name == "targets":
            allowed, groups = (BIAS_TARGETS, _BIAS_GROUPS) if isinstance(m, BitFit) else (
                LORA_TARGETS, _LORA_GROUPS)
            value = _format_targets(value, allowed, groups)
        args.append("%s=%s" % (f.name, "%g" % value if isinstance(value, float) else value))
    return "%s(%s)" % (m.name, ",".join(args))


def format_plan(plan: Plan) -> str:
    """Canonical explicit form: every argument written out."""
    parts = ["%s:%s" % ("%d-%d" % (s.first, s.last) if s.first != s.last else str(s.first),
                        "+".join(_format_method(m) for m in s.methods)) for s in plan.strata]
    if plan.train_embeddings:
        parts.append("emb:full")
    return ",".join(parts)
