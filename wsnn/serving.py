"""The exported tagger: a SavedModel for TF Serving, written and read back.

The trainer exports at the end of every task; `python -m wsnn.export`
(`wsnn.export`) exports a task directory's latest checkpoint again
(`export_from_checkpoint`).

Layout (TF Serving's): `<export_dir>/<version>/saved_model.pb`, `variables/`,
and `assets/tags.txt` + `assets/wsnn.json` (vocabulary, input size,
channels, top k, pixel limit). Versions are names of ASCII digits only,
compared as integers (`007` is version 7; other names, and files, are not
versions). A new export takes 1 + the largest, and is written under a
temporary name and renamed, so TF Serving never sees a half-written version.
An export holds a lock on the export directory (an flock on the directory
itself: no lock file), so two exports into one directory run one after the
other and take different versions; under the lock, temporary directories
that killed exports left (`.<version>.tmp-*`) are removed first.

Signatures (the model needs nothing from wsnn once exported):
  serving_default  image_bytes: tf.string [None] (JPEG, PNG, GIF, BMP or WebP
                   files), decoded and resized in the graph by the same
                   `wsnn.data.pipeline.decode_and_resize` as in training.
                   An image of more than `max_pixels` pixels (its header's
                   width x height, read before decoding) fails the request
                   with InvalidArgument "image is W x H pixels (width x
                   height), more than the limit of N pixels";
  serve_images     images: uint8 [None, S, S, channels], already sized.
Both return probabilities [None, C] float32, top_k_tags [None, k] string and
top_k_scores [None, k] float32. TF Serving's REST API decodes base64 for
inputs whose name ends in `_bytes`: {"instances": [{"b64": "..."}]}.

Loading a SavedModel runs the ops of its graph: load only exports you trust
(TensorFlow's security guide says the same of every model).
"""

import glob
import json
import os
import re
import shutil

import tensorflow as tf

from wsnn import io_utils
from wsnn.data import images as images_lib
from wsnn.data import pipeline
from wsnn.training.layout import TaskLayout

METADATA = "wsnn.json"
TAGS = "tags.txt"


class ServingModule(tf.Module):
    """The trained model with explicit serving signatures, its vocabulary and pixel limit."""

    def __init__(self, model, tag_names, image_size, channels, top_k=10, max_pixels=images_lib.MAX_PIXELS):
        super().__init__()
        self.model = model
        self.image_size, self.channels = int(image_size), int(channels)
        self.top_k = min(int(top_k), len(tag_names))
        self.max_pixels = int(max_pixels)
        self.tag_names = tf.constant(list(tag_names), tf.string)
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, self.image_size, self.image_size, self.channels], tf.uint8,
                                           name="images")])

    def _outputs(self, images):
        probabilities = self.model(images, training=False)["tag_probs"]
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        return {"probabilities": probabilities, "top_k_tags": tf.gather(self.tag_names, indices),
                "top_k_scores": scores}

    def _serve_bytes(self, image_bytes):
        images = tf.map_fn(
            lambda b: pipeline.decode_and_resize(b, self.image_size, self.channels, self.max_pixels),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, self.channels], tf.uint8))
        return self._outputs(images)

    def _serve_images(self, images):
        return self._outputs(images)


class ExportError(RuntimeError):
    """An export could not be written (a full disk, a read-only directory); one line naming the path."""


def _version_names(directory, directories_only=False):
    """{name: integer} of the names in `directory` made of ASCII digits only (e.g. "007": 7)."""
    return {n: int(n) for n in os.listdir(directory) if re.fullmatch(r"[0-9]+", n)
            and (not directories_only or os.path.isdir(os.path.join(directory, n)))}


def next_version(export_dir):
    """1 + the largest integer version name in `export_dir` (1 if there is none); a file with a version
    name counts too, so that the new version never collides with it."""
    if not os.path.isdir(export_dir):
        return 1
    return max(_version_names(export_dir).values(), default=0) + 1


