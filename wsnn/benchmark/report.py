"""The benchmark's reports: the tables (tables.md), results.json, the pictures and TensorBoard's HParams.

`aggregate` makes the mean +- std table over seeds, `format_tables` lays it
out as the paper's Tables 2-5, `write` writes results.json and tables.md into
`output_dir`, `pictures` draws the per-label AP bars and the dynamic-neighbour
figure (the paper's Fig. 4), and `hparams` puts the grid search's trials in
TensorBoard's HParams dashboard.
"""

import dataclasses
import os

import numpy as np

from wsnn import io_utils, metrics
from wsnn.benchmark.methods import TABLE_ORDER

METRICS = ("miAP", "mAP", "MicroAUC", "MacroAUC")


def aggregate(per_seed):
    """{protocol: {method: {metric: (mean, std)}}} over seeds."""
    table = {}
    for protocol in ("annotation", "refinement"):
        table[protocol] = {}
        for method in per_seed[0][protocol]:
            runs = [seed[protocol][method] for seed in per_seed]
            table[protocol][method] = {
                key: [float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs]))]
                for key in (*METRICS, "tag_std", "seconds", "peak_mib", "stage2_epoch")
                if all(key in r for r in runs)}
            if "ap_per_label" in runs[0]:
                table[protocol][method]["ap_per_label_mean"] = [
                    None if any(r["ap_per_label"][l] is None for r in runs)
                    else float(np.mean([r["ap_per_label"][l] for r in runs]))
                    for l in range(len(runs[0]["ap_per_label"]))]
    return table


def convention_line(convention):
    """One sentence saying which metric and neighbour conventions a table uses."""
    c = metrics.CONVENTIONS[convention]
    ties = "ranked by position" if c["ties"] == "position" else "one threshold (scikit-learn)"
    empty = "count as AP 0" if c["empty_labels"] == "zero" else "left out of mAP"
    return (f"Convention: {convention} (AP ties: {ties}; labels without positives: {empty}; "
            f"neighbour distance: {c['distance']}).")


