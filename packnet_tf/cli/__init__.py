"""The `packnet-tf` command: configs, resumable runs, reports and the demo.

`packnet_tf.cli.main.main` is the console script; `packnet_tf.cli.runner.train`
runs a `RunConfig` from Python.

Layer 10, the top: may import any other part of the package.
"""