def check_export_options(top_k, version=None):
    """Checks export options before anything is built or traced.

    Raises:
      ValueError: "--top_k=0: must be >= 1" (or a bad version).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top_k={top_k}: must be >= 1")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ValueError(f"version={version!r}: must be an integer >= 1")


def export(model, tag_names, image_size, channels, export_dir, top_k=10, version=None,
           max_pixels=images_lib.MAX_PIXELS, data_identity=None):
    """Writes `<export_dir>/<version>/` atomically; returns its path.

    `max_pixels` is the serving signature's pixel limit (also recorded in
    assets/wsnn.json, where `wsnn.annotate` reads it); `data_identity` (the
    training data's hashes, `wsnn.data.dataset.identity`) is recorded there.
    Files and directories honour the umask (`io_utils.make_temp_dir`). The
    export directory is locked while the version is chosen and written
    (`io_utils.directory_lock`: another export waits), and temporary
    directories of killed exports are removed first.

    Raises:
      ValueError: bad options (checked before tracing), or `version` exists.
      ExportError: the export directory cannot be written (e.g. read-only,
        full); one line naming the version's path, nothing left behind.
    """
    check_export_options(top_k, version)
    target = export_dir  # named by an error before the version is known
    try:
        os.makedirs(export_dir, exist_ok=True)
        with io_utils.directory_lock(export_dir):
            io_utils.remove_stale_temps(export_dir)
            version = version or next_version(export_dir)
            target = os.path.join(export_dir, str(version))
            if os.path.lexists(target):
                raise ValueError(f"{target} exists: exported versions are never overwritten")
            _write_version(model, tag_names, image_size, channels, export_dir, version, top_k, max_pixels,
                           data_identity)
    except OSError as e:
        raise ExportError(f"{target}: cannot export ({e.strerror or e})") from None
    except tf.errors.OpError as e:  # TensorFlow's file writes: ResourceExhaustedError on a full disk
        raise ExportError(f"{target}: cannot export ({images_lib.error_message(e)})") from None
    return target


def _write_version(model, tag_names, image_size, channels, export_dir, version, top_k, max_pixels, data_identity):
    """`export`'s writing, under the lock: a temporary directory renamed to `<export_dir>/<version>`."""
    module = ServingModule(model, tag_names, image_size, channels, top_k, max_pixels)
    tmp = io_utils.make_temp_dir(export_dir, f".{version}.tmp-")
    try:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve_bytes,
                                                     "serve_images": module.serve_images})
        # Written after saving: tf.saved_model.save owns the assets directory.
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        with open(os.path.join(assets, TAGS), "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in tag_names))
        with open(os.path.join(assets, METADATA), "w", encoding="utf-8") as f:
            json.dump({"tag_names": list(tag_names), "image_size": module.image_size,
                       "channels": module.channels, "top_k": module.top_k, "max_pixels": module.max_pixels,
                       "format": "wsnn.saved_model", "version": 1, "data_identity": data_identity}, f, indent=1)
        os.rename(tmp, os.path.join(export_dir, str(version)))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_version_dir(path):
    """A version directory: `path` itself, or the highest version directory inside it (names of
    ASCII digits, compared as integers; the name as it is on disk, e.g. `007`).

    Raises:
      ValueError: no SavedModel there, or a truncated one.
    """
    if not os.path.isdir(path):
        raise ValueError(f"--model={path}: no such directory")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        versions = _version_names(path, directories_only=True)
        if not versions:
            raise ValueError(f"--model={path}: neither a SavedModel (no saved_model.pb) nor an export "
                             "directory with integer versions")
        path = os.path.join(path, max(versions, key=lambda n: (versions[n], n)))
    for needed in ("saved_model.pb", "variables/variables.index", f"assets/{METADATA}"):
        if not os.path.isfile(os.path.join(path, needed)):
            raise ValueError(f"--model={path}: incomplete SavedModel ({needed} is missing); export it again")
    return path


def read_metadata(version_dir):
    """Reads and checks a version directory's assets/wsnn.json.

    Exports made before the pixel limit have no `max_pixels` (nor a check in
    their graph); they get `wsnn.data.images.MAX_PIXELS`.

    Raises:
      ValueError: the file is unreadable, not JSON, or lacks a field or has
        one of the wrong type (the message names the file).
    """
    path = os.path.join(version_dir, "assets", METADATA)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; export the model again") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                         "export the model again") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(metadata).__name__}; "
                         "export the model again")
    metadata.setdefault("max_pixels", images_lib.MAX_PIXELS)

    def positive_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    tag_names = metadata.get("tag_names")
    problems = [
        (isinstance(tag_names, list) and tag_names and all(isinstance(t, str) for t in tag_names),
         "'tag_names' must be a non-empty list of strings"),
        (positive_int(metadata.get("image_size")), "'image_size' must be a positive integer"),
        (metadata.get("channels") in (1, 3), "'channels' must be 1 or 3"),
        (positive_int(metadata.get("top_k")), "'top_k' must be a positive integer"),
        (positive_int(metadata["max_pixels"]), "'max_pixels' must be a positive integer"),
    ]
    for ok, problem in problems:
        if not ok:
            raise ValueError(f"{path}: {problem}; export the model again")
    return metadata


