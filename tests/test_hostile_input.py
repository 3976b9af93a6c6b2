"""A served model survives hostile input (issue 28): image sizes read from
headers and refused before decoding, batch and byte limits, every malformed
input an InvalidArgumentError naming what was expected; decompression bombs
measured in a keras-free process; a fuzz run of mutated images."""

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf
from cli_support import ROOT, cli_env, run_cli
from conftest import packed_model, wide_trunk
from PIL import Image

import packnet_tf as pn
from packnet_tf import export
from packnet_tf.data.image_limits import ImageLimits, declared_size

NAMES = ("cat", "dog", "emu")
#: Peak memory a request may add to a serving process (issue 28).
MEMORY_BUDGET_MB = 500


# -- image files, well-formed and not -------------------------------------


def _pil(image, kind, **options):
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _rgb(w=8, h=8, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))


def png_declaring(width, height):
    """A small PNG whose header (valid CRC) declares another size."""
    data = _pil(_rgb(), "PNG")
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _chunk(b"IHDR", ihdr) + data[33:]


def jpeg_declaring(width, height):
    """A small JPEG whose frame header declares another size."""
    data = bytearray(_pil(_rgb(16, 16), "JPEG"))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(screen, frames):
    """A GIF89a with a logical screen and frame descriptors of given sizes
    (each frame's data is one pixel's: the header is what is checked)."""
    out = b"GIF89a" + struct.pack("<HH", *screen) + b"\x80\x00\x00"
    out += b"\x00\x00\x00\xff\xff\xff"  # a global table of 2 colours
    for width, height in frames:
        out += b"!\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control block
        out += b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00"
        out += b"\x02\x02\x44\x01\x00"
    return out + b";"


def png_bomb(side=16_000):
    """A valid PNG of side x side black pixels (768 MB decoded, ~750 KB)."""
    compress = zlib.compressobj(9)
    row = bytes(1 + 3 * side)
    idat = b"".join(compress.compress(row) for _ in range(side))
    idat += compress.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def jpeg_bomb(side=16_000):
    """A valid greyscale JPEG of side x side pixels (768 MB as RGB)."""
    return _pil(Image.new("L", (side, side)), "JPEG", quality=10)


# -- the header reader -------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    (_pil(_rgb(7, 5), "PNG"), (True, 5, 7, 35)),
    (_pil(_rgb(7, 5), "JPEG"), (True, 5, 7, 35)),
    (_pil(_rgb(7, 5), "BMP"), (True, 5, 7, 35)),
    (_pil(_rgb(7, 5).convert("P"), "GIF"), (True, 5, 7, 35)),
    (png_declaring(16_000, 16_000), (True, 16_000, 16_000, 256_000_000)),
    (jpeg_declaring(16_000, 9_000), (True, 9_000, 16_000, 144_000_000)),
    # The canvas grows to hold the largest frame; every frame counts.
    (gif_declaring((8, 8), [(4, 4), (3000, 20)]), (True, 20, 3000, 60_016)),
    (gif_declaring((1000, 1000), [(1000, 1000)] * 300),
     (True, 1000, 1000, 300_000_000)),
    (b"", (False, 0, 0, 0)),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", (False, 0, 0, 0)),
])
def test_declared_size_reads_headers_only(data, expected):
    got = tf.function(declared_size)(tf.constant(data))
    assert tuple(v.numpy().item() for v in got) == expected


def test_a_top_down_bitmap_declares_its_height():
    data = bytearray(_pil(_rgb(7, 5), "BMP"))
    data[22:26] = struct.pack("<i", -5)
    _, height, width, pixels = declared_size(tf.constant(bytes(data)))
    assert (height.numpy(), width.numpy(), pixels.numpy()) == (5, 7, 35)


@pytest.mark.parametrize("limits, says", [
    ({"max_image_pixels": 0}, "max_image_pixels` to be an int >= 1"),
    ({"max_batch_size": 2.5}, "max_batch_size` to be an int >= 1"),
    ({"max_bytes": 1}, "Unknown image limit 'max_bytes'"),
])
def test_bad_limits_are_refused(limits, says):
    from packnet_tf.data.image_limits import check_limits

    with pytest.raises(ValueError, match=says):
        check_limits(limits)


# -- the served signatures ---------------------------------------------------

#: Small limits so that each can be hit with small requests.
LIMITS = ImageLimits(max_image_pixels=10_000, max_batch_size=4,
                     max_request_bytes=20_000)


