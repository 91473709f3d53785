"""Figures of the comparison, drawn with matplotlib's Agg backend and saved as PNG and SVG.

Each `plot_*` takes plain data (dicts and arrays from `experiments.compare` and
`experiments.analysis`) and a base path without extension, writes `<base>.png` and
`<base>.svg`, and returns the two paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

COLORS = {"lstm": "#d95f02", "rmc": "#1b9e77", "rrnn": "#7570b3"}
FALLBACK = ["#e7298a", "#66a61e", "#e6ab02", "#a6761d"]


def color_of(model: str, index: int = 0) -> str:
    """A fixed colour per model key, so every figure uses the same one."""
    return COLORS.get(model, FALLBACK[index % len(FALLBACK)])


def save(fig, base: str | os.PathLike) -> list[str]:
    """Write `fig` to `<base>.png` (150 dpi) and `<base>.svg`, close it, return both paths."""
    base = os.fspath(base)
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    paths = [f"{base}.png", f"{base}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _series(runs: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps (S,) and values (runs, S) of `key` over the steps every run evaluated.

    Runs stopped early are padded with their last value, so the mean keeps its meaning.
    """
    steps = sorted({rec["step"] for run in runs for rec in run["history"]})
    table = np.full((len(runs), len(steps)), np.nan)
    col = {s: i for i, s in enumerate(steps)}
    for r, run in enumerate(runs):
        for rec in run["history"]:
            table[r, col[rec["step"]]] = rec[key]
        last = np.nan
        for i in range(len(steps)):
            if np.isnan(table[r, i]):
                table[r, i] = last
            else:
                last = table[r, i]
    return np.asarray(steps), table


def _band(ax, steps, table, color, label):
    mean = np.nanmean(table, axis=0)
    ax.plot(steps, mean, color=color, label=label, lw=1.6)
    if table.shape[0] > 1:
        ax.fill_between(
            steps, np.nanmin(table, axis=0), np.nanmax(table, axis=0), color=color, alpha=0.2, lw=0
        )


