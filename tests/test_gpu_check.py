"""tools/gpu_check.sh at toy size on the CPU: it runs, and its numbers agree with each other."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_runs_at_toy_size_and_reports_consistent_numbers(tmp_path):
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--image_size=32", "--num_images=48",
         "--batch_size=8", "--group_size=4", "--num_candidates=8", "--steps=2", f"--workdir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["settings"]["backbone"] == "vgg16" and report["device"] in ("CPU", "GPU")
    for run in ("stage1", "stage2_exact", "stage2_fast"):
        r = report[run]
        assert r["steps"] == 2 and r["step_s_median"] > 0 and 0 <= r["batch_share"] <= 1
        assert abs(r["images_per_s"] * r["step_s_median"] - 8) < 1e-6
        assert ("peak_device_memory_mib" in r) == (report["device"] == "GPU")
    # Exact: each of the s/m = 2 anchors and its M = 8 candidates, each distinct image embedded once.
    assert 0 < report["stage2_exact"]["images_embedded_per_step"] <= 2 * 9
    # Fast (no shortlist): only the bank, all 48 images once at the start of stage 2, over 2 steps.
    assert report["stage2_fast"]["images_embedded_per_step"] == 48 / 2
