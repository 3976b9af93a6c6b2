"""The TF Serving `models.config` that serves every exported model at once."""

import os

from packnet_tf.export.checks import MODELS_CONFIG, model_dirs
from packnet_tf.io import atomic


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def models_config_text(base_dir, names, base_path=None):
    """A `model_config_list` text proto serving `names` from `base_dir`.

    Args:
        base_dir: the export directory (`<base_dir>/<name>/<version>/`).
        names: the model folders to serve.
        base_path: the export directory as the server sees it (e.g.
            `/models` inside a container); default `base_dir` itself.

    Returns:
        The text of a `tensorflow.serving.ModelServerConfig`.
    """
    root = base_dir if base_path is None else base_path
    lines = ["model_config_list {"]
    for name in names:
        lines += [
            "  config {",
            f"    name: {_quote(name)}",
            f"    base_path: {_quote(root.rstrip('/') + '/' + name)}",
            '    model_platform: "tensorflow"',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(base_dir, base_path=None):
    """Writes `<base_dir>/models.config` listing every exported model.

    The file is written atomically (`packnet_tf.io.atomic`: a temporary file
    beside it, fsynced and renamed), so a server never reads half of it.

    Args:
        base_dir: an export directory.
        base_path: the export directory as the server sees it (default:
            `base_dir`, absolute).

    Returns:
        The path of the config.
    """
    base_dir = os.path.abspath(base_dir)
    text = models_config_text(base_dir, model_dirs(base_dir), base_path)
    target = os.path.join(base_dir, MODELS_CONFIG)
    atomic.write_text(target, text)
    return target