def plot_training_curves(task: Mapping, base: str | os.PathLike) -> list[str]:
    """Training loss and validation accuracy against step for every model of one task.

    Lines are the mean over seeds, bands the min-max spread; dashed lines mark chance and,
    where the task has one, the level reachable without relational reasoning.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (key, model) in enumerate(task["models"].items()):
        runs = model["runs"]
        if not runs:
            continue
        steps, loss = _series(runs, "loss")
        _band(ax_loss, steps, loss, color_of(key, i), model["label"])
        steps, acc = _series(runs, "val_acc")
        _band(ax_acc, steps, acc, color_of(key, i), model["label"])
    ax_acc.axhline(task["chance"], color="grey", ls="--", lw=1, label="chance")
    if task.get("guess_level") is not None:
        ax_acc.axhline(
            task["guess_level"], color="grey", ls=":", lw=1, label="best without distances"
        )
    ax_loss.set(xlabel="training step", ylabel="training loss (cross-entropy)", yscale="log")
    ax_acc.set(xlabel="training step", ylabel="validation accuracy", ylim=(0, 1.02))
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{task['label']}: mean and min-max over {_seed_count(task)} seed(s)")
    return save(fig, base)


def _seed_count(task: Mapping) -> int:
    return max((len(m["runs"]) for m in task["models"].values()), default=0)


def plot_accuracy_overview(tasks: Mapping[str, Mapping], base: str | os.PathLike) -> list[str]:
    """Validation accuracy curves of every task in one grid (mean and spread over seeds)."""
    keys = list(tasks)
    cols = 3
    rows = max(1, int(np.ceil(len(keys) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        task = tasks[key]
        for i, (mkey, model) in enumerate(task["models"].items()):
            if model["runs"]:
                steps, acc = _series(model["runs"], "val_acc")
                _band(ax, steps, acc, color_of(mkey, i), model["label"])
        ax.axhline(task["chance"], color="grey", ls="--", lw=1)
        ax.set_title(task["label"], fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9)
    fig.supxlabel("training step")
    fig.supylabel("validation accuracy")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save(fig, base)


def _grouped_bars(ax, tasks: Mapping[str, Mapping], value_of, err_of=None):
    keys = list(tasks)
    models: list[str] = []
    labels: dict[str, str] = {}
    for task in tasks.values():
        for mkey, model in task["models"].items():
            if mkey not in models:
                models.append(mkey)
                labels[mkey] = model["label"]
    width = 0.8 / max(1, len(models))
    x = np.arange(len(keys))
    for j, mkey in enumerate(models):
        vals, lo, hi = [], [], []
        for key in keys:
            model = tasks[key]["models"].get(mkey)
            v = value_of(model) if model else None
            vals.append(np.nan if v is None else v)
            e = err_of(model) if (model and err_of) else None
            lo.append(0 if e is None else max(0.0, vals[-1] - e[0]))
            hi.append(0 if e is None else max(0.0, e[1] - vals[-1]))
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(
            pos,
            vals,
            width,
            color=color_of(mkey, j),
            label=labels[mkey],
            yerr=[lo, hi] if err_of else None,
            capsize=2,
            ecolor="black",
        )
    ax.set_xticks(x)
    ax.set_xticklabels([tasks[k]["short"] for k in keys], rotation=30, ha="right", fontsize=8)
    return x


def plot_accuracy_bars(tasks: Mapping[str, Mapping], base: str | os.PathLike) -> list[str]:
    """Test accuracy per task and model: bars are the mean over seeds, whiskers min-max."""
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks)), 3.8))

    def accs(model):
        return [r["test_acc"] for r in model["runs"]]

    x = _grouped_bars(
        ax,
        tasks,
        lambda m: float(np.mean(accs(m))) if accs(m) else None,
        lambda m: (min(accs(m)), max(accs(m))) if accs(m) else None,
    )
    title = "Test accuracy (dashes: chance"
    for xi, key in zip(x, tasks):
        ax.plot([xi - 0.45, xi + 0.45], [tasks[key]["chance"]] * 2, color="black", ls="--", lw=1)
        if tasks[key].get("guess_level") is not None:
            ax.plot(
                [xi - 0.45, xi + 0.45],
                [tasks[key]["guess_level"]] * 2,
                color="black",
                ls=":",
                lw=1.2,
            )
            title = "Test accuracy (dashes: chance; dots: best without comparing distances"
    ax.set(ylabel="test accuracy", ylim=(0, 1.05), title=title + ")")
    ax.legend(fontsize=8)
    return save(fig, base)


def plot_convergence(tasks: Mapping[str, Mapping], base: str | os.PathLike) -> list[str]:
    """Steps to reach each task's accuracy threshold (validation); runs that never did are
    drawn at the step budget with a hatch and an 'x'."""
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks)), 3.8))
    keys = list(tasks)
    models: list[str] = []
    for task in tasks.values():
        models += [m for m in task["models"] if m not in models]
    width = 0.8 / max(1, len(models))
    for j, mkey in enumerate(models):
        for i, key in enumerate(keys):
            model = tasks[key]["models"].get(mkey)
            if not model or not model["runs"]:
                continue
            budget = tasks[key]["steps"]
            hits = [r["steps_to_threshold"] for r in model["runs"]]
            reached = [h for h in hits if h is not None]
            value = float(np.mean([h if h is not None else budget for h in hits]))
            pos = i - 0.4 + width * (j + 0.5)
            hatch = None if len(reached) == len(hits) else "//"
            ax.bar(
                pos,
                value / budget,
                width,
                color=color_of(mkey, j),
                hatch=hatch,
                edgecolor="black",
                lw=0.5,
                label=model["label"] if i == 0 or key == keys[0] else None,
            )
            mark = "x" if not reached else f"{value:.0f}"
            ax.text(pos, value / budget + 0.02, mark, ha="center", fontsize=7, rotation=90)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels(
        [f"{tasks[k]['short']}\n@{tasks[k]['threshold']:.0%}" for k in keys],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax.set(
        ylabel="fraction of the step budget",
        ylim=(0, 1.3),
        title="Steps to reach the threshold (hatched: some seeds never did; x: none did)",
    )
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    return save(fig, base)


def plot_sample_efficiency(study: Mapping, base: str | os.PathLike) -> list[str]:
    """Test accuracy against the number of training examples, one line per model."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (mkey, model) in enumerate(study["models"].items()):
        sizes = sorted(int(n) for n in model["by_size"])
        means = [np.mean(model["by_size"][str(n)]) for n in sizes]
        lows = [np.min(model["by_size"][str(n)]) for n in sizes]
        highs = [np.max(model["by_size"][str(n)]) for n in sizes]
        ax.plot(sizes, means, "o-", color=color_of(mkey, i), label=model["label"])
        ax.fill_between(sizes, lows, highs, color=color_of(mkey, i), alpha=0.2, lw=0)
    ax.axhline(study["chance"], color="grey", ls="--", lw=1, label="chance")
    ax.set(
        xscale="log",
        xlabel="training examples",
        ylabel="test accuracy",
        ylim=(0, 1.02),
        title=f"Sample efficiency: {study['label']}",
    )
    ax.legend(fontsize=8)
    return save(fig, base)


