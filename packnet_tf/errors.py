"""Named errors, so callers can tell a lifecycle mistake from a bad value."""


class TaskStateError(RuntimeError):
    """A lifecycle method was called in a state that does not allow it."""


class CapacityError(RuntimeError):
    """The network has no free weights left for a new task."""


class UnsupportedLayerError(ValueError):
    """A trunk holds a layer with weights that cannot be packed."""