@pytest.fixture(scope="module")
def model():
    model = packed_model(wide_trunk(), classes=(3,))
    model.set_input_contract("a", pn.InputContract(class_names=NAMES))
    return model


@pytest.fixture(scope="module")
def served(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    export.saved_model(model, base, limits=LIMITS)
    export.saved_model(model, base, layout="multi", limits=LIMITS)
    return base


def _signature(base, folder, key):
    return tf.saved_model.load(str(base / folder / "1")).signatures[key]


def test_limits_are_recorded_in_the_saved_model(served):
    for folder in ("a", "multi_model"):
        recorded = json.loads((served / folder / "1" / "assets"
                               / "image_limits.json").read_text())
        assert recorded == LIMITS.as_dict()
        loaded = tf.saved_model.load(str(served / folder / "1"))
        assert {k: int(v) for k, v in loaded.image_limits().items()} == (
            LIMITS.as_dict())
        # Not a signature: the served signatures stay those of before.
        assert "image_limits" not in loaded.signatures


BAD_IMAGES = {
    "png bomb": ([png_declaring(16_000, 16_000)],
                 r"at most 10,000 pixels.*max_image_pixels.*16000 x 16000"),
    "jpeg bomb": ([jpeg_declaring(16_000, 16_000)], "at most 10,000 pixels"),
    "gif frames": ([gif_declaring((50, 50), [(50, 50)] * 10)],
                   r"at most 10,000 pixels.*\(25000 pixels to decode\)"),
    "gif frame beyond its screen": (
        [gif_declaring((8, 8), [(8, 8), (20_000, 1)])],
        "at most 10,000 pixels"),
    "bmp bomb": ([_pil(_rgb(), "BMP")[:18] + struct.pack("<ii", 9_000, 9_000)
                  + _pil(_rgb(), "BMP")[26:]], "at most 10,000 pixels"),
    "bomb in a batch": ([_pil(_rgb(), "PNG")] * 3
                        + [png_declaring(200, 200)], "at index 3 an image that declares 200 x 200"),
    "zero area": ([png_declaring(0, 8)], "at least one pixel"),
    "empty string": ([b""], "JPEG, PNG, GIF or BMP file bytes"),
    "text": ([b"/tmp/cat.jpg"], "JPEG, PNG, GIF or BMP file bytes"),
    "webp": ([b"RIFF\x24\x00\x00\x00WEBPVP8 "],
             "JPEG, PNG, GIF or BMP file bytes"),
    "truncated png": ([_pil(_rgb(), "PNG")[:60]], "PNG"),
    "truncated jpeg": ([_pil(_rgb(16, 16), "JPEG")[:150]], "JPEG"),
    "too many": ([_pil(_rgb(), "PNG")] * 5, r"at most 4 images.*Received 5\."),
    "too many bytes": ([_pil(_rgb(80, 80), "PNG")] * 2,
                       r"at most 20,000 bytes"),
    "empty batch": ([], "empty batch"),
}


@pytest.mark.parametrize("folder", ["a", "multi_model"])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images_get_a_clear_error(served, folder, case):
    images, says = BAD_IMAGES[case]
    function = _signature(served, folder, "task_a_images")
    with pytest.raises(tf.errors.InvalidArgumentError, match=says):
        function(image_bytes=tf.constant(images, tf.string))


@pytest.mark.parametrize("pixels, says", [
    (np.zeros((1, 200, 200, 3), np.uint8), r"at most 10,000 pixels"),
    (np.zeros((5, 8, 8, 3), np.uint8), r"at most 4 images"),
])
def test_bad_pixels_get_a_clear_error(served, pixels, says):
    function = _signature(served, "a", "task_a_pixels")
    with pytest.raises(tf.errors.InvalidArgumentError, match=says):
        function(pixels=tf.constant(pixels))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_get_a_clear_error(served, value):
    inputs = np.zeros((2, 8, 8, 3), np.float32)
    inputs[1, 3, 3, 1] = value
    for folder in ("a", "multi_model"):
        function = _signature(served, folder, "task_a")
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="Expected finite values in `inputs`"):
            function(inputs=tf.constant(inputs))


