"""packnet_tf: many tasks in one Keras network with PackNet.

Mallya & Lazebnik, "PackNet: Adding Multiple Tasks to a Single Network by
Iterative Pruning", CVPR 2018.
"""

from packnet_tf import export
from packnet_tf import layers
from packnet_tf.capacity import CapacityReport
from packnet_tf.contract import InputContract
from packnet_tf.convert import convert
from packnet_tf.errors import CapacityError
from packnet_tf.errors import TaskStateError
from packnet_tf.errors import UnsupportedLayerError
from packnet_tf.gradual import GradualPruning
from packnet_tf.model import PackNetModel
from packnet_tf.planning import prune_fraction_for
from packnet_tf.task import TaskInfo
from packnet_tf.training import train_task

__version__ = "0.1.0"

__all__ = [
    "CapacityError",
    "CapacityReport",
    "GradualPruning",
    "InputContract",
    "PackNetModel",
    "TaskInfo",
    "TaskStateError",
    "UnsupportedLayerError",
    "convert",
    "export",
    "layers",
    "prune_fraction_for",
    "train_task",
]