def format_tables(table, seeds, header):
    """Markdown in the paper's layout (Tables 2-5)."""
    lines = [header, ""]
    for protocol, methods in TABLE_ORDER.items():
        lines += [f"### {protocol.capitalize()} (mean +- std over {seeds} seed(s))", "",
                  "| Method | miAP | mAP | MicroAUC | MacroAUC | tag_std | time (s) | peak memory (MiB) | "
                  "stage-2 epochs kept |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method in methods:
            row = table[protocol].get(method)
            if row is None:
                continue
            cells = [f"{row[m][0]:.3f} +- {row[m][1]:.3f}" for m in METRICS]
            cells.append(f"{row['tag_std'][0]:.3f}" if "tag_std" in row else "-")
            cells.append(f"{row['seconds'][0]:.1f}" if "seconds" in row else "-")
            cells.append(f"{row['peak_mib'][0]:.0f}" if "peak_mib" in row else "-")
            cells.append(f"{row['stage2_epoch'][0]:.1f}" if "stage2_epoch" in row else "-")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_ap_bars(ap, label_names, path, title):
    """Per-label AP bars, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    methods = list(ap)
    width = 0.8 / len(methods)
    # tab20 keeps up to 20 methods apart (the default cycle repeats after 10).
    colours = plt.get_cmap("tab20")(np.arange(len(methods)) % 20)
    figure, axes = plt.subplots(figsize=(max(10, len(label_names) * 1.1), 5))
    x = np.arange(len(label_names))
    for i, method in enumerate(methods):
        axes.bar(x + i * width, ap[method], width, label=method, color=colours[i])
    axes.set_xticks(x + 0.4 - width / 2, label_names, rotation=30, ha="right")
    axes.set_ylabel("AP")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(fontsize=8, ncol=min(len(methods), 5), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    figure.tight_layout()
    figure.savefig(path + ".tmp.png", dpi=100)
    plt.close(figure)
    os.replace(path + ".tmp.png", path)


def plot_neighbours(snapshots, train_set, source, path):
    """A query and its selected neighbours after each stage-2 epoch; green: shares a label."""
    from PIL import Image, ImageDraw

    query = snapshots[0]["query"]
    size, pad = 64, 4
    columns = 1 + max(len(s["neighbours"]) for s in snapshots)
    canvas = Image.new("RGB", (columns * (size + pad) + 90, len(snapshots) * (size + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)

    def tile(index):
        array = source.get([index])[0]
        mode = "L" if array.shape[-1] == 1 else "RGB"
        return Image.fromarray(array[..., 0] if mode == "L" else array, mode).convert("RGB").resize((size, size))

    for row, snapshot in enumerate(snapshots):
        y = pad + row * (size + pad)
        draw.text((4, y + size // 2 - 6), f"epoch {snapshot['epoch']}", fill="black")
        canvas.paste(tile(query), (90, y))
        for col, index in enumerate(snapshot["neighbours"], start=1):
            x = 90 + col * (size + pad)
            canvas.paste(tile(index), (x, y))
            shared = train_set.labels is not None and bool(
                (train_set.labels[index] & train_set.labels[query]).any())
            draw.rectangle([x, y, x + size - 1, y + size - 1], outline="green" if shared else "red", width=3)
    io_utils.write_bytes(path, png_bytes(canvas))


def png_bytes(image):
    """A PIL image as PNG file bytes."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def output_dir(workdir, bench):
    """`<workdir>/benchmark`, or `<workdir>/benchmark-jingwei` under jingwei's convention, so that a rerun
    under the other convention (which reuses every trained task) keeps the first one's tables."""
    return os.path.join(workdir, "benchmark" if bench.convention == "wsnn" else f"benchmark-{bench.convention}")


def write(results, dataset, bench, out_dir):
    """results.json and tables.md (its header: the data, the seeds, the wall time, the convention)."""
    os.makedirs(out_dir, exist_ok=True)
    io_utils.write_json(os.path.join(out_dir, "results.json"), results)
    header = (f"wsnn benchmark: {dataset.num_images} images, {dataset.num_tags} tags, {dataset.num_labels} "
              f"labels; {bench.seeds} seed(s); {results['wall_seconds'] / 60:.1f} min\n\n"
              f"{convention_line(bench.convention)}")
    io_utils.write_text(os.path.join(out_dir, "tables.md"), format_tables(results["table"], bench.seeds, header))


def earlier_rows(workdir, bench):
    """{seed: {protocol: {method: row}}} of the results.json an earlier run left in this convention's
    output directory, else in the default one (a training's cost does not depend on the convention), or
    {}."""
    from wsnn.training import state

    default = dataclasses.replace(bench, convention="wsnn")
    for out_dir in (output_dir(workdir, bench), output_dir(workdir, default)):
        earlier = state.read_json(os.path.join(out_dir, "results.json"))
        if earlier is not None:
            return dict(enumerate(earlier.get("per_seed", [])))
    return {}


def pictures(config, dataset, per_seed, out_dir):
    """Per-label AP bars of every method (first seed) and the dynamic-neighbour figure."""
    from wsnn.data import pipeline

    for task, order in TABLE_ORDER.items():
        rows = per_seed[0][task]
        ap = {method: [np.nan if v is None else v for v in rows[method]["ap_per_label"]]
              for method in order if "ap_per_label" in rows.get(method, {})}
        plot_ap_bars(ap, dataset.label_names, os.path.join(out_dir, f"ap_per_label_{task}.png"),
                     f"{task}: AP per label (seed 0)")
    # Refinement trains on every image, so its training-image indices are the dataset's.
    snapshots = per_seed[0].get("neighbour_snapshots")
    if snapshots:
        source = pipeline.ImageSource(dataset, config.data.image_size or None, config.data.channels or None)
        plot_neighbours(snapshots, dataset, source, os.path.join(out_dir, "dynamic_neighbours.png"))


def hparams(trials, directory, keys):
    """Every trial in TensorBoard's HParams dashboard."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    for i, trial in enumerate(trials):
        with tf.summary.create_file_writer(os.path.join(directory, f"trial{i:03d}")).as_default():
            hp.hparams({k: trial[k] for k in keys}, trial_id=f"trial{i:03d}")
            tf.summary.scalar("validation/mAP", trial["validation"]["mAP"], step=0)
            tf.summary.scalar("validation/miAP", trial["validation"]["miAP"], step=0)
            tf.summary.scalar("stage2_epoch", trial["stage2_epoch"], step=0)