@pytest.mark.parametrize("key, feed, says", [
    ("task_a_pixels", {"pixels": np.zeros((1, 8, 8, 3), np.float32)},
     "expected to be a uint8 tensor but is a float tensor"),
    ("task_a_pixels", {"pixels": np.zeros((8, 8, 3), np.uint8)},
     r"Shape of tensor pixels \[8,8,3\] is not compatible with expected "
     r"shape \[\?,\?,\?,\?\]"),
    ("task_a", {"inputs": np.zeros((1, 8, 8, 3), np.int32)},
     "expected to be a float tensor but is a int32 tensor"),
    ("task_a", {"inputs": np.zeros((1, 9, 8, 3), np.float32)},
     r"Shape of tensor inputs \[1,9,8,3\] is not compatible with expected "
     r"shape \[\?,8,8,3\]"),
    ("task_a_images", {"image_bytes": np.zeros(2, np.uint8)},
     "expected to be a string tensor but is a uint8 tensor"),
    ("task_a_images", {"image_bytes": np.array([[b"a"]])},
     r"Shape of tensor image_bytes \[1,1\] is not compatible with "
     r"expected shape \[\?\]"),
])
def test_wrong_dtypes_and_shapes_get_a_clear_error(served, key, feed, says):
    for folder in ("a", "multi_model"):
        function = _signature(served, folder, key)
        with pytest.raises(tf.errors.InvalidArgumentError, match=says):
            function(**{k: tf.constant(v) for k, v in feed.items()})


def _decoded_like_training(data):
    """What the training pipeline decodes a file to (3 channels)."""
    return tf.io.decode_image(data, channels=3, expand_animations=False)


@pytest.mark.parametrize("kind", ["16-bit png", "grey+alpha png",
                                  "palette png", "cmyk jpeg", "grey jpeg",
                                  "animated gif", "bmp"])
def test_other_encodings_are_read_as_training_read_them(served, kind):
    """Converted to RGB exactly as the training pipeline's decoder does;
    an animated GIF gives its first frame."""
    rgb = _rgb(8, 8, seed=3)
    data = {
        "16-bit png": lambda: tf.io.encode_png(tf.constant(
            np.asarray(rgb, np.uint16) * 257)).numpy(),
        "grey+alpha png": lambda: _pil(rgb.convert("LA"), "PNG"),
        "palette png": lambda: _pil(rgb.convert("P"), "PNG"),
        "cmyk jpeg": lambda: _pil(rgb.convert("CMYK"), "JPEG"),
        "grey jpeg": lambda: _pil(rgb.convert("L"), "JPEG"),
        "animated gif": lambda: _pil(
            rgb.convert("P"), "GIF", save_all=True,
            append_images=[_rgb(8, 8, seed=4).convert("P")]),
        "bmp": lambda: _pil(rgb, "BMP"),
    }[kind]()
    images = _signature(served, "a", "task_a_images")
    pixels = _signature(served, "a", "task_a_pixels")
    got = images(image_bytes=tf.constant([data]))
    want = pixels(pixels=_decoded_like_training(data)[None])
    np.testing.assert_array_equal(got["logits"].numpy(),
                                  want["logits"].numpy())


