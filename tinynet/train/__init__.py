"""Training runs: `train(net, optimizer, data, config) -> TrainResult`.

Where each part lives:
  loop.py        train(): steps, stop criteria, the order of events
  config.py      TrainConfig, TrainResult
  rundir.py      the run folder: its files, the lock, checkpoint rotation
  files.py       atomic writes, checkpoints, metrics.csv
  divergence.py  when a run has diverged (bounded and unbounded losses)
  signals.py     SIGINT / SIGTERM / SIGHUP
  evaluation.py  evaluate(): loss and error rate in eval mode
"""
from tinynet.train.config import TrainConfig, TrainResult
from tinynet.train.divergence import DivergenceMonitor
from tinynet.train.evaluation import evaluate
from tinynet.train.files import (BASE_COLUMNS, CheckpointError, MetricsWriter, RunFileError, _flatten,
                                 _unflatten, load_checkpoint, read_metrics, save_checkpoint)
from tinynet.train.loop import train
from tinynet.train.rundir import (CHECKPOINT, CONFIG, LAST_GOOD, LOCK, METRICS, RESULT, RunDir,
                                  RunExistsError, RunLockedError)

__all__ = ["train", "TrainConfig", "TrainResult", "evaluate", "DivergenceMonitor", "RunDir",
           "RunExistsError", "RunLockedError", "RunFileError", "CheckpointError", "MetricsWriter",
           "load_checkpoint", "save_checkpoint", "read_metrics", "BASE_COLUMNS",
           "CONFIG", "METRICS", "CHECKPOINT", "LAST_GOOD", "RESULT", "LOCK"]
