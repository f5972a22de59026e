"""Export the tagger as a SavedModel for TF Serving.

    python -m wsnn.export --workdir=runs/fashion_tags/refinement --export_dir=exports/fashion_tags

Layout (TF Serving's): `<export_dir>/<version>/saved_model.pb`, `variables/`,
and `assets/tags.txt` + `assets/wsnn.json` (vocabulary, input size,
channels, top k). Versions are integers; a new export takes the next one, and
is written under a temporary name and renamed, so TF Serving never sees a
half-written version.

Signatures (the model needs nothing from wsnn once exported):
  serving_default  image_bytes: tf.string [None] (JPEG, PNG, GIF or BMP files),
                   decoded and resized in the graph by the same
                   `wsnn.data.pipeline.decode_and_resize` as in training;
  serve_images     images: uint8 [None, S, S, channels], already sized.
Both return probabilities [None, C] float32, top_k_tags [None, k] string and
top_k_scores [None, k] float32. TF Serving's REST API decodes base64 for
inputs whose name ends in `_bytes`: {"instances": [{"b64": "..."}]}.
"""

import json
import os
import re
import shutil
import sys
import tempfile

import tensorflow as tf

from wsnn.data import pipeline

METADATA = "wsnn.json"
TAGS = "tags.txt"


class ServingModule(tf.Module):
    """The trained model with explicit serving signatures and its vocabulary."""

    def __init__(self, model, tag_names, image_size, channels, top_k=10):
        super().__init__()
        self.model = model
        self.image_size, self.channels = int(image_size), int(channels)
        self.top_k = min(int(top_k), len(tag_names))
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
            lambda b: pipeline.decode_and_resize(b, self.image_size, self.channels), image_bytes,
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, self.channels], tf.uint8))
        return self._outputs(images)

    def _serve_images(self, images):
        return self._outputs(images)


def next_version(export_dir):
    """1 + the largest integer version in `export_dir` (1 if there is none)."""
    if not os.path.isdir(export_dir):
        return 1
    versions = [int(n) for n in os.listdir(export_dir) if re.fullmatch(r"\d+", n)]
    return max(versions, default=0) + 1


def export(model, tag_names, image_size, channels, export_dir, top_k=10, version=None):
    """Writes `<export_dir>/<version>/` atomically; returns its path."""
    version = version or next_version(export_dir)
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target):
        raise ValueError(f"{target} exists: exported versions are never overwritten")
    os.makedirs(export_dir, exist_ok=True)
    module = ServingModule(model, tag_names, image_size, channels, top_k)
    tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=export_dir)
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
                       "channels": module.channels, "top_k": module.top_k, "format": "wsnn.saved_model",
                       "version": 1}, f, indent=1)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_version_dir(path):
    """A version directory: `path` itself, or the highest integer version inside it.

    Raises:
      ValueError: no SavedModel there, or a truncated one.
    """
    if not os.path.isdir(path):
        raise ValueError(f"--model={path}: no such directory")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        versions = sorted((int(n) for n in os.listdir(path) if re.fullmatch(r"\d+", n)), reverse=True)
        if not versions:
            raise ValueError(f"--model={path}: neither a SavedModel (no saved_model.pb) nor an export "
                             "directory with integer versions")
        path = os.path.join(path, str(versions[0]))
    for needed in ("saved_model.pb", "variables/variables.index", f"assets/{METADATA}"):
        if not os.path.isfile(os.path.join(path, needed)):
            raise ValueError(f"--model={path}: incomplete SavedModel ({needed} is missing); export it again")
    return path


def load(path):
    """Loads an exported tagger; returns (the loaded object, its metadata dict)."""
    path = resolve_version_dir(path)
    with open(os.path.join(path, "assets", METADATA), encoding="utf-8") as f:
        metadata = json.load(f)
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"--model={path}: cannot load the SavedModel ({type(e).__name__}: "
                         f"{str(e).splitlines()[0]})") from None
    return loaded, metadata


def export_from_workdir(task_dir, export_dir, top_k=10):
    """Rebuilds a task's model from its latest checkpoint and exports it."""
    from wsnn import config as config_lib
    from wsnn import train_lib
    from wsnn.data import dataset as dataset_lib

    config_path = os.path.join(task_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"--workdir={task_dir}: no config.json; give a task directory such as "
                         "runs/fashion_tags/refinement")
    with open(config_path) as f:
        recorded = json.load(f)
    # The task directory's parent is the run's workdir, wherever it lives now.
    recorded["workdir"] = os.path.dirname(os.path.abspath(task_dir))
    config = config_lib.TrainConfig(**recorded)
    dataset = dataset_lib.load(os.path.join(config.workdir, "prepared"))
    trainer = train_lib.Trainer(config, dataset, os.path.basename(os.path.normpath(task_dir)),
                                train_lib.make_strategy(1))
    if not trainer.manager.latest_checkpoint:
        raise ValueError(f"--workdir={task_dir}: no checkpoint to export")
    trainer.checkpoint.restore(trainer.manager.latest_checkpoint).expect_partial()
    return trainer.export(export_dir, top_k)


def main(argv):
    """Exports a task directory's latest checkpoint."""
    from absl import flags

    del argv
    config = flags.FLAGS
    try:
        path = export_from_workdir(config.workdir, config.export_dir, config.top_k)
    except ValueError as e:
        print(f"wsnn.export: error: {e}", file=sys.stderr)
        return 2
    print(f"Exported {path}")
    return 0


def run():
    """Console-script entry point."""
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "A task directory of a training run (e.g. runs/x/refinement).")
    flags.DEFINE_string("export_dir", None, "Where to add the next integer version.")
    flags.DEFINE_integer("top_k", 10, "Tags returned by the signatures' top_k outputs.")
    flags.mark_flags_as_required(["workdir", "export_dir"])
    app.run(main)


if __name__ == "__main__":
    run()