def plot_attention(
    attention: np.ndarray, base: str | os.PathLike, title: str, step_labels: Sequence[str]
) -> list[str]:
    """Attention of one example over time: rows are heads, columns time steps.

    attention (T, H, N + 1, N + 1) for one block: in each panel, row i is what query i
    (slots m0.., then the input row) attends to, column j the key.
    """
    steps, heads, size, _ = attention.shape
    names = [f"m{i}" for i in range(size - 1)] + ["in"]
    fig, axes = plt.subplots(
        heads, steps, figsize=(1.5 * steps + 1, 1.5 * heads + 0.8), squeeze=False
    )
    for h in range(heads):
        for t in range(steps):
            ax = axes[h, t]
            im = ax.imshow(attention[t, h], vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(size))
            ax.set_yticks(range(size))
            ax.set_xticklabels(names if h == heads - 1 else [], fontsize=6)
            ax.set_yticklabels(names if t == 0 else [], fontsize=6)
            if h == 0:
                ax.set_title(step_labels[t], fontsize=7)
            if t == 0:
                ax.set_ylabel(f"head {h}\nquery", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(title, fontsize=9)
    return save(fig, base)


def plot_memory(
    updates: np.ndarray, received: np.ndarray, base: str | os.PathLike, title: str
) -> list[str]:
    """Memory evolution and slot usage.

    updates (T, N): how far each slot moved at each step for one example; received (T, N + 1):
    attention mass each slot (and the input row) receives per step, averaged over a batch.
    """
    steps, slots = updates.shape
    fig, (ax_u, ax_r) = plt.subplots(1, 2, figsize=(10, 3.4))
    im = ax_u.imshow(updates.T, aspect="auto", cmap="magma", origin="lower")
    ax_u.set(xlabel="time step", ylabel="memory slot", title="|M_t - M_t-1| per slot (one example)")
    ax_u.set_yticks(range(slots))
    ax_u.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_r.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=ax_u, label="update norm")
    names = [f"slot {i}" for i in range(slots)] + ["input row"]
    for j, name in enumerate(names):
        ax_r.plot(
            range(steps),
            received[:, j],
            marker="o",
            ms=3,
            label=name,
            ls="--" if name == "input row" else "-",
        )
    ax_r.set(
        xlabel="time step",
        ylabel="attention received (mean)",
        title="Slot usage: attention each key receives",
    )
    ax_r.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, base)


