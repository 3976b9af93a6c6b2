"""Do TensorFlow and PIL decode the CIFAR-10 JPEGs to the same pixels?

One candidate for the gap between this project's PackNet and Avalanche's on
split-cifar10-5 is the input itself: both read the same JPEG files, but this
project decodes them with TensorFlow (`tf.io.decode_image`, as the
image-folder source does) and Avalanche's script with PIL (torchvision).
This script decodes the same files both ways and reports how many pixels
differ and by how much; with `dct_method="INTEGER_ACCURATE"` too (PIL's
libjpeg default is the accurate integer DCT).

    PYTHONPATH=. python benchmarks/jpeg_decoders.py            # 2,000 test images
    PYTHONPATH=. python benchmarks/jpeg_decoders.py --count 10000

Writes results/jpeg_decoders.json. Not a test; about 10 s.
"""

import argparse
import io
import time
import zipfile

import numpy as np

from common import CIFAR10_ZIP, command, machine, write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(CIFAR10_ZIP))
    parser.add_argument("--count", type=int, default=2000,
                        help="test images to compare (in archive order)")
    args = parser.parse_args(argv)

    import tensorflow as tf
    from PIL import Image

    start = time.perf_counter()
    with zipfile.ZipFile(args.data) as archive:
        names = sorted(n for n in archive.namelist()
                       if n.startswith("test/") and n.endswith(".jpg"))
        names = names[:args.count]
        blobs = [archive.read(n) for n in names]
    results = {}
    for method in ("", "INTEGER_ACCURATE"):
        differing = total = images_differing = 0
        abs_sum = 0.0
        max_diff = 0
        for blob in blobs:
            ours = tf.io.decode_jpeg(blob, channels=3,
                                     dct_method=method).numpy()
            theirs = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
            diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
            differing += int(np.count_nonzero(diff))
            images_differing += int(np.any(diff))
            abs_sum += float(diff.sum())
            max_diff = max(max_diff, int(diff.max()))
            total += diff.size
        key = method or "default (decode_image's)"
        results[key] = {
            "images": len(blobs),
            "images_with_any_difference": images_differing,
            "share_of_values_differing": differing / total,
            "mean_abs_difference_0_255": abs_sum / total,
            "max_abs_difference_0_255": max_diff,
        }
        print(f"TF dct_method={key}: {images_differing} of {len(blobs)} "
              f"images differ from PIL; {differing / total:.2%} of values, "
              f"mean |diff| {abs_sum / total:.4f}, max {max_diff} (0-255)")
    path = write_json("jpeg_decoders.json", {
        "data": args.data, "decoders": results, "machine": machine(),
        "seconds": time.perf_counter() - start, "command": command()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
