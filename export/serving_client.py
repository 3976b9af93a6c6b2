#!/usr/bin/env python3
"""Queries TF Serving for one task's predictions, over REST or gRPC.

    # image files, sent as they are (base64 in REST) to task_<name>_images
    python serving_client.py --model cars --task cars photo1.jpg photo2.png
    # multi layout: one served model, one set of signatures per task
    python serving_client.py --model vision --task cars photo.jpg
    python serving_client.py --grpc localhost:8500 --model cars --task cars photo.jpg
    # a .npy batch of trunk-ready floats to task_<name> (or serving_default)
    python serving_client.py --model cars batch.npy

REST needs only NumPy and the standard library; gRPC needs
`pip install tensorflow-serving-api` (which brings TensorFlow for
`make_tensor_proto`). The request and the reply formats are in README.md.
"""

import argparse
import base64
import json
import sys
import urllib.request

import numpy as np

#: Input names of the exported signatures: float batch, encoded images.
INPUT_NAME = "inputs"
IMAGES_NAME = "image_bytes"
#: Output names every exported signature returns.
OUTPUT_NAME = "outputs"
CLASS_NAMES = "class_names"
SCORES = "scores"


def images_signature(task):
    """The signature that reads encoded images for `task`."""
    return f"task_{task}_images"


def _url(host, model, version):
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return f"http://{host}{path}:predict"


def rest_request(host, model, batch, signature="serving_default",
                 version=None):
    """The URL and JSON body of a REST predict request for a float batch.

    Args:
        host: `host:port` of the REST API (TF Serving's default port 8501).
        model: the served model's name (the task, or the multi model).
        batch: a NumPy batch of trunk-ready inputs.
        signature: `serving_default` or `task_<name>`.
        version: a version to pin, or None for the served one.

    Returns:
        `(url, body)`, body a JSON string in the columnar ("inputs") format.
    """
    body = {"signature_name": signature,
            "inputs": {INPUT_NAME: np.asarray(batch).tolist()}}
    return _url(host, model, version), json.dumps(body)


def rest_images_request(host, model, images, signature, version=None):
    """The URL and JSON body of a REST predict request for image files.

    TF Serving reads a JSON object `{"b64": "<base64>"}` as the bytes it
    encodes: each file's contents go as one such string.

    Args:
        host: `host:port` of the REST API.
        model: the served model's name.
        images: a list of encoded images (JPEG, PNG, ... file contents).
        signature: `task_<name>_images`.
        version: a version to pin, or None.

    Returns:
        `(url, body)`.
    """
    encoded = [{"b64": base64.b64encode(data).decode("ascii")}
               for data in images]
    body = {"signature_name": signature, "inputs": {IMAGES_NAME: encoded}}
    return _url(host, model, version), json.dumps(body)


def _post(url, body, timeout):
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return reply.read()


def rest_predict(host, model, batch, signature="serving_default",
                 version=None, timeout=30):
    """Sends a REST predict request; returns the logits as an array."""
    url, body = rest_request(host, model, batch, signature, version)
    return parse_rest_reply(_post(url, body, timeout))


def rest_classify(host, model, images, signature, version=None,
                  timeout=30):
    """Sends image files over REST; returns `(class names, scores)`."""
    url, body = rest_images_request(host, model, images, signature, version)
    return parse_rest_classes(_post(url, body, timeout))


def parse_rest_reply(payload):
    """The `outputs` (logits) of a REST predict reply as an array."""
    outputs = json.loads(payload)["outputs"]
    if isinstance(outputs, dict):
        outputs = outputs[OUTPUT_NAME]
    return np.asarray(outputs, dtype=np.float32)


def parse_rest_classes(payload):
    """`(class names [batch, k], scores [batch, k])` of a REST reply."""
    outputs = json.loads(payload)["outputs"]
    return (np.asarray(outputs[CLASS_NAMES], dtype=object),
            np.asarray(outputs[SCORES], dtype=np.float32))


def grpc_request(model, batch, signature="serving_default", version=None):
    """A `tensorflow.serving.PredictRequest` for one float batch.

    Args:
        model: the served model's name.
        batch: a NumPy batch of trunk-ready inputs.
        signature: `serving_default` or `task_<name>`.
        version: a version to pin, or None.

    Returns:
        The request proto.
    """
    import tensorflow as tf

    return _grpc(model, signature, version, INPUT_NAME,
                 tf.make_tensor_proto(batch))


def grpc_images_request(model, images, signature, version=None):
    """A `PredictRequest` carrying encoded images as a string tensor.

    Args:
        model: the served model's name.
        images: a list of encoded images (file contents).
        signature: `task_<name>_images`.
        version: a version to pin, or None.

    Returns:
        The request proto.
    """
    import tensorflow as tf

    return _grpc(model, signature, version, IMAGES_NAME,
                 tf.make_tensor_proto(list(images), dtype=tf.string))


def _grpc(model, signature, version, name, tensor):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[name].CopyFrom(tensor)
    return request


def grpc_predict(target, request, timeout=30):
    """Sends a `PredictRequest` to `target` (`host:port`, default 8500).

    Returns:
        `{output name: NumPy array}` of the reply.
    """
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    reply = stub.Predict(request, timeout)
    return {key: tf.make_ndarray(value)
            for key, value in reply.outputs.items()}


def _print_logits(outputs, count, top_k):
    for index, row in enumerate(outputs.reshape(count, -1)):
        best = np.argsort(-row, kind="stable")[:top_k]
        print(index, "  ".join(f"{i} ({row[i]:.4f})" for i in best))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+",
                        help="image files, or one .npy float batch")
    parser.add_argument("--model", required=True,
                        help="served model name (task, or multi model)")
    parser.add_argument("--task", help="the task: images go to "
                        "task_<task>_images, a .npy batch to task_<task>")
    parser.add_argument("--signature", help="the signature to call "
                        "(default: from --task, else serving_default)")
    parser.add_argument("--version", type=int)
    parser.add_argument("--rest", default="localhost:8501",
                        help="REST host:port (default localhost:8501)")
    parser.add_argument("--grpc", help="use gRPC at host:port (e.g. :8500)")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    npy = len(args.inputs) == 1 and args.inputs[0].endswith(".npy")
    if npy:
        signature = args.signature or (
            f"task_{args.task}" if args.task else "serving_default")
        batch = np.load(args.inputs[0]).astype(np.float32)
        if args.grpc:
            request = grpc_request(args.model, batch, signature,
                                   args.version)
            outputs = grpc_predict(args.grpc, request)[OUTPUT_NAME]
        else:
            outputs = rest_predict(args.rest, args.model, batch, signature,
                                   args.version)
        _print_logits(outputs, len(batch), args.top_k)
        return 0
    if not (args.signature or args.task):
        parser.error("image files need --task (or --signature "
                     "task_<name>_images)")
    signature = args.signature or images_signature(args.task)
    images = []
    for path in args.inputs:
        with open(path, "rb") as file:
            images.append(file.read())
    if args.grpc:
        request = grpc_images_request(args.model, images, signature,
                                      args.version)
        reply = grpc_predict(args.grpc, request)
        names, scores = reply[CLASS_NAMES], reply[SCORES]
    else:
        names, scores = rest_classify(args.rest, args.model, images,
                                      signature, args.version)
    for path, row, row_scores in zip(args.inputs, names, scores):
        picks = "  ".join(
            f"{n.decode() if isinstance(n, bytes) else n} ({s:.3f})"
            for n, s in list(zip(row, row_scores))[:args.top_k])
        print(f"{path}\t{picks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
