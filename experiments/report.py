"""report.md from the results of a comparison study: every sentence with a number is generated
from `results.json`, so the same seeds always give the same report (wall times aside)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PAPER_RMC_K8 = 0.91  # Santoro et al. (2018), Nth-farthest with 8 vectors of 16 dimensions
PAPER_LSTM_K8_BELOW = 0.30
HELPS = 0.05  # an accuracy gap counted as a difference between the models
MEMORISED = 0.25  # training-batch accuracy this far above test accuracy is memorisation
# LSTM test accuracy on bAbI tasks 1-3 with 1k training stories, Weston et al. (2015), Table 3
BABI_LSTM_1K = {1: 0.50, 2: 0.20, 3: 0.20}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _acc(summary: Mapping) -> str:
    if summary.get("mean") is None:
        return "n/a"
    if summary["min"] == summary["max"]:
        return _pct(summary["mean"])
    return f"{_pct(summary['mean'])} ({_pct(summary['min'])}–{_pct(summary['max'])})"


def _figure(paths: Sequence[str], alt: str) -> str:
    """Inline PNG with links to every format of the figure."""
    png = next((p for p in paths if p.endswith(".png")), None)
    links = " · ".join(f"[{Path(p).suffix[1:].upper()}]({p})" for p in paths)
    return (f"![{alt}]({png})\n\n" if png else "") + f"{alt}: {links}\n"


def _mean(task: Mapping, kind: str) -> float | None:
    model = task["models"].get(kind)
    return None if model is None else model["test_acc"]["mean"]


def _steps(model: Mapping, budget: int) -> str:
    hits = model["steps_to_threshold"]
    reached = [h for h in hits if h is not None]
    if not reached:
        return f"not within {budget}"
    text = ", ".join(str(h) if h is not None else "—" for h in hits)
    return text if len(reached) == len(hits) else f"{text} ({len(reached)}/{len(hits)} seeds)"


def _setup_table(tasks: Mapping[str, Mapping]) -> list[str]:
    lines = [
        "| task | data | steps × batch | stop at (validation) | lr (warm-up) | clip | RMC | LSTM "
        "| parameters RMC / LSTM (gap) | head |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks.values():
        models = task["models"]
        rmc, lstm = models.get("rmc"), models.get("lstm")
        data = "fresh batches" if task["fresh"] else f"{task['n_train']} fixed examples"
        counts = ""
        if rmc and lstm:
            gap = (lstm["params"] - rmc["params"]) / rmc["params"]
            counts = f"{rmc['params']:,} / {lstm['params']:,} ({100 * gap:+.1f}%)"
        head = (rmc or lstm or {}).get("head", "")
        lines.append(
            f"| {task['label']} | {data} | {task['steps']} × {task['batch_size']} | "
            f"{_pct(task.get('target_accuracy')) if task.get('target_accuracy') else 'never'} | "
            f"{task['lr']:g} ({task['warmup']}) | {task['clip_norm']:g} | "
            f"{rmc['size'] if rmc else '—'} | {lstm['size'] if lstm else '—'} | {counts} | "
            f"{head} |"
        )
    extra = [
        f"{m['label']}: {m['size']}, {m['params']:,} parameters on {t['label']}"
        for t in tasks.values()
        for k, m in t["models"].items()
        if k not in ("rmc", "lstm")
    ]
    if extra:
        lines += ["", "Also trained: " + "; ".join(extra) + "."]
    return lines


def _results_table(tasks: Mapping[str, Mapping]) -> list[str]:
    lines = [
        "| task | chance | model | test accuracy, mean (min–max) | best validation | training "
        "batches at the end | steps to threshold | wall time per run | ms per step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks.values():
        for m in task["models"].values():
            lines.append(
                f"| {task['short']} | {_pct(task['chance'])} | {m['short']} | "
                f"{_acc(m['test_acc'])} | {_acc(m['best_val_acc'])} | "
                f"{_pct(m['final_train_acc']['mean'])} | "
                f"{_steps(m, task['steps'])} @ {_pct(task['threshold'])} | "
                f"{m['wall_time']['mean']:.0f} s | {m['ms_per_step']['mean']:.1f} |"
            )
    return lines


def _verdicts(tasks: Mapping[str, Mapping]) -> tuple[list[str], list[str], list[str]]:
    helps, same, hurts = [], [], []
    for task in tasks.values():
        r, l_ = _mean(task, "rmc"), _mean(task, "lstm")
        if r is None or l_ is None:
            continue
        text = f"{task['short']} ({_pct(r)} vs {_pct(l_)})"
        (helps if r - l_ > HELPS else hurts if l_ - r > HELPS else same).append(text)
    return helps, same, hurts


def _claims(tasks: Mapping[str, Mapping], mode: str) -> list[str]:
    lines = []
    nth = {k: t for k, t in tasks.items() if t["task"] == "nth_farthest"}
    k8 = next(
        (t for t in nth.values() if t["options"].get("K") == 8 and t["options"].get("d") == 16),
        None,
    )
    lines.append(
        f"**Claim 1 — Nth-farthest, 8 vectors of 16 dimensions: RMC {_pct(PAPER_RMC_K8)}, LSTM "
        f"below {_pct(PAPER_LSTM_K8_BELOW)}.**"
    )
    if k8 is None or _mean(k8, "rmc") is None or _mean(k8, "lstm") is None:
        lines.append(
            f"Not tested in this run: the paper's size was not trained ({mode} mode). "
            "`python -m experiments.compare --full` trains it."
        )
    else:
        r, l_ = _mean(k8, "rmc"), _mean(k8, "lstm")
        rmc_ok = r >= PAPER_RMC_K8 - 0.05
        lstm_ok = l_ < PAPER_LSTM_K8_BELOW
        verdict = (
            "reproduced"
            if rmc_ok and lstm_ok
            else "partly reproduced"
            if rmc_ok or lstm_ok
            else "not reproduced"
        )
        lines.append(
            f"{verdict.capitalize()} at this scale: RMC {_pct(r)}, LSTM {_pct(l_)} after "
            f"{k8['steps']} steps of {k8['batch_size']} (the paper trained far longer)."
        )
    lines.append("")
    lines.append(
        "**Claim 2 — the relational memory solves Nth-farthest where an LSTM of similar size "
        "does not.** Checked at every size trained here (solved: at least 90% test accuracy; "
        "stuck: within 5 points of the 2/K level that a model reaches without comparing "
        "distances, see below):"
    )
    if not nth:
        lines.append("- no Nth-farthest task in this run.")
    for task in nth.values():
        r, l_ = _mean(task, "rmc"), _mean(task, "lstm")
        if r is None or l_ is None:
            continue
        guess = task.get("guess_level")
        solved = r >= 0.9
        stuck = guess is not None and abs(l_ - guess) <= 0.05
        if not solved:
            verdict = "not reproduced: the RMC stays below 90%"
        elif l_ >= 0.9:
            verdict = "not shown at this size: both models solve it"
        elif r - l_ > HELPS:
            verdict = "reproduced"
        else:
            verdict = "partly reproduced"
        lines.append(
            f"- {task['label']}: RMC {_pct(r)} vs LSTM {_pct(l_)} (2/K level {_pct(guess)}; "
            f"LSTM {'stuck at it' if stuck else 'not at it'}) — {verdict}."
        )
    lines.append("")
    lines.append(
        "**Claim 3 — the LSTM's failure is a plateau at the guessing level, not noise.** A "
        "model that reads the question but cannot compare distances answers the n = K−1 "
        "queries (m itself) and guesses among the K−1 other labels otherwise: 2/K overall, "
        "25% for K = 8, which is where the paper's LSTM sits (below 30%)."
    )
    for task in nth.values():
        bd = task.get("breakdown")
        if not bd or "lstm" not in bd["models"]:
            continue
        k = task["options"].get("K")
        rows = {r["value"]: r["accuracy"] for r in bd["models"]["lstm"]}
        last = rows.get(k - 1)
        others = [v for n, v in rows.items() if n != k - 1]
        if last is None or not others:
            continue
        mean_other = sum(others) / len(others)
        lines.append(
            f"- {task['label']}: the LSTM answers n = K−1 with {_pct(last)} accuracy and the "
            f"other queries with {_pct(mean_other)} (guessing among K−1 labels: "
            f"{_pct(1 / (k - 1))})."
        )
    lines.append("")
    helps, same, hurts = _verdicts(tasks)
    lines.append(
        "**Claim 4 — relational memory helps on relational reasoning over sequences in "
        "general.** At this scale the RMC beat the LSTM by more than "
        f"{100 * HELPS:.0f} points on {len(helps)} of {len(helps) + len(same) + len(hurts)} "
        f"tasks, tied on {len(same)} and lost on {len(hurts)} (details below)."
    )
    real = {int(t["task"][7:]): t for t in tasks.values() if t["task"].startswith("babi_qa")}
    scores = {i: (_mean(real[i], "lstm"), _mean(real[i], "rmc")) for i in sorted(real)}
    if scores:
        ours = "; ".join(
            f"qa{i}: LSTM {_pct(lstm)}, RMC {_pct(rmc)}" for i, (lstm, rmc) in scores.items()
        )
        lines.append("")
        lines.append(
            "**Context for real bAbI (1k stories).** For scale: the LSTM baseline of the bAbI "
            "paper (Weston et al., 2015, 1k training stories) scored "
            + ", ".join(f"qa{i} {_pct(BABI_LSTM_1K[i])}" for i in scores if i in BABI_LSTM_1K)
            + f". Here: {ours}. Santoro et al. report bAbI only for 10k-story joint training, "
            "which this study does not attempt."
        )
    return lines


def _breakdown_table(task: Mapping) -> list[str]:
    bd = task["breakdown"]
    kinds = list(bd["models"])
    head = " | ".join(task["models"][k]["short"] for k in kinds)
    lines = [f"| {bd['name']} | examples | {head} |", "|---|---|" + "---|" * len(kinds)]
    rows = {k: {r["value"]: r for r in bd["models"][k]} for k in kinds}
    for value, first in rows[kinds[0]].items():
        accs = " | ".join(_pct(rows[k].get(value, {}).get("accuracy")) for k in kinds)
        lines.append(f"| {value} | {first['count']} | {accs} |")
    return lines


def _failures(cases: Sequence[Mapping]) -> list[str]:
    lines = []
    for case in cases:
        lines.append(f"*{case['kind']}* (test example {case['index']}):")
        lines.append("")
        lines.append("```")
        lines.extend(case["text"].splitlines())
        for model, verdict in case["verdicts"].items():
            said = verdict.split("prediction:", 1)[-1].strip()
            lines.append(f"{model} predicts: {said}")
        lines.append("```")
        lines.append("")
    return lines


def _inside(results: Mapping) -> list[str]:
    lines = []
    for key, inside in results.get("inside", {}).items():
        task = results["tasks"][key]
        lines.append(f"### {task['label']}")
        lines.append("")
        for item in inside.get("attention", []):
            alt = f"RMC attention per head over time, test example {item['index']}"
            lines.append(_figure(item["paths"], f"{alt} ({item['outcome']})"))
            lines.append("```")
            lines.extend(item["text"].splitlines())
            lines.append("```")
            lines.append("")
        if "memory" in inside:
            usage = ", ".join(f"{_pct(v)}" for v in inside["slot_usage"][:-1])
            lines.append(_figure(inside["memory"], "memory evolution and slot usage"))
            lines.append(
                f"Mean attention each slot receives: {usage}; the input row receives "
                f"{_pct(inside['slot_usage'][-1])}."
            )
            lines.append("")
        if "gradient_flow" in inside:
            lines.append(_figure(inside["gradient_flow"], "gradient norms through time"))
            for kind, g in inside["gradient_summary"].items():
                ratio = g["input_first"] / g["input_last"] if g["input_last"] else float("nan")
                lines.append(
                    f"- {task['models'][kind]['short']}: median |dL/dx| {g['input_first']:.2e} "
                    f"at the first step and {g['input_last']:.2e} at the last (ratio "
                    f"{ratio:.2g}); memory gradient {g['state_first']:.2e} → "
                    f"{g['state_last']:.2e}."
                )
            lines.append("")
    return lines


def _ablation(summary: Mapping, first: bool = True) -> list[str]:
    """An ablation section: what was varied, the table and figure, and what stands out."""
    from experiments.ablate import markdown_lines

    folder = summary.get("folder", ".")
    out = [f"## Ablations on {summary['label']}", ""]
    if first:
        out += [
            "Which parts of the relational memory matter? Each variant changes one thing of the "
            "RMC and is trained from scratch with the task's full budget "
            "(`python -m experiments.ablate`). Heads split the same memory width.",
            "",
        ]
    out += [
        f"From `{folder}/ablation.md`:",
        "",
        *markdown_lines(summary, folder if folder != "." else ""),
        "",
    ]
    if summary.get("interrupted") or summary.get("problems"):
        return out  # partial rows: no ranking of variants
    rows = [r for r in summary["rows"] if r["test_acc"]["mean"] is not None]
    lstm = next((r for r in rows if r["factor"] == "reference"), None)
    for factor in dict.fromkeys(r["factor"] for r in rows if r["factor"] != "reference"):
        group = [r for r in rows if r["factor"] == factor]
        best = max(group, key=lambda r: r["test_acc"]["mean"])
        worst = min(group, key=lambda r: r["test_acc"]["mean"])
        line = (
            f"- {factor}: best {best['label']} ({_pct(best['test_acc']['mean'])}), worst "
            f"{worst['label']} ({_pct(worst['test_acc']['mean'])})"
        )
        gap = best["test_acc"]["mean"] - worst["test_acc"]["mean"]
        noise = 2 * max(best["test_acc"]["std"], worst["test_acc"]["std"])
        if len(best["accs"]) > 1 and gap <= noise:
            line += f", a gap within twice the seeds' spread ({100 * noise:.1f} points)"
        if lstm is not None:
            level = lstm["test_acc"]["mean"] + 0.02
            lost = [r["label"] for r in group if r["test_acc"]["mean"] <= level]
            if lost:
                line += f"; no better than the LSTM ({_pct(lstm['test_acc']['mean'])}): "
                line += ", ".join(lost)
        out.append(line + ".")
    out.append("")
    return out


def render_report(results: Mapping[str, Any]) -> str:
    """The report as Markdown text."""
    tasks = results["tasks"]
    figs = results.get("figures", {})
    out: list[str] = []
    out.append(f"# LSTM versus relational memory (RMC): {results['mode']} study")
    out.append("")
    out.append(
        f"Seeds {', '.join(map(str, results['seeds']))}; "
        + (
            f"runs on the Dask scheduler at {results['scheduler']}"
            if results.get("scheduler")
            else f"{results['workers']} worker process(es) with {results['threads']} BLAS "
            "thread(s) each"
        )
        + "; wall time "
        f"{results['wall_time'] / 60:.1f} min ({results['train_wall_time'] / 60:.1f} min "
        "training). Regenerate with `python -m experiments.compare"
        + {"quick": "", "full": " --full", "tiny": " --tiny"}[results["mode"]]
        + "`; the same seeds give the same accuracies."
    )
    out.append("")
    for note in results.get("notes", []):
        out.append(f"> {note}")
        out.append("")
    if results.get("interrupted"):
        out.append(
            "> The run was interrupted: tables hold the runs that finished. "
            "`--resume` continues the others from their last checkpoints."
        )
        out.append("")
    for p in results.get("problems", []):
        out.append(f"> Run {p['name']} {p['status']}: {p['message']}")
        out.append("")

    out.append("## Summary")
    out.append("")
    helps, same, hurts = _verdicts(tasks)
    nth = [t for t in tasks.values() if t["task"] == "nth_farthest"]
    for t in nth:
        rmc, lstm = t["models"].get("rmc"), t["models"].get("lstm")
        if rmc and lstm:
            out.append(
                f"- **{t['label']}**: RMC {_acc(rmc['test_acc'])} test accuracy, reaching "
                f"{_pct(t['threshold'])} at step(s) {_steps(rmc, t['steps'])}; LSTM "
                f"{_acc(lstm['test_acc'])} (2/K guessing level {_pct(t.get('guess_level'))})."
            )
    out.append(
        f"- The RMC is better by more than {100 * HELPS:.0f} points on: "
        f"{'; '.join(helps) or 'none'}."
    )
    out.append(f"- Within {100 * HELPS:.0f} points of each other on: {'; '.join(same) or 'none'}.")
    out.append(f"- The LSTM is better on: {'; '.join(hurts) or 'none'}.")
    out.append("")

    out.append("## Setup and matched budgets")
    out.append("")
    out.append(
        "Every model on a task gets the same optimiser (Adam), learning rate, linear warm-up "
        "then constant rate, gradient clipping, batch size, step count, seeds, validation set "
        "(for stopping early once a task is solved, and for keeping the best weights, which "
        "are the ones tested) and test set, and the same MLP classifier head on the core's last "
        "output. The LSTM's hidden size is chosen "
        "automatically so that its parameter count is within 10% of the RMC's."
    )
    out.append("")
    out.extend(_setup_table(tasks))
    out.append("")

    out.append("## Results")
    out.append("")
    out.extend(_results_table(tasks))
    out.append("")
    for key, alt in (
        ("accuracy", "test accuracy per task"),
        ("overview", "validation accuracy curves of every task"),
        ("convergence", "steps to reach each task's threshold"),
    ):
        if key in figs:
            out.append(_figure(figs[key], alt))
    out.append("Training curves (loss and accuracy, mean and min–max over seeds) per task:")
    out.append("")
    for task in tasks.values():
        out.append(
            f"- {task['label']}: "
            + " · ".join(f"[{Path(p).suffix[1:].upper()}]({p})" for p in task["figures"]["curves"])
        )
    out.append("")
    first = next(iter(tasks.values()), None)
    if first is not None:
        out.append(_figure(first["figures"]["curves"], f"training curves, {first['label']}"))

    if "sample_efficiency" in results:
        se = results["sample_efficiency"]
        out.append("## Sample efficiency")
        out.append("")
        out.append(
            f"{se['label']}: fixed training sets of {', '.join(map(str, se['sizes']))} "
            f"examples, {se['steps']} steps of {se['batch_size']}, seed(s) "
            f"{', '.join(map(str, se['seeds']))}."
        )
        out.append("")
        kinds = list(se["models"])
        out.append(
            "| training examples | " + " | ".join(se["models"][k]["label"] for k in kinds) + " |"
        )
        out.append("|---|" + "---|" * len(kinds))
        for n in se["sizes"]:
            cells = []
            for k in kinds:
                accs = se["models"][k]["by_size"].get(str(n))
                cells.append(_pct(sum(accs) / len(accs)) if accs else "n/a")
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        out.append("")
        out.append(_figure(figs["sample_efficiency"], "test accuracy against training-set size"))

    out.append("## Inside the models")
    out.append("")
    if "rmc_graph" in figs:
        out.append(
            _figure(
                figs["rmc_graph"],
                f"computation graph of one RMC step ({tasks[results['graph_task']]['label']})",
            )
        )
    out.extend(_inside(results))

    out.append("## Reasoning analysis")
    out.append("")
    out.append(
        f"**Where the relational memory helps** (more than {100 * HELPS:.0f} points): "
        f"{'; '.join(helps) or 'nowhere in this run'}. **Where it does not**: "
        f"{'; '.join(same + hurts) or 'nowhere in this run'}."
    )
    out.append("")
    memorised = [
        f"{m['short']} on {t['short']} (training batches {_pct(m['final_train_acc']['mean'])}, "
        f"test {_pct(m['test_acc']['mean'])})"
        for t in tasks.values()
        for m in t["models"].values()
        if m["final_train_acc"]["mean"] - m["test_acc"]["mean"] > MEMORISED
    ]
    if memorised:
        out.append(
            "**Memorised rather than learnt** (accuracy on the last training batches more than "
            f"{100 * MEMORISED:.0f} points above test accuracy): {'; '.join(memorised)}. These "
            "runs see a small fixed training set many times over."
        )
        out.append("")
    hard = {k: t for k, t in tasks.items() if t.get("hard")}
    if hard:
        out.append("### Harder held-out variants")
        out.append("")
        out.append(
            "The trained models (no retraining) on longer or more cluttered test "
            "sequences with the same input encoding:"
        )
        out.append("")
        kinds = sorted({k for t in hard.values() for k in t["hard"]["models"]})
        names = _short_labels(kinds, hard)
        out.append(
            "| task | harder variant | "
            + " | ".join(f"{t}: trained → harder" for t in names)
            + " |"
        )
        out.append("|---|---|" + "---|" * len(kinds))
        for task in hard.values():
            cells = []
            for k in kinds:
                m = task["models"].get(k)
                h = task["hard"]["models"].get(k)
                cells.append(
                    "n/a"
                    if not m or not h
                    else f"{_pct(m['test_acc']['mean'])} → {_pct(h['summary']['mean'])}"
                )
            out.append(f"| {task['short']} | {task['hard']['label']} | " + " | ".join(cells) + " |")
        out.append("")
        if "harder" in figs:
            out.append(_figure(figs["harder"], "trained distribution vs harder variant"))
    out.append("### Accuracy by category")
    out.append("")
    for task in tasks.values():
        if "breakdown" not in task:
            continue
        out.append(f"**{task['label']}**")
        out.append("")
        out.extend(_breakdown_table(task))
        out.append("")
        out.append(
            _figure(task["figures"]["breakdown"], f"accuracy by {task['breakdown']['name']}")
        )
    out.append("### Failure cases")
    out.append("")
    out.append(
        "Test examples from the seed-0 models, drawn at random among each kind of "
        "outcome; the answer line is the task's own rendering."
    )
    out.append("")
    for task in tasks.values():
        if not task.get("failures") and not task.get("hard", {}).get("failures"):
            continue
        out.append(f"#### {task['label']}")
        out.append("")
        out.extend(_failures(task.get("failures", [])))
        if task.get("hard", {}).get("failures"):
            out.append(f"Harder variant ({task['hard']['label']}):")
            out.append("")
            out.extend(_failures(task["hard"]["failures"]))

    for i, summary in enumerate(results.get("ablations", [])):
        out.extend(_ablation(summary, first=i == 0))
    out.append("## The paper's claims at this scale")
    out.append("")
    out.extend(_claims(tasks, results["mode"]))
    out.append("")
    out.append("## Files")
    out.append("")
    out.append(
        "- `results.json`: every number above; `metrics.jsonl`: one line per evaluation "
        "of every run; `checkpoints/<run>/best.npz`: the weights tested."
    )
    listed = sorted({p for paths in _all_figures(results) for p in paths})
    out.append("- Figures: " + ", ".join(f"[{Path(p).name}]({p})" for p in listed))
    out.append("")
    return "\n".join(out)


def _short_labels(kinds: Sequence[str], tasks: Mapping) -> list[str]:
    """Short labels of model `kinds` as the tasks name them."""
    labels = {}
    for task in tasks.values():
        for k, m in task["models"].items():
            labels.setdefault(k, m["short"])
    return [labels.get(k, k) for k in kinds]


def _all_figures(results: Mapping) -> list[Sequence[str]]:
    out = list(results.get("figures", {}).values())
    for ablation in results.get("ablations", []):
        if ablation.get("figure"):
            folder = ablation.get("folder", "")
            out.append([os.path.join(folder, ablation["figure"][k]) for k in ("png", "svg")])
    for task in results["tasks"].values():
        out += list(task.get("figures", {}).values())
    for inside in results.get("inside", {}).values():
        out += [item["paths"] for item in inside.get("attention", [])]
        out += [inside[k] for k in ("memory", "gradient_flow") if k in inside]
    return out


def write_report(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write render_report(results) to `path`; returns the path."""
    path = Path(path)
    path.write_text(render_report(results), encoding="utf-8")
    return path


__all__ = ["render_report", "write_report"]