def test_cli_export_records_the_limits_given(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    code, out, err = run_cli("export", path, "--saved-model",
                             tmp_path / "serving", "--max-image-pixels",
                             "1000", "--max-batch-size", "3")
    assert code == 0, err
    recorded = json.loads((tmp_path / "serving" / "a" / "1" / "assets"
                           / "image_limits.json").read_text())
    assert recorded == {**ImageLimits().as_dict(), "max_image_pixels": 1000,
                        "max_batch_size": 3}
    code, out, err = run_cli("export", path, "--saved-model",
                             tmp_path / "serving2", "--max-batch-size", "0")
    assert code == 2 and "max_batch_size` to be an int >= 1" in err


def test_cli_help_states_the_default_limits(capsys):
    with pytest.raises(SystemExit):
        run_cli("export", "--help")
    out = " ".join(capsys.readouterr().out.split())
    limits = ImageLimits()
    assert limits.max_image_pixels == 16_000_000 and "16 megapixels" in out
    assert f"default {limits.max_batch_size}" in out
    assert limits.max_request_bytes == 64 * 2**20 and "64 MiB" in out


# -- a keras-free serving process: bombs and fuzz ----------------------------

#: Runs in a fresh process where Keras and packnet_tf cannot be imported;
#: prints JSON: each request's outcome and the peak memory above idle.
SERVER = textwrap.dedent("""
    import json, resource, sys
    for name in ("keras", "tf_keras", "packnet_tf"):
        sys.modules[name] = None
    import numpy as np
    import tensorflow as tf

    job = json.load(open(sys.argv[1]))
    function = tf.saved_model.load(job["model"]).signatures[job["key"]]
    requests = np.load(job["requests"], allow_pickle=False)
    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    def answer(images):
        try:
            out = function(image_bytes=tf.constant(images, tf.string))
            return {"ok": out["logits"].numpy().tolist()}
        except tf.errors.InvalidArgumentError as error:
            return {"error": error.message[-300:]}
    good = [bytes(b) for b in requests["good"]]
    first = answer(good)  # warm: traced, one real batch answered
    idle = peak_mb()
    outcomes = []
    for key in sorted(k for k in requests.files if k != "good"):
        outcomes.append([key, answer([bytes(b) for b in requests[key]])])
    last = answer(good)
    print(json.dumps({"first": first, "last": last, "outcomes": outcomes,
                      "added_mb": peak_mb() - idle}))
""")


def _serve(folder, requests, tmp_path):
    """Runs `requests` ({name: [bytes]}, "good" first and last) through the
    `_images` signature of `folder` in a keras-free process."""
    arrays = {name: np.array(images, dtype=object).astype(bytes)
              if images else np.array([], dtype="S1")
              for name, images in requests.items()}
    np.savez(tmp_path / "requests.npz", **arrays)
    job = {"model": str(folder), "key": "task_a_images",
           "requests": str(tmp_path / "requests.npz")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    (tmp_path / "server.py").write_text(SERVER)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "server.py"),
         str(tmp_path / "job.json")], capture_output=True, text=True,
        timeout=300, env=cli_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default_exports(model, tmp_path_factory):
    """The model exported with the default limits, in both layouts."""
    base = tmp_path_factory.mktemp("defaults")
    export.saved_model(model, base)
    export.saved_model(model, base, layout="multi")
    return {"per_task": base / "a" / "1", "multi": base / "multi_model" / "1"}


@pytest.fixture(scope="module")
def default_export(default_exports):
    return default_exports["per_task"]


@pytest.fixture(scope="module")
def bombs():
    return png_bomb(), jpeg_bomb()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["per_task", "multi"])
def test_decompression_bombs_are_refused_within_the_memory_budget(
        default_exports, bombs, layout, tmp_path):
    png, jpeg = bombs
    good = [_pil(_rgb(seed=s), "PNG") for s in range(3)]
    result = _serve(default_exports[layout], {
        "good": good, "png": [png], "jpeg": [jpeg], "png x8": [png] * 8,
        "jpeg x8": [jpeg] * 8, "mixed": good + [jpeg]}, tmp_path)
    for name, outcome in result["outcomes"]:
        assert "max_image_pixels" in outcome.get("error", ""), (name,
                                                                 outcome)
    assert result["added_mb"] < MEMORY_BUDGET_MB, result["added_mb"]
    assert result["first"] == result["last"]


def _mutations(seed=0):
    """A few hundred hostile files: random bytes, bit flips and truncations
    of well-formed files of every format, headers declaring huge sizes."""
    rng = np.random.default_rng(seed)
    rgb = _rgb(12, 10, seed=5)
    bases = [
        _pil(rgb, "PNG"), _pil(rgb, "JPEG"), _pil(rgb, "BMP"),
        _pil(rgb.convert("P"), "GIF"), _pil(rgb.convert("LA"), "PNG"),
        _pil(rgb.convert("CMYK"), "JPEG"), _pil(rgb.convert("L"), "JPEG"),
        _pil(rgb.convert("P"), "GIF", save_all=True,
             append_images=[_rgb(12, 10, seed=6).convert("P")] * 3),
        tf.io.encode_png(tf.constant(np.asarray(rgb, np.uint16))).numpy(),
    ]
    cases = {}
    for k in range(40):
        cases[f"random {k}"] = rng.bytes(int(rng.integers(0, 3000)))
    for b, base in enumerate(bases):
        for k in range(20):
            flipped = bytearray(base)
            for position in rng.integers(0, len(base), rng.integers(1, 9)):
                flipped[position] ^= 1 << int(rng.integers(0, 8))
            cases[f"flip {b}.{k}"] = bytes(flipped)
        for k in range(10):
            cases[f"cut {b}.{k}"] = base[:int(rng.integers(0, len(base)))]
        # The format's magic bytes, then noise.
        cases[f"magic {b}"] = base[:8] + rng.bytes(200)
    for side in (20_000, 65_535):
        cases[f"png {side}"] = png_declaring(side, side)
        cases[f"jpeg {side}"] = jpeg_declaring(side, side)
        cases[f"gif {side}"] = gif_declaring((8, 8), [(side, side)])
    cases["gif many frames"] = gif_declaring((500, 500), [(500, 500)] * 200)
    return {name: [data] for name, data in cases.items()}, bases