def plot_gradient_flow(
    flows: Mapping[str, Mapping], base: str | os.PathLike, title: str
) -> list[str]:
    """Gradient norms flowing back through time for several models on the same examples.

    flows: {model key: {"label", "short", "input" (T, B), "state" (T, B), optional "slots"
    (T, B, N)}}. Panels: |dL/dx_t| and |dL/dS_t| against t (median and quartiles over
    examples), then each relational memory's per-slot |dL/dM_t[slot]| (median over examples).
    """
    with_slots = [k for k, f in flows.items() if "slots" in f]
    cols = 2 + len(with_slots)
    fig, axes = plt.subplots(1, cols, figsize=(4.6 * cols, 3.6), squeeze=False)
    for i, (key, flow) in enumerate(flows.items()):
        for ax, part in zip(axes[0, :2], ("input", "state")):
            g = np.asarray(flow[part])  # (T, B)
            t = np.arange(g.shape[0])
            ax.plot(t, np.median(g, axis=1), "o-", color=color_of(key, i), label=flow["label"])
            ax.fill_between(
                t,
                np.percentile(g, 25, axis=1),
                np.percentile(g, 75, axis=1),
                color=color_of(key, i),
                alpha=0.2,
                lw=0,
            )
    axes[0, 0].set(
        xlabel="time step t", ylabel="|dL/dx_t|", yscale="log", title="into the input at step t"
    )
    axes[0, 1].set(
        xlabel="time step t",
        ylabel="|dL/dS_t|",
        yscale="log",
        title="into the memory after step t\n(LSTM: cell c_t; RMC: all of M_t)",
    )
    axes[0, 0].legend(fontsize=8)
    for ax, key in zip(axes[0, 2:], with_slots):
        slots = np.median(np.asarray(flows[key]["slots"]), axis=1)  # (T, N)
        im = ax.imshow(slots.T, aspect="auto", origin="lower", cmap="viridis")
        ax.set(
            xlabel="time step t",
            ylabel="memory slot",
            title=f"{flows[key].get('short', key)}: |dL/dM_t[slot]| (median)",
        )
        ax.set_yticks(range(slots.shape[1]))
        fig.colorbar(im, ax=ax)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, base)


def plot_breakdown(task: Mapping, base: str | os.PathLike) -> list[str]:
    """Test accuracy per category (e.g. the n asked in Nth-farthest) for each model."""
    rows = task["breakdown"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    models = list(rows["models"])
    values = [r["value"] for r in rows["models"][models[0]]]
    width = 0.8 / len(models)
    x = np.arange(len(values))
    for j, mkey in enumerate(models):
        accs = {r["value"]: r["accuracy"] for r in rows["models"][mkey]}
        ax.bar(
            x - 0.4 + width * (j + 0.5),
            [accs.get(v, np.nan) for v in values],
            width,
            color=color_of(mkey, j),
            label=task["models"][mkey]["label"],
        )
    ax.axhline(task["chance"], color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in values])
    ax.set(
        xlabel=rows["name"],
        ylabel="test accuracy",
        ylim=(0, 1.05),
        title=f"{task['label']}: accuracy by {rows['name']}",
    )
    ax.legend(fontsize=8)
    return save(fig, base)


def plot_harder(tasks: Mapping[str, Mapping], base: str | os.PathLike) -> list[str]:
    """Accuracy on the training distribution next to the harder held-out variant, per model."""
    keys = [k for k, t in tasks.items() if t.get("hard")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys)), 3.8))
    models: list[str] = []
    for k in keys:
        models += [m for m in tasks[k]["models"] if m not in models]
    width = 0.8 / max(1, 2 * len(models))
    for i, key in enumerate(keys):
        for j, mkey in enumerate(models):
            model = tasks[key]["models"].get(mkey)
            hard = tasks[key]["hard"]["models"].get(mkey)
            if not model or not hard:
                continue
            base_acc = float(np.mean([r["test_acc"] for r in model["runs"]]))
            hard_acc = float(np.mean(hard["accs"]))
            p = i - 0.4 + width * (2 * j + 0.5)
            label = model["label"] if i == 0 else None
            ax.bar(p, base_acc, width, color=color_of(mkey, j), label=label)
            ax.bar(
                p + width,
                hard_acc,
                width,
                color=color_of(mkey, j),
                hatch="//",
                alpha=0.6,
                label=f"{model['label']}, harder" if i == 0 else None,
            )
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels(
        [f"{tasks[k]['short']}\n{tasks[k]['hard']['label']}" for k in keys], fontsize=7
    )
    ax.set(
        ylabel="test accuracy",
        ylim=(0, 1.05),
        title="Trained distribution (solid) vs harder held-out variant (hatched)",
    )
    ax.legend(fontsize=7)
    return save(fig, base)


