"""Errors of a training run (raised by ``trainer.train`` and the stages it runs)."""


class RunExistsError(FileExistsError):
    """The run directory holds a finished or interrupted run and no --overwrite/--resume was given."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or Inf."""