@pytest.mark.slow
def test_fuzzed_images_get_an_answer_or_an_error_and_memory_stays_bounded(
        model, default_export, tmp_path):
    cases, bases = _mutations()
    good = [_pil(_rgb(seed=s), "PNG") for s in range(4)]
    result = _serve(default_export, {"good": good, **cases}, tmp_path)
    assert len(result["outcomes"]) == len(cases) > 300
    answered = 0
    for name, outcome in result["outcomes"]:
        if "ok" in outcome:
            answered += 1
            assert np.all(np.isfinite(outcome["ok"])), name
        else:
            assert outcome["error"], name
    assert answered >= len(bases)  # the well-formed flips still decode
    assert result["added_mb"] < MEMORY_BUDGET_MB, result["added_mb"]
    # Well-formed images in the same run: answered as before the fuzz,
    # and as the model answers them through the training pipeline.
    assert result["first"] == result["last"]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(g)).convert("RGB"))
                       for g in good])
    model.use_task("a")
    expected = model.predict(pixels.astype("float32") / 255.0, verbose=0)
    np.testing.assert_allclose(result["first"]["ok"], expected, rtol=1e-4,
                               atol=1e-4)


# -- the data path: training, `packnet-tf eval`, the data check -------------


def _folder_with_a_bomb(root):
    """An image folder of the task's classes, a good PNG of each in each
    split, and in train/cat a PNG that declares 20,000 x 20,000 pixels
    (its header only: never decodable)."""
    for split in ("train", "test"):
        for k, name in enumerate(NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            (folder / "0.png").write_bytes(_pil(_rgb(seed=k), "PNG"))
    (root / "train" / "cat" / "bomb.png").write_bytes(
        png_declaring(20_000, 20_000))
    return root


def test_the_data_check_names_an_image_over_the_limit(tmp_path):
    from packnet_tf import data

    root = _folder_with_a_bomb(tmp_path / "images")
    source = data.from_spec(str(root))
    with pytest.raises(data.BadFilesError, match=r"bomb\.png.*at most "
                       r"16,000,000 pixels.*20000 x 20000"):
        data.check_source(source, channels=3)
    report = data.check_source(source, channels=3, on_bad_files="skip")
    assert report.counts() == {"train": 1}
    assert source.num_examples("train") == 3
    # A limit of the data's own: both good 8x8 images are over 50 pixels.
    small = data.from_spec({"folder": str(root), "max_image_pixels": 50})
    with pytest.raises(data.BadFilesError, match=r"file\(s\).*at most 50 "
                       r"pixels"):
        data.check_source(small, channels=3)
    with pytest.raises(data.DataError, match="max_image_pixels` to be an "
                       "int >= 1") as error:
        data.from_spec({"folder": str(root), "max_image_pixels": 0})
    assert error.value.key == "max_image_pixels"


def test_the_pipeline_refuses_an_image_over_the_limit_before_decoding():
    from packnet_tf.data.image_limits import decode_image

    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"at most 100 pixels in `photos` \(the data's "
                       r"max_image_pixels\).*16000 x 16000"):
        decode_image(tf.constant(png_declaring(16_000, 16_000)), 3, 100,
                     "photos")
    image = decode_image(tf.constant(_pil(_rgb(), "PNG")), 3, 100)
    assert image.shape == (8, 8, 3)


def test_cli_eval_names_an_image_over_the_limit(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    root = _folder_with_a_bomb(tmp_path / "images")
    code, out, err = run_cli("eval", path, "--task", "a", "--data", root,
                             "--split", "train")
    assert code == 2, (out, err)
    assert "bomb.png" in err and "max_image_pixels" in err
    code, out, err = run_cli("eval", path, "--task", "a", "--data", root,
                             "--split", "train", "--on-bad-files", "skip")
    assert code == 0, err
    assert "(3 examples)" in out