def _damaged_file(version_dir):
    """The file a failed load most likely broke on: an unreadable variables file, else saved_model.pb."""
    # Only called after a failed load, so reading every variable again is cheap enough;
    # TensorFlow's checkpoint reader raises various types for a damaged file.
    prefix = os.path.join(version_dir, "variables", "variables")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception:
        return prefix + ".index"
    try:
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except Exception:
        return ", ".join(sorted(glob.glob(prefix + ".data-*"))) or prefix + ".data-*"
    return os.path.join(version_dir, "saved_model.pb")


def load(path):
    """Loads an exported tagger; returns (the loaded object, its metadata dict).

    Loading runs the SavedModel's graph ops: load only exports you trust.

    Raises:
      ValueError: no SavedModel at `path`, an incomplete or damaged one, or
        a bad assets/wsnn.json (see `read_metadata`); one line naming the file.
    """
    path = resolve_version_dir(path)
    metadata = read_metadata(path)
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        # A damaged SavedModel fails deep in TensorFlow's loader with many
        # exception types (IndexError for a cut variables file, DecodeError
        # for a cut saved_model.pb); to the user they all mean the same.
        reason = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{_damaged_file(path)}: cannot load the SavedModel ({type(e).__name__}: {reason}); "
                         "export it again") from None
    return loaded, metadata


def export_from_checkpoint(task_dir, export_dir, top_k=10):
    """Builds a task's model, loads its latest checkpoint's weights and exports it.

    Only the model is built: its shape and vocabulary come from the task's
    model.json (written when training starts), the weights from the
    checkpoint (the starting weights file is not read, so it may have moved).

    Raises:
      ValueError: bad options, not a task directory, a damaged model.json or
        data_identity.json (naming the file), or no checkpoint; one line.
      ExportError: see `export`.
    """
    from wsnn import models

    check_export_options(top_k)
    layout = TaskLayout(task_dir)
    facts = io_utils.read_json(layout.model_facts)
    if facts is None:
        raise ValueError(f"--workdir={task_dir}: no {os.path.basename(layout.model_facts)}; give the task "
                         "directory of a training run such as runs/fashion_tags/refinement")
    _check_model_facts(facts, layout.model_facts)
    identity = io_utils.read_json(layout.identity)
    if identity is not None and not isinstance(identity, dict):
        raise ValueError(f"{layout.identity}: expected a JSON object, got {type(identity).__name__}")
    latest = tf.train.latest_checkpoint(layout.checkpoints)
    if not latest:
        raise ValueError(f"--workdir={task_dir}: no checkpoint to export")
    model = models.build_model(facts["backbone"], len(facts["tag_names"]), facts["input_shape"])
    tf.train.Checkpoint(model=model).read(latest).expect_partial()
    image_size, channels = facts["input_shape"][0], facts["input_shape"][-1]
    return export(model, facts["tag_names"], image_size, channels, export_dir, top_k,
                  max_pixels=facts["max_pixels"], data_identity=identity)


def _check_model_facts(facts, path):
    """Raises ValueError naming `path` (a task's model.json) unless `facts` has what export needs."""
    if not isinstance(facts, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(facts).__name__}")

    def positive(value):
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    shape, tag_names = facts.get("input_shape"), facts.get("tag_names")
    problems = [
        (isinstance(facts.get("backbone"), str), "'backbone' must be a string"),
        (isinstance(tag_names, list) and tag_names and all(isinstance(t, str) for t in tag_names),
         "'tag_names' must be a non-empty list of strings"),
        (isinstance(shape, list) and len(shape) == 3 and all(positive(x) for x in shape),
         "'input_shape' must be three positive integers"),
        (positive(facts.get("max_pixels")), "'max_pixels' must be a positive integer"),
    ]
    for ok, problem in problems:
        if not ok:
            raise ValueError(f"{path}: {problem}")


def write_model_facts(path, backbone, tag_names, input_shape, max_pixels):
    """Records what `export_from_checkpoint` needs to build a task's model at `path` (a task's
    `TaskLayout.model_facts`)."""
    io_utils.write_json(path,
                        {"backbone": backbone, "tag_names": list(tag_names),
                         "input_shape": [int(x) for x in input_shape], "max_pixels": int(max_pixels)})
