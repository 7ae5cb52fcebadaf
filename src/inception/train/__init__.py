"""Training: data in, a run directory out.

One module per concern, each importing only those above it in this list:

- `config`: `TrainConfig`, the whole of a run's settings, `RunError` and `Diverged`;
- `loaders`: the data as reproducible batches, in memory or from DataLoader workers;
- `optim`: section 6's SGD, learning-rate schedules and parameter averaging;
- `engine`: the training step loop and evaluation, with few reads from the device;
- `rundir`: the run directory's files, written atomically;
- `checkpoint`: `TrainState` and the checkpoints that resume a run at any step;
- `run`: `train()`, which puts them together, with resume, signals and DDP.
"""

from inception.train.config import Diverged, RunError, TrainConfig
from inception.train.run import Interrupted, RunResult, train

__all__ = ["Diverged", "Interrupted", "RunError", "RunResult", "TrainConfig", "train"]
