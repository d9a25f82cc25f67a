"""``donna extend``: search-space extension and exploration (DONNA): is adding these options worth it on this
device?

A run folder's space gains options (a knob's list gains values: a block type, a kernel, attention). What the run
already distilled is reused as it is: the same keys, the same weights, the same NSR. Only the new options are
distilled from the same teacher on the same data with the run's BKD settings (``added/``, one job per slot that
gained options) and scored with its scoring settings. A few new labels that use new options join the run's labels
and the predictor is refitted. Every latency table of the run gains only the rows it lacks
(``latency.table_extend``). ``extend/<space>/`` is then a run folder of the extended space (``donna search`` and
``donna finetune`` take it as ``--workdir``); per device, the exact fronts of the space before and after
(the same refitted predictor and extended table for both) answer the question in ``extend.md``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from blocks import Arch, SearchSpace, added_options, get_space, restrict
from common.fileio import atomic_path, atomic_save, atomic_write_text
from donna.runfolder import ExtendFolder, RunFolder, fingerprint, read_json, write_json
from donna.stages import StageClock, count, expected

log = logging.getLogger(__name__)

LABEL_SEED_OFFSET = 7  # the new labels' sample is seeded apart from the run's labels
WORTH_SAVING = 0.02  # a median latency saving (at equal predicted accuracy) over the old front that is worth it
WORTH_GAIN = 0.005  # or a median gain of predicted accuracy at equal latency (half a point)


def extension_labels(space: SearchSpace, base: SearchSpace, n: int, seed: int) -> list[Arch]:
    """``n`` distinct uniform members of ``space`` that use at least one option ``base`` lacks."""
    old = [{str(o) for o in base.options(i)} for i in range(base.num_slots)]
    rng, found = np.random.default_rng(seed), {}
    for _ in range(500 * max(n, 1)):
        if len(found) == n:
            break
        arch = space.sample(rng)
        if any(str(b) not in old[i] for i, b in enumerate(arch.blocks)):
            found.setdefault(arch.key, arch)
    return list(found.values())


def run_extend(workdir: str | Path, space_file: str | Path, num_labels: int = 10,
               progress: bool = True) -> dict[str, Any]:
    """Extends the run in ``workdir`` to the space in ``space_file``; returns what ``extend.json`` records.

    Every step resumes: a killed call continues where it stopped when run again.

    Raises:
        ValueError: the run has no predictor yet, or the space does not contain the run's (the message names
            what differs and how to fix it).
    """
    from donna.bkd import run_bkd
    from donna.config import BKDConfig, DataConfig, LabelConfig, ScoreConfig, TeacherConfig, section_from_dict
    from donna.data import load_data
    from donna.nsr import convergence_check, score_library, write_convergence
    from donna.search_stage import run_space
    from donna.teacher import get_teacher

    base_run = RunFolder(workdir)
    if not base_run.predictor_json.is_file():
        raise ValueError(f"{workdir} has no predictor yet; run `donna build-predictor --workdir {workdir}` (or "
                         "`donna run`) before extending its space")
    if num_labels < 1:
        raise ValueError(f"--labels must be at least 1 (new labels that use new options), got {num_labels}")
    config = base_run.read_config()
    if "extend" in config:
        raise ValueError(f"{workdir} is itself an extension; extend the run it extends "
                         f"({config['extend'].get('base')}) with a space that holds both additions")
    base_space = run_space(base_run.root)
    space = get_space(space_file).with_classes(base_space.num_classes)
    if space.name == base_space.name:
        raise ValueError(f"the extended space has the run's space name {space.name!r}; give it its own name "
                         "(the top-level key of the JSON file, or the file's name)")
    added = added_options(base_space, space)
    folder = base_run.extend(space.name)
    ext = folder.run
    recorded = (ext.read_config().get("run") or {}).get("space_sha256")
    if recorded is not None and recorded != ext.space_record(space_file)["space_sha256"]:
        raise ValueError(f"{folder.root} was made from another version of space {space.name!r}; delete that folder "
                         "to extend with this one, or give the new space another name")
    ext.root.mkdir(parents=True, exist_ok=True)
    _record(folder, base_run, config, space_file, space, num_labels)

    bkd_cfg = section_from_dict(BKDConfig, config["bkd"])
    label_cfg = section_from_dict(LabelConfig, config["labels"])
    share = sum(map(len, added)) / sum(len(base_space.options(i)) for i in range(base_space.num_slots))
    clock = StageClock({"teacher": 5.0, "bkd": expected("bkd", bkd_cfg.epochs) * share,
                        "scoring": expected("scoring") * share,
                        "labels": expected("labels", num_labels * label_cfg.epochs), "fit": expected("fit"),
                        "latency table": expected("latency table") * share, "fronts": 2.0})
    with clock.stage("teacher", "the run's teacher"):
        data = load_data(section_from_dict(DataConfig, config["data"]), space.input_size, space.in_channels)
        teacher = get_teacher(section_from_dict(TeacherConfig, ext.read_config()["teacher"]), space, data,
                              ext.root, progress)
    trained = [i for i, a in enumerate(added) if a]
    warm = warmed(base_space, added, bkd_cfg.mode)
    twins = controls(base_space, added, warm, getattr(teacher, "arch", None))
    trainee = restrict(space, {i: [str(o) for o in space.options(i) if o in added[i] or str(o) in twins[i]]
                               for i in trained})
    print(f"extension {space.name}: {sum(map(len, added))} new options in slots {trained} "
          f"({', '.join(str(len(a)) for a in added)} per slot); the run's "
          f"{sum(len(base_space.options(i)) for i in range(base_space.num_slots))} distilled options are reused")
    with clock.stage("bkd", f"{count(sum(map(len, added)), 'new option')}, {count(bkd_cfg.epochs, 'epoch')}"):
        run_bkd(bkd_cfg, trainee, teacher, data, folder.added.root, progress, slots=trained,
                warm=run_slots(base_run, base_space, [i for i in trained if warm[i]]))
    with clock.stage("scoring", count(sum(map(len, added)), "new option")):
        scored = score_library(section_from_dict(ScoreConfig, config["score"]), trainee, teacher, data,
                               folder.added.root, progress, slots=trained)
        run_nsr = pd.read_csv(base_run.nsr_csv)
        added_nsr, correction = corrected_nsr(scored, run_nsr, added, twins, warm)
        print("NSR of the new options that start from the run's weights, times the factor by which their twins "
              "(the run's nearest options, trained beside them) were better after the extra training: "
              + ", ".join(f"slot {k} x{v:.3f}" for k, v in correction.items()))
        nsr = compose_library(base_run, folder, space, added, run_nsr, added_nsr)
        write_convergence(ext.root, convergence_check(nsr, getattr(teacher, "arch", None)))
    with clock.stage("labels", f"{count(num_labels, 'new architecture')} x {count(label_cfg.epochs, 'epoch')}"):
        archs = extension_labels(space, base_space, num_labels, label_cfg.seed + LABEL_SEED_OFFSET)
        new_labels = _label(folder, archs, label_cfg, space, teacher, data, nsr, num_labels, progress)
    with clock.stage("fit", "ridge on the run's labels and the new ones"):
        predictor, labels = _refit(folder, base_run, space, new_labels, space_file)
    with clock.stage("latency table", "only the rows the run's tables lack"):
        tables, skipped = _extend_tables(base_run, folder, base_space, space, progress)
    with clock.stage("fronts", "exact fronts before and after, per device"):
        verdicts = {device: front_before_after(base_space, space, added, predictor, nsr, table,
                                               _target(base_run, device))
                    for device, table in tables.items() if table is not None}
        plot_fronts(folder, verdicts)
    record = {**(read_json(folder.extend_json) or {}), "nsr_correction": correction, "labels": {
        "run": int((labels["source"] == "run").sum()), "added": int((labels["source"] == "extend").sum()),
        "predictor_loo_tau": predictor.quality.get("predictor", {}).get("kendall_tau")},
        "tables": {d: ({"extended": True, "validation": _validation_brief(t)} if t is not None else
                       {"extended": False, "why": skipped.get(d)}) for d, t in tables.items()},
        "verdicts": {d: {k: v for k, v in v.items() if k != "fronts"} for d, v in verdicts.items()}}
    write_json(folder.extend_json, record)
    atomic_write_text(folder.extend_md, render(record, space, base_space, folder))
    return record


def _record(folder: ExtendFolder, base_run: RunFolder, config: dict, space_file: str | Path, space: SearchSpace,
            num_labels: int) -> None:
    """The extension's ``config.json`` (the run's settings; the run's teacher checkpoint as its teacher) and the
    start of ``extend.json``."""
    ext = folder.run
    ext.copy_space(space_file)
    teacher = dict(config["teacher"])
    if base_run.teacher_pt.is_file():  # the very teacher the run distilled from, as a checkpoint
        teacher.update(source=str(base_run.teacher_pt.resolve()), weights=None)
    for section in ("data", "bkd", "score", "labels"):
        ext.save_config(section, config[section])
    ext.save_config("teacher", teacher)
    ext.save_config("run", {"space": str(space_file), "num_classes": space.num_classes,
                            **ext.space_record(space_file)})
    ext.save_config("extend", {"base": str(base_run.root.resolve()), "labels": num_labels})
    record = read_json(folder.extend_json) or {}
    record.update(base=str(base_run.root.resolve()), space=space.name, base_space=config["run"]["space"])
    write_json(folder.extend_json, record)


def warmed(base_space: SearchSpace, added: list[list], mode: str) -> list[set[str]]:
    """Per slot, the new options that start from the run's trained weights (``nested_supernet.warm_start``): those
    that nest, of a block type the run's slot already has a weight-shared stage for. None in BKD mode
    ``independent`` (its modules are one per option, by index: nothing to share)."""
    from donna.nested_supernet import nests

    if mode != "supernet":
        return [set() for _ in added]
    out = []
    for i, options in enumerate(added):
        stages = {o.type for o in base_space.options(i) if nests(o)}
        out.append({str(o) for o in options if nests(o) and o.type in stages})
    return out


def controls(base_space: SearchSpace, added: list[list], warm: list[set[str]], teacher: Arch | None) -> list[set[str]]:
    """Per slot, the run's options trained again beside the new ones as controls: the twin
    (``blocks.twin_option``) of every warm-started new option, where the twin nests too and is not the teacher's
    own block (whose NSR is near the floor in both trainings, so their ratio is noise)."""
    from blocks import twin_option
    from donna.nested_supernet import nests

    out = []
    for i, options in enumerate(added):
        twins = {twin_option(base_space, i, o) for o in options if str(o) in warm[i]}
        out.append({str(t) for t in twins if nests(t) and (teacher is None or t != teacher.blocks[i])})
    return out


def corrected_nsr(scored: pd.DataFrame, run_nsr: pd.DataFrame, added: list[list], twins: list[set[str]],
                  warm: list[set[str]]) -> tuple[pd.DataFrame, dict[str, float]]:
    """The new options' NSR rows, those of warm-started options put on the run's training budget; and per slot the
    factor that did it.

    A new option that starts from the run's slot gets the run's training and the extension's on top, so its NSR
    is lower than the run's options' for the budget alone. Its twins (the run's nearest options) trained beside it
    from their run weights measure that: the factor is the median, over the slot's twins, of the twin's NSR in
    the run over its NSR after the extension's training. Warm-started new options' NSR is multiplied by it; the
    others (random start, as the run's own options of their kind) keep theirs.
    """
    run = {(int(s), o): float(v) for s, o, v in zip(run_nsr["slot"], run_nsr["option"], run_nsr["nsr"])}
    rows, factors = [], {}
    for slot, options in enumerate(added):
        if not options:
            continue
        here = scored[scored["slot"] == slot].set_index("option")
        ratios = [run[(slot, t)] / float(here.loc[t, "nsr"]) for t in sorted(twins[slot])
                  if float(here.loc[t, "nsr"]) > 0]
        factor = float(np.median(ratios)) if ratios else 1.0
        if warm[slot]:
            factors[str(slot)] = round(factor, 4)
        for o in options:
            row = here.loc[str(o)].to_dict()
            rows.append({"slot": slot, "option": str(o), **row,
                         "nsr": float(row["nsr"]) * (factor if str(o) in warm[slot] else 1.0)})
    columns = ["slot", "option", "nsr", "params", "macs"]
    return pd.DataFrame(rows)[columns] if rows else pd.DataFrame(columns=columns), factors


def compose_library(base_run: RunFolder, folder: ExtendFolder, space: SearchSpace, added: list[list],
                    base_nsr: pd.DataFrame, added_nsr: pd.DataFrame) -> pd.DataFrame:
    """Writes the extension's library and its ``nsr.csv`` (the run's rows and the new ones); returns that table.

    A slot file of the extension holds no weights: it names its parts, the run's slot file and the one trained for
    the new options (paths relative to the library, with their fingerprints), so the run's weights are used as
    they are, never copied. The BatchNorm statistics of both are merged (they are small). The run's files are only
    read."""
    import os

    from donna.bkd import LIBRARY_FORMAT, read_bn_file
    from donna.nested_supernet import EXTENDED

    ext = folder.run
    ext.library.mkdir(parents=True, exist_ok=True)

    def relative(path: Path) -> str:
        return os.path.relpath(path.resolve(), ext.library.resolve())

    for slot in range(space.num_slots):
        base_manifest = read_json(base_run.slot_manifest(slot))
        parts = [{"mode": base_manifest["mode"], "options": base_manifest["options"],  # (never an extension's)
                  "fingerprint": base_manifest["fingerprint"], "file": relative(base_run.slot_weights(slot))}]
        base_bn = read_bn_file(base_run.slot_bn(slot))
        if base_bn.get("fingerprint") != base_manifest["fingerprint"]:
            raise ValueError(f"{base_run.slot_bn(slot)} does not belong to the run's slot {slot} weights; run `donna "
                             f"build-predictor --workdir {base_run.root}` to rescore it, then extend")
        stats = dict(base_bn.get("stats", {}))
        manifests = [base_manifest]
        if added[slot]:
            add_manifest = read_json(folder.added.slot_manifest(slot))
            serves = [str(o) for o in added[slot]]  # not the twins trained beside them (controls)
            parts.append({"mode": add_manifest["mode"], "options": add_manifest["options"], "serves": serves,
                          "fingerprint": add_manifest["fingerprint"],
                          "file": relative(folder.added.slot_weights(slot))})
            new_stats = read_bn_file(folder.added.slot_bn(slot)).get("stats", {})
            stats.update({name: new_stats[name] for name in serves})
            manifests.append(add_manifest)
        fp = fingerprint([part["fingerprint"] for part in parts])
        manifest = {"format": LIBRARY_FORMAT, "slot": slot, "mode": EXTENDED, "fingerprint": fp,
                    "options": [str(o) for o in space.options(slot)],
                    "parts": [{k: v for k, v in m.items() if k != "options"} | {"options": len(m["options"])}
                              for m in manifests]}
        if read_json(ext.slot_manifest(slot)) != json.loads(json.dumps(manifest)) or \
                not ext.slot_weights(slot).is_file() or not ext.slot_bn(slot).is_file():
            weights = {"format": LIBRARY_FORMAT, "mode": EXTENDED, "slot": slot, "fingerprint": fp, "parts": parts}
            atomic_save(ext.slot_weights(slot), lambda p, w=weights: torch.save(w, p))
            atomic_save(ext.slot_bn(slot), lambda p, b={"fingerprint": fp, "stats": stats}: torch.save(b, p))
            write_json(ext.slot_manifest(slot), manifest)  # last: marks the slot done
    rows = pd.concat([base_nsr, added_nsr], ignore_index=True)
    order = {(i, str(o)): k for i in range(space.num_slots) for k, o in enumerate(space.options(i))}
    rows = rows.assign(_order=[order[(int(s), o)] for s, o in zip(rows["slot"], rows["option"])])
    table = rows.sort_values(["slot", "_order"]).drop(columns="_order").reset_index(drop=True)
    with atomic_path(ext.nsr_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def run_slots(base_run: RunFolder, base_space: SearchSpace, slots: list[int]) -> dict[int, dict[str, Any]]:
    """Per slot, the run's trained slot module as a warm start of the new options (``run_bkd``'s ``warm``): its
    weights and the fingerprint that names them."""
    from donna.bkd import BlockLibrary

    library = BlockLibrary(base_run.root, base_space)
    return {slot: {"fingerprint": library.manifest(slot)["fingerprint"],
                   "state_dict": {k: v.detach().clone() for k, v in library.slot_module(slot).state_dict().items()}}
            for slot in slots}


def _label(folder: ExtendFolder, archs: list[Arch], cfg: Any, space: SearchSpace, teacher: Any, data: Any,
           nsr: pd.DataFrame, num_labels: int, progress: bool) -> pd.DataFrame:
    """The new labels (``new_labels.csv``, resumable): the run's label recipe on architectures that use new
    options, assembled from the extension's library."""
    from donna.labels import label_archs

    fp = fingerprint({"labels": cfg.fingerprint(), "nsr": fingerprint(nsr.to_dict("list")),
                      "data": data.describe(), "extend": num_labels})
    return label_archs(archs, cfg, space, teacher, data, folder.run.root, nsr, folder.new_labels_csv, fp, progress)