def _outline_base(bars, rows: Sequence[Mapping], base_variant: str | None) -> None:
    for bar, r in zip(bars, rows):
        if r["variant"] == base_variant:
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)


def plot_ablation(summary: Mapping, base: str | os.PathLike) -> list[str]:
    """Every ablation variant, one column per factor: test accuracy (top) and validation steps
    to the task's threshold (bottom). Bars are means over seeds, dots single seeds; a seed that
    never reached the threshold is drawn at the step budget as a red x."""
    factors = [f for f in dict.fromkeys(r["factor"] for r in summary["rows"]) if f != "reference"]
    lstm = [r for r in summary["rows"] if r["factor"] == "reference" and r["accs"]]
    cols = max(1, len(factors))
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols + 0.6, 5.6), sharey="row", squeeze=False)
    budget = summary["steps"]
    for col, factor in enumerate(factors):
        ax, ax_steps = axes[0, col], axes[1, col]
        rows = [r for r in summary["rows"] if r["factor"] == factor]
        x = np.arange(len(rows))
        means = [np.nan if r["test_acc"]["mean"] is None else r["test_acc"]["mean"] for r in rows]
        bars = ax.bar(x, means, 0.6, color=color_of("rmc"), alpha=0.85, linewidth=0)
        _outline_base(bars, rows, summary.get("base_variant"))
        for xi, r in zip(x, rows):
            ax.plot([xi] * len(r["accs"]), r["accs"], "o", ms=3.5, color="black", zorder=3)
        if lstm:
            ax.axhline(np.mean(lstm[0]["accs"]), color=color_of("lstm"), lw=1.4)
        ax.axhline(summary["chance"], color="grey", ls="--", lw=1)
        if summary.get("guess_level") is not None:
            ax.axhline(summary["guess_level"], color="grey", ls=":", lw=1.2)
        ax.set_title(factor, fontsize=10)
        ax.set_ylim(0, 1.02)

        steps = [[budget if s is None else s for s in r["steps_to_threshold"]] for r in rows]
        bars = ax_steps.bar(
            x,
            [np.mean(v) if v else np.nan for v in steps],
            0.6,
            color=color_of("rmc"),
            alpha=0.5,
            linewidth=0,
        )
        _outline_base(bars, rows, summary.get("base_variant"))
        for xi, r, v in zip(x, rows, steps):
            missed = [s is None for s in r["steps_to_threshold"]]
            for value, miss in zip(v, missed):
                ax_steps.plot(
                    xi,
                    value,
                    "x" if miss else "o",
                    ms=5 if miss else 3.5,
                    color="#d62728" if miss else "black",
                    zorder=3,
                )
        ax_steps.axhline(budget, color="grey", ls="--", lw=1)
        ax_steps.set_ylim(0, budget * 1.05)
        for a in (ax, ax_steps):
            a.set_xticks(x)
            a.set_xticklabels([r["value"] for r in rows], fontsize=8)
    axes[0, 0].set_ylabel("test accuracy")
    axes[1, 0].set_ylabel(f"steps to {100 * summary['threshold']:.0f}% (validation)")
    note = "bars: mean over seeds (outlined: the base RMC), dots: seeds; grey dashes: chance"
    if summary.get("guess_level") is not None:
        note += ", dotted: guess level"
    if lstm:
        note += "; orange: matched LSTM"
    note += "; bottom dashes: the step budget"
    fig.suptitle(f"Ablations of the RMC on {summary['label']}\n{note}", fontsize=9)
    fig.tight_layout()
    return save(fig, base)


__all__ = [
    "plot_ablation",
    "plot_accuracy_bars",
    "plot_accuracy_overview",
    "plot_attention",
    "plot_breakdown",
    "plot_convergence",
    "plot_gradient_flow",
    "plot_harder",
    "plot_memory",
    "plot_sample_efficiency",
    "plot_training_curves",
    "save",
]
