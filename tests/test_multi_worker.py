"""Two `wsnn.train` workers under MultiWorkerMirroredStrategy on 127.0.0.1.

Both run the same command on one shared workdir, as on a real cluster; the
test checks that their final weights are bit-identical, that the chief alone
wrote the outputs, and that the other worker left nothing behind.
"""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from wsnn import models
from wsnn.training.state import weights_digest
from wsnn.data import dataset as dataset_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "flags", "smoke.cfg")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _digest(text, task):
    found = re.findall(rf"\[{task}\] (\w+ \d|chief): final weights sha256 ([0-9a-f]{{64}})", text)
    assert len(found) == 1, text[-3000:]
    return found[0][1]


def test_two_workers_train_in_sync_and_only_the_chief_writes(tmp_path):
    workdir = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TMPDIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="2")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "wsnn.train", f"--flagfile={SMOKE}", f"--workdir={workdir}",
             "--strategy=multi_worker", "--num_devices=0", "--task=annotation", "--stage1_epochs=2",
             "--stage2_epochs=2", "--neighbour_mode=fast", "--checkpoint_every_steps=2"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=420)[0])
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    chief, other = outputs
    assert "2 replica(s) in sync; this process (worker 0)" in chief
    assert "this process (worker 1)" in other and "writes no outputs" in other

    # Identical weights: the two workers' digests, and the chief's final checkpoint.
    digest = _digest(chief, "annotation")
    assert _digest(other, "annotation") == digest
    task_dir = workdir / "annotation"
    summary = json.loads((task_dir / "metrics.json").read_text())
    assert summary["weights_sha256"] == digest
    model = models.build_model("small_cnn", dataset_lib.load(str(workdir / "prepared")).num_tags, (56, 56, 1))
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(str(task_dir / "checkpoints"))).expect_partial()
    assert weights_digest(model) == digest
    exported = tf.saved_model.load(str(task_dir / "export" / "1"))
    images = np.random.default_rng(0).integers(0, 256, (3, 56, 56, 1), dtype=np.uint8)
    served = exported.signatures["serve_images"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(served, model(images, training=False)["tag_probs"].numpy(), atol=1e-6)

    # Only the chief's files: one export version, one event file, one checkpoint series;
    # the other worker's scratch directory is gone.
    assert sorted(os.listdir(task_dir / "export")) == ["1"]
    events = [f for _, _, files in os.walk(workdir / "tensorboard") for f in files]
    assert len(events) == 1, events
    ran = {stage: len([r for r in summary["history"] if r["stage"] == stage and r["epoch"] > 0]) for stage in (1, 2)}
    assert summary["steps"]["completed"] == (summary["steps"]["stage1_per_epoch"] * ran[1]
                                             + summary["steps"]["stage2_per_epoch"] * ran[2])
    assert os.listdir(tmp_path / "tmp1") == []


def test_multi_worker_without_tf_config_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "wsnn.train", f"--flagfile={SMOKE}", f"--workdir={tmp_path}",
                             "--strategy=multi_worker", "--num_devices=0"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "wsnn.train: error: --strategy=multi_worker: set TF_CONFIG")
    assert not os.listdir(tmp_path)
