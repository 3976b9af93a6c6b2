"""Named errors, so callers can tell a lifecycle mistake from a bad value."""


class TaskStateError(RuntimeError):
    """A lifecycle method was called in a state that does not allow it."""


class CapacityError(RuntimeError):
    """The network has no free weights left for a new task."""


class UnsupportedLayerError(ValueError):
    """A trunk holds a layer with weights that cannot be packed."""


class FusedUpdateError(RuntimeError):
    """XLA could not compile the training step's fused update (usually an
    optimizer with an operation XLA lacks); `fused_update=False` avoids it.

    Attributes:
        problem: what failed, without the fix (callers that offer the fix
            another way, such as a run config, word their own).
    """

    def __init__(self, problem, fix):
        self.problem = problem
        super().__init__(f"{problem} Fix: {fix}")
