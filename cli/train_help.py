"""`tinynet train`'s help grouped by method, each method's resolved defaults,
and the messages that name options by their real flags.

A method option of cli/train.py's METHOD_OPTIONS belongs to every optimizer
whose __init__ takes a parameter of that name (--amortize is the parameter T,
--acp-alpha is alpha); `tinynet.optim.hyperparameters` gives its default.
"""
import inspect

import click

from tinynet.optim import OPTIMIZERS, hyperparameters

SCHEDULE_FLAGS = ("schedule_gamma", "schedule_period")    # CLI-only: they build SGD's schedule
# a method's own flag for a parameter whose generic flag means something else
# (--curvature is the Newton family's): the generic one is left out of its section
ALIASES = {"kfac": {"kfac_curvature": "curvature"},
           "ubp": {"ubp_curvature": "curvature", "ubp_mode": "mode", "ubp_clip": "clip"}}
# what a shared flag means for a method whose meaning the flag's help does not give
MEANING = {("kfac", "rho"): "decay of the running averages of the Kronecker factors"}


def method_flags(optimizer, method_params):
    """{python name: flag} of the method options `optimizer` takes (lr first)."""
    takes = set(inspect.signature(OPTIMIZERS[optimizer].__init__).parameters)
    if "schedule" in takes:
        takes |= set(SCHEDULE_FLAGS)
    hidden = set(ALIASES.get(optimizer, {}).values())
    out = {"lr": "--lr"}
    out.update({p.name: p.opts[0] for p in method_params if p.name in takes and p.name not in hidden})
    return out


def _resolved(optimizer, hp):
    """hyperparameters() with each alias flag showing the parameter it sets."""
    hp = dict(hp)
    for alias, target in ALIASES.get(optimizer, {}).items():
        if hp.get(alias) is None and target in hp:
            hp[alias] = hp[target]
    return hp


def check_method_options(optimizer, names, method_params):
    """A usage error naming the flags `optimizer` does not take, and those it does."""
    flags = method_flags(optimizer, method_params)
    by_name = {p.name: p.opts[0] for p in method_params}
    bad = [by_name.get(n, "--" + n.replace("_", "-")) for n in names if n not in flags]
    if bad:
        raise click.UsageError(f"optimizer {optimizer!r} does not take {', '.join(bad)}; its options: "
                               f"{', '.join(flags.values())} (tinynet train --optimizer {optimizer} "
                               f"--show-defaults lists them with their values)")


def _short_help(p, optimizer):
    """The option's help for one method: "[sgd] heavy-ball momentum" -> "heavy-ball
    momentum"; "[rmsprop, adam: added to the root; kfac: damping]" -> that
    method's part."""
    if (optimizer, p.name) in MEANING:
        return MEANING[optimizer, p.name]
    text = p.help or ""
    if not text.startswith("["):
        return text
    inside, rest = text[1:text.index("]")], text[text.index("]") + 1:].strip()
    if ":" not in inside:
        return rest
    for part in inside.split(";"):
        names, _, meaning = part.partition(":")
        if optimizer in [n.strip() for n in names.split(",")]:
            return (meaning.strip() + (" " + rest if rest else "")).strip()
    return rest


def _value(v):
    return "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def show_defaults(optimizer, lr, explicit, method_params):
    """The lines of `--show-defaults`: each option's flag and the value a run
    with these options would use."""
    hp = _resolved(optimizer, hyperparameters(optimizer, lr, explicit))
    flags = method_flags(optimizer, method_params)
    lines = [f"{optimizer} ({OPTIMIZERS[optimizer].__name__}): the settings of a run with these options"]
    for name, flag in flags.items():
        if name in hp:
            mark = "  (set)" if name in explicit or (name == "lr" and lr is not None) else ""
            lines.append(f"  {flag:<22} {_value(hp[name])}{mark}")
    aliased = set(ALIASES.get(optimizer, {}).values())
    hidden = [k for k in hp if k not in flags and k not in ("seed",) and k not in aliased]
    if hidden:
        lines.append("  Python-only parameters: " + ", ".join(f"{k}={_value(hp[k])}" for k in hidden))
    return lines


class TrainCommand(click.Command):
    """Help in sections: the run options, then one section per optimizer with
    the flags it takes and their defaults for that method."""

    method_names = ()        # set by cli/train.py: the python names of METHOD_OPTIONS

    def format_options(self, ctx, formatter):
        params = self.get_params(ctx)
        method = [p for p in params if p.name in self.method_names]
        run = [p for p in params if p.name not in self.method_names]
        rows = [r for r in (p.get_help_record(ctx) for p in run) if r]
        with formatter.section("Run options"):
            formatter.write_dl(rows)
        for name in OPTIMIZERS:
            hp = _resolved(name, hyperparameters(name))
            flags = method_flags(name, method)
            rows = []
            for p in method:
                if p.name in flags and p.name != "lr":
                    d = hp.get(p.name)
                    rows.append((p.opts[0] + ("" if p.is_flag else f" {p.type.name.upper()}"),
                                 _short_help(p, name) + (f"  [default: {_value(d)}]" if p.name in hp else "")))
            title = f"{name} ({OPTIMIZERS[name].__name__}; --lr default {_value(hp['lr'])})"
            with formatter.section(title):
                if rows:
                    formatter.write_dl(rows)
                else:
                    formatter.write_text("no options besides --lr")
