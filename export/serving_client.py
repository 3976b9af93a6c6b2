#!/usr/bin/env python3
"""Queries TF Serving for one task's predictions, over REST or gRPC.

    # per-task layout: one served model per task, signature serving_default
    python serving_client.py --model cars batch.npy
    # multi layout: one served model, one signature per task
    python serving_client.py --model vision --signature task_cars batch.npy
    python serving_client.py --grpc localhost:8500 --model cars batch.npy

REST needs only NumPy and the standard library; gRPC needs
`pip install tensorflow-serving-api` (which brings TensorFlow for
`make_tensor_proto`). The request and the reply formats are in README.md.
"""

import argparse
import json
import sys
import urllib.request

import numpy as np

#: Names of the exported signatures' input and output.
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"


def rest_request(host, model, batch, signature="serving_default",
                 version=None):
    """The URL and JSON body of a TF Serving REST predict request.

    Args:
        host: `host:port` of the REST API (TF Serving's default port 8501).
        model: the served model's name (the task, or the multi model).
        batch: a NumPy batch of inputs.
        signature: `serving_default` or `task_<name>`.
        version: a version to pin, or None for the served one.

    Returns:
        `(url, body)`, body a JSON string in the columnar ("inputs") format.
    """
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{int(version)}"
    body = {"signature_name": signature,
            "inputs": {INPUT_NAME: np.asarray(batch).tolist()}}
    return f"http://{host}{path}:predict", json.dumps(body)


def rest_predict(host, model, batch, signature="serving_default",
                 version=None, timeout=30):
    """Sends a REST predict request; returns the outputs as an array."""
    url, body = rest_request(host, model, batch, signature, version)
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return parse_rest_reply(reply.read())


def parse_rest_reply(payload):
    """The outputs of a REST predict reply (columnar format) as an array."""
    outputs = json.loads(payload)["outputs"]
    if isinstance(outputs, dict):
        outputs = outputs[OUTPUT_NAME]
    return np.asarray(outputs, dtype=np.float32)


def grpc_request(model, batch, signature="serving_default", version=None):
    """A `tensorflow.serving.PredictRequest` for one batch.

    Args:
        model: the served model's name.
        batch: a NumPy batch of inputs.
        signature: `serving_default` or `task_<name>`.
        version: a version to pin, or None.

    Returns:
        The request proto.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(batch))
    return request


def grpc_predict(target, model, batch, signature="serving_default",
                 version=None, timeout=30):
    """Sends a gRPC predict request to `target` (`host:port`, default 8500)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    reply = stub.Predict(grpc_request(model, batch, signature, version),
                         timeout)
    return tf.make_ndarray(reply.outputs[OUTPUT_NAME])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", help="a .npy batch")
    parser.add_argument("--model", required=True,
                        help="served model name (task, or multi model)")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--version", type=int)
    parser.add_argument("--rest", default="localhost:8501",
                        help="REST host:port (default localhost:8501)")
    parser.add_argument("--grpc", help="use gRPC at host:port (e.g. :8500)")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    batch = np.load(args.inputs).astype(np.float32)
    if args.grpc:
        outputs = grpc_predict(args.grpc, args.model, batch, args.signature,
                               args.version)
    else:
        outputs = rest_predict(args.rest, args.model, batch, args.signature,
                               args.version)
    for index, row in enumerate(outputs.reshape(len(batch), -1)):
        best = np.argsort(-row, kind="stable")[:args.top_k]
        print(index, "  ".join(f"{i} ({row[i]:.4f})" for i in best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