def _refit(folder: ExtendFolder, base_run: RunFolder, space: SearchSpace, new: pd.DataFrame,
           space_file: str | Path) -> tuple[Any, pd.DataFrame]:
    """The run's labels and the new ones in ``labels.csv`` (``source``: run or extend), and the predictor refitted
    on both."""
    from donna.predictor import fit_predictor, nsr_columns

    ext = folder.run
    labels = pd.concat([pd.read_csv(base_run.labels_csv).assign(source="run"), new.assign(source="extend")],
                       ignore_index=True)
    with atomic_path(ext.labels_csv) as tmp:
        labels.to_csv(tmp, index=False)
    predictor = fit_predictor(labels, nsr_columns(space.num_slots), space=str(space_file))
    predictor.to_json(ext.predictor_json)
    return predictor, labels


def _extend_tables(base_run: RunFolder, folder: ExtendFolder, base_space: SearchSpace, space: SearchSpace,
                   progress: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """Every latency table of the run, extended to ``space`` (None where it cannot be here), and why each table
    that was not extended was not."""
    from latency.errors import LatencyError
    from latency.table_extend import extend_latency_table

    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    root = base_run.root / "latency"
    for table_json in sorted(root.glob("*/table.json")) if root.is_dir() else []:
        device = table_json.parent.name
        target = folder.run.latency(device)
        try:
            if target.table_json.is_file():
                from latency import LatencyTable
                from latency.table import space_signature

                done = LatencyTable.load(target.root)
                made_from = (done.conditions.get("extends") or {}).get("created")
                if done.space_signature != space_signature(space) or \
                        made_from != LatencyTable.load(table_json.parent).created:
                    raise LatencyError(f"{target.root} was extended from another build of the run's table or for "
                                       f"another space; delete {target.root} to extend the current one")
                out[device] = done
            else:
                out[device] = extend_latency_table(table_json.parent, base_space, space, target.root,
                                                   cache_dir=folder.run.exports, progress=progress)
        except LatencyError as err:
            out[device], skipped[device] = None, str(err)
            print(f"latency table {device}: not extended ({err})")
            continue
        print(f"latency table {device}: extended; {_validation_line(out[device])}")
    return out, skipped


def _validation_brief(table: Any) -> dict:
    v = table.validation or {}
    return {k: v.get(k) for k in ("n", "rmspe", "within_5", "within_10", "spearman", "max_abs_pct")} | {
        "speed_ratio": (table.conditions.get("extends") or {}).get("speed_ratio")}


def _validation_line(table: Any) -> str:
    from latency.table import validation_check

    return validation_check(table)[0]


def _target(base_run: RunFolder, device: str) -> float | None:
    search = base_run.read_config().get("search") or {}
    return search.get("target_ms") if search.get("latency_device", search.get("device")) == device else None


def front_before_after(base_space: SearchSpace, space: SearchSpace, added: list[list],
                       predictor: Any, nsr: pd.DataFrame, table: Any, target_ms: float | None) -> dict[str, Any]:
    """The exact fronts of the run's space (before) and the extended space (after) on one device, both from the
    refitted predictor and the extended table, and what the new options buy: latency saved at equal predicted
    accuracy and accuracy gained at equal latency, over the before front's members; the best member under the
    run's target."""
    from search.exact import pareto_dp

    contrib = predictor.nsr_lookup(nsr, space)
    new = [{str(a) for a in opts} for opts in added]
    constant = np.array([-predictor.intercept, table.calibrated_fixed_ms])
    fronts = {}
    for name in ("before", "after"):
        keep = [[k for k, o in enumerate(space.options(i)) if name == "after" or str(o) not in new[i]]
                for i in range(space.num_slots)]
        values = [np.stack([-contrib[i][keep[i]],
                            [table.calibrated_block_ms(i, space.options(i)[k]) for k in keep[i]]], axis=1)
                  for i in range(space.num_slots)]
        F, picks, _ = pareto_dp(constant, values)
        archs = [space.make_arch([space.options(i)[keep[i][k]] for i, k in enumerate(row)]) for row in picks]
        new_counts = [sum(str(b) in new[i] for i, b in enumerate(a.blocks)) for a in archs]
        fronts[name] = pd.DataFrame({"front": name, "device": table.device, "key": [a.key for a in archs],
                                     "predicted_accuracy": -F[:, 0], "predicted_ms": F[:, 1],
                                     "new_options": new_counts, "arch": [a.to_string() for a in archs]})
    before, after = fronts["before"], fronts["after"]
    saving = [1 - _fastest(after, acc) / ms for acc, ms in zip(before["predicted_accuracy"], before["predicted_ms"])]
    gain = [_best(after, ms) - acc for acc, ms in zip(before["predicted_accuracy"], before["predicted_ms"])]
    used = _new_options_used(after, added)
    verdict = {"device": table.device, "before_members": len(before), "after_members": len(after),
               "after_members_with_new": int((after["new_options"] > 0).sum()), "new_options_used": used,
               "latency_saving_median": float(np.median(saving)), "latency_saving_max": float(np.max(saving)),
               "accuracy_gain_median": float(np.median(gain)), "accuracy_gain_max": float(np.max(gain)),
               "target_ms": target_ms, "fronts": pd.concat([before, after], ignore_index=True)}
    if target_ms is not None:
        verdict["at_target"] = {"before": _best(before, target_ms), "after": _best(after, target_ms)}
    return verdict


def _fastest(front: pd.DataFrame, accuracy: float) -> float:
    """The lowest latency of a member predicted at least as accurate (inf when none is)."""
    ok = front["predicted_accuracy"] >= accuracy - 1e-12
    return float(front.loc[ok, "predicted_ms"].min()) if ok.any() else float("inf")


def _best(front: pd.DataFrame, ms: float) -> float:
    """The highest predicted accuracy of a member at most ``ms`` (nan when none is)."""
    ok = front["predicted_ms"] <= ms + 1e-12
    return float(front.loc[ok, "predicted_accuracy"].max()) if ok.any() else float("nan")


def _new_options_used(front: pd.DataFrame, added: list[list]) -> dict[str, int]:
    """How many members of ``front`` use each new option, as ``"slot i: option"``."""
    counts: dict[str, int] = {}
    new = [{str(a) for a in opts} for opts in added]
    for text in front["arch"]:
        arch = Arch.from_string(text)
        for i, b in enumerate(arch.blocks):
            if str(b) in new[i]:
                counts[f"slot {i}: {b}"] = counts.get(f"slot {i}: {b}", 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def plot_fronts(folder: ExtendFolder, verdicts: dict[str, dict]) -> None:
    """``front_before_after.png`` (one panel per device) and ``front_before_after.csv``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = [v["fronts"] for v in verdicts.values()]
    with atomic_path(folder.front_csv) as tmp:
        (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(tmp, index=False)
    if not verdicts:
        return
    fig = Figure(figsize=(6.4 * len(verdicts), 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, len(verdicts), height_ratios=[3, 1.3])
    for k, (device, v) in enumerate(verdicts.items()):
        ax, gain = fig.add_subplot(grid[0, k]), fig.add_subplot(grid[1, k])
        fronts = v["fronts"]
        before = fronts[fronts["front"] == "before"].sort_values("predicted_ms")
        after = fronts[fronts["front"] == "after"].sort_values("predicted_ms")
        ax.step(after["predicted_ms"], after["predicted_accuracy"], where="post", color="tab:blue", lw=2.2,
                alpha=0.6, label=f"after ({len(after)} members)")
        ax.step(before["predicted_ms"], before["predicted_accuracy"], where="post", color="black", lw=1.0,
                ls="--", label=f"before ({len(before)} members)")
        uses = after[after["new_options"] > 0]
        ax.scatter(uses["predicted_ms"], uses["predicted_accuracy"], s=9, color="tab:orange", zorder=3,
                   label=f"after, using new options ({len(uses)})")
        saving = [100 * (1 - _fastest(after, a) / m) for a, m in zip(before["predicted_accuracy"],
                                                                      before["predicted_ms"])]
        gain.plot(before["predicted_ms"], saving, color="tab:green", lw=1.2)
        gain.axhline(0, color="0.5", lw=0.8)
        for axis in (ax, gain):
            if v.get("target_ms"):
                axis.axvline(v["target_ms"], color="tab:red", ls=":", lw=1,
                             label=f"run's target {v['target_ms']:g} ms" if axis is ax else None)
            axis.grid(alpha=0.3)
        ax.set_ylabel("predicted label accuracy (refitted predictor)")
        ax.set_title(f"{device}: exact fronts before and after the extension", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        gain.set_xlabel(f"latency on {device}, ms (extended table)")
        gain.set_ylabel("latency saved at equal\npredicted accuracy, %", fontsize=8)
    with atomic_path(folder.front_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def render(record: dict, space: SearchSpace, base_space: SearchSpace, folder: ExtendFolder) -> str:
    """``extend.md``: what was reused and trained, and one paragraph per device: is the extension worth it?"""
    from donna.predictor import predicted_text

    lines = [f"# donna extend: {base_space.name} -> {space.name}", ""]
    n_old = sum(len(base_space.options(i)) for i in range(base_space.num_slots))
    n_new = sum(len(space.options(i)) for i in range(space.num_slots)) - n_old
    labels = record.get("labels", {})
    factors = record.get("nsr_correction") or {}
    lines += [f"Reused {n_old} distilled options (weights and NSR unchanged); distilled and scored {n_new} new "
              f"ones; {labels.get('added', 0)} new labels joined the run's {labels.get('run', 0)}; the refitted "
              f"predictor's leave-one-out Kendall tau is {_num(labels.get('predictor_loo_tau'), 3)}.", "",
              "The new options that nest start from the run's weights and get the run's training budget on top, so "
              "their NSR is put on the run's budget: multiplied by how much better their twins (the run's nearest "
              "options, trained beside them as controls) became: "
              + (", ".join(f"slot {k} x{v:.3f}" for k, v in factors.items()) or "no such option") + ".", ""]
    for device, t in record.get("tables", {}).items():
        if not t.get("extended"):
            lines += [f"## {device}", "", f"Not compared: the table was not extended here ({t.get('why')}).", ""]
    for device, v in record.get("verdicts", {}).items():
        val = record["tables"][device]["validation"]
        rmspe = val.get("rmspe")
        broad = v["latency_saving_median"] >= WORTH_SAVING or v["accuracy_gain_median"] >= WORTH_GAIN
        some = v["latency_saving_max"] >= WORTH_SAVING or v["accuracy_gain_max"] >= WORTH_GAIN
        worth = "Worth it" if broad else "Marginal" if some else "Not worth it"
        used = ", ".join(f"{k} ({n})" for k, n in list(v["new_options_used"].items())[:6]) or "none"
        text = (f"**{worth} on {device}.** {v['after_members_with_new']} of the "
                f"{v['after_members']} members of the extended space's front use new options (most used: {used}). "
                f"At equal predicted accuracy the new front is up to {100 * v['latency_saving_max']:.1f}% faster "
                f"(median {100 * v['latency_saving_median']:.1f}% over the old front's {v['before_members']} "
                f"members); at equal latency it predicts up to {100 * v['accuracy_gain_max']:.2f} points more "
                f"(median {100 * v['accuracy_gain_median']:.2f}).")
        if v.get("at_target"):
            text += (f" Under the run's target of {v['target_ms']:g} ms the best predicted label accuracy goes from "
                     f"{predicted_text(v['at_target']['before'])} to {predicted_text(v['at_target']['after'])}.")
        text += (f" ({worth}: across the old front, a median saving of at least {WORTH_SAVING:.0%} or gain of "
                 f"{100 * WORTH_GAIN:.1f} points is worth it; only somewhere on it, marginal. A saving below the "
                 f"table's RMSPE of {_num(rmspe, 3, pct=True)} is within its error, though the error of two similar "
                 "networks is largely shared.)")
        text += (f" Latencies are the extended table's (held-out error: {_num(val.get('within_5'), 2, pct=True)} "
                 f"within 5%, RMSPE {_num(val.get('rmspe'), 3, pct=True)}; the new rows put on the run's scale by "
                 f"a speed ratio of {_num(val.get('speed_ratio'), 3)}); accuracies are predicted, not measured: "
                 f"finetune a member of the new front (`donna search --workdir {folder.root} ...`, then "
                 "`donna finetune`) to confirm.")
        lines += [f"## {device}", "", text, ""]
    lines += [f"Fronts: `{folder.front_png.name}` and `{folder.front_csv.name}`."]
    return "\n".join(lines) + "\n"


def _num(value: Any, digits: int, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{max(digits - 2, 0)}f}%" if pct else f"{value:.{digits}f}"
