"""`tinynet`: the command group. Each subcommand lives in its own module of
this package and is registered in COMMANDS."""
import click

import tinynet
from cli.data import data
from cli.inspect import inspect
from cli.plot import plot
from cli.profile import profile
from cli.train import train
from cli.tune import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tinynet.__version__, prog_name="tinynet")
def main():
    """tinynet: second-order optimization of deep nets, every matrix explicit.

    Start with `tinynet train` (SGD on the MNIST autoencoder of the thesis,
    MNIST ships with the package), then `tinynet plot runs/*`; `tinynet tune` searches hyperparameters."""


COMMANDS = [train, tune, plot, data, inspect, profile]
for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
