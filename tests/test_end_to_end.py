"""End to end on real MNIST through the installed command (slow: run by .ci/run
with `pytest -m slow`): the README's main command and plain SGD both lower the
autoencoder's training loss well below its starting value."""
import csv

import pytest
from click.testing import CliRunner

from cli.main import main


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "ubp"])
def test_autoencoder_training_loss_decreases(tmp_path, optimizer):
    out = tmp_path / optimizer
    res = CliRunner().invoke(main, ["train", "--model", "mnist-autoencoder", "--optimizer", optimizer,
                                    "--steps", "120", "--eval-every", "60", "--eval-subset", "2000",
                                    "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert int(rows[-1]["step"]) == 120
    # the initial reconstruction error is ~190 per image; the mean image gives ~53
    assert last < 0.35 * first, (first, last)
