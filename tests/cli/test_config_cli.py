"""The command line generated from the config tree: every field in --help with its default, --set on nested
fields, --config reproducing a saved config.json, --version, registries read at parse time, the result marker."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from donna.cli import main, parse_config
from donna.cli_config import COMMANDS, tree_settings
from donna.config import BKDConfig, DonnaConfig, FinetuneConfig, SearchConfig, from_sections, section_from_dict


def _help(command: str, capsys) -> str:
    assert main([command, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_field_is_in_help_with_its_default(command, capsys):
    text = _help(command, capsys)
    settings = tree_settings(COMMANDS[command])
    assert len(settings) >= (40 if command in ("build-predictor", "run") else 8)
    for setting in settings:
        assert setting.flag(COMMANDS[command]) + " " in text, setting.path
        assert setting.path == "plugins" or f"--set {setting.path}=..." in text, setting.path
    tree = DonnaConfig()
    assert f"(default: {tree.seed}; --set seed=...)" in text
    if command in ("build-predictor", "run"):
        assert f"(default: {tree.bkd.epochs}; --set bkd.epochs=...)" in text
        assert f"(default: {tree.labels.num_labels}; --set labels.num_labels=...)" in text
    if command == "finetune":
        assert f"(default: {tree.finetune.kd_weight}; --set finetune.kd_weight=...)" in text
    if command == "search":
        assert "(required; --set search.target_ms=...)" in text
        assert "nsga2 (pop_size=100, generations=50" in text  # the searcher's own settings, from its config


def test_set_reaches_a_nested_field_and_one_seed_reaches_every_stage():
    tree = parse_config(["build-predictor", "--set", "bkd.epochs=2", "--set", "score.val_samples=none", "--seed", "7",
                         "--train-device", "cpu", "--labels", "5"])
    assert tree.bkd.epochs == 2 and tree.score.val_samples is None and tree.labels.num_labels == 5
    assert {tree.data.seed, tree.teacher.seed, tree.bkd.seed, tree.score.seed, tree.labels.seed} == {7}
    assert {tree.teacher.train_device, tree.bkd.train_device, tree.labels.train_device} == {"cpu"}
    assert tree.teacher.epochs == TEACHER_EPOCHS  # untouched fields keep their defaults


TEACHER_EPOCHS = DonnaConfig().teacher.epochs


@pytest.mark.parametrize("pair,fragment", [
    ("bkd.epochs=0", "--set bkd.epochs=0: 0 is out of range"),
    ("bkd.epoch=2", "no setting 'epoch' in section 'bkd'"),
    ("bkd.seed=3", "seed is one for the whole run; use --seed"),
    ("search.measure_max=3", "this command has no section 'search'"),
    ("epochs=3", "name a setting as section.field"),
    ("bkd.mode=bogus", "invalid choice 'bogus'"),
])
def test_bad_set_pairs_are_refused(pair, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_config(["build-predictor", "--set", pair])


def test_search_keeps_its_flags_and_the_searcher_settings_exist_once():
    tree = parse_config(["search", "--device", "cpu", "--target-ms", "5", "--pop-size", "8", "--set",
                         "generations=3", "--force-table", "--set", "search.measure_max=3"])
    assert tree.search.latency_device == "cpu" and tree.search.target_ms == 5.0 and tree.search.force
    assert tree.search.settings == {"pop_size": 8, "generations": 3} and tree.search.measure_max == 3
    assert not any(f.name in ("pop_size", "generations", "mutation_prob") for f in dataclasses.fields(SearchConfig))
    with pytest.raises(ValueError, match="one seed; use --seed"):
        parse_config(["search", "--target-ms", "5", "--set", "searcher.seed=3"])
    assert parse_config(["search", "--target-ms", "5", "--searcher", "exact", "--pop-size", "8"]).search.settings == {}
    with pytest.raises(ValueError, match="unknown setting for searcher 'exact'"):
        parse_config(["search", "--target-ms", "5", "--searcher", "exact", "--set", "pop_size=8"])


def test_config_reproduces_a_saved_config(tmp_path):
    from donna.runfolder import save_config

    saved = parse_config(["run", "--seed", "3", "--train-device", "cpu", "--latency-device", "cpu", "--data",
                          "digits", "--bkd-epochs", "2", "--set", "labels.pool_size=50", "--target-ms", "2.5",
                          "--generations", "4", "--finetune-epochs", "1", "--set", "finetune.lr=0.01"])
    for section in ("data", "teacher", "bkd", "score", "labels", "search", "finetune"):
        save_config(tmp_path, section, getattr(saved, section))  # as the stages write config.json
    save_config(tmp_path, "run", {"space": saved.space, "num_classes": 10})
    config = str(tmp_path / "config.json")
    assert parse_config(["run", "--config", config]) == saved
    assert parse_config(["search", "--config", config]).search == saved.search  # no --target-ms needed
    again = parse_config(["finetune", "--config", config, "--epochs", "2"])  # a flag still wins
    assert again.finetune == dataclasses.replace(saved.finetune, epochs=2)
    (tmp_path / "predictor-only.json").write_text(json.dumps({k: v for k, v in json.loads(
        (tmp_path / "config.json").read_text()).items() if k != "search"}))
    with pytest.raises(ValueError, match="bad arguments"):  # argparse: --target-ms is required
        parse_config(["search", "--config", str(tmp_path / "predictor-only.json")])


def test_config_of_an_earlier_version_still_loads():
    old = {"run": {"space": "mbconv-tiny", "num_classes": 10}, "data": {"name": "digits", "seed": 1},
           "teacher": {"device": "cpu", "seed": 1, "epochs": 2},
           "search": {"device": "v100", "target_ms": 5.0, "pop_size": 8, "generations": 3, "mutation_prob": 0.1,
                      "force_table": True, "seed": 1},
           "finetune": {"device": "cpu", "latency_device": "v100", "seed": 1}}
    tree = from_sections(old)
    assert tree.teacher.train_device == "cpu" and tree.search.latency_device == "v100" and tree.search.force
    assert tree.search.settings == {"pop_size": 8, "generations": 3, "mutation_prob": 0.1}
    assert section_from_dict(FinetuneConfig, old["finetune"]).train_device == "cpu"


def test_version(capsys):
    from latency.cli import main as latency_main

    assert main(["--version"]) == 0
    assert re.fullmatch(r"donna \S+\n", capsys.readouterr().out)
    assert latency_main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("latency ")


def test_a_data_set_registered_by_a_plugin_is_known_to_the_cli(tmp_path, monkeypatch, capsys):
    from donna.data import DATASETS

    (tmp_path / "my_data_plugin.py").write_text(
        "from donna.data import DATASETS, load_digits\nDATASETS.register('my-digits', load_digits)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["build-predictor", "--workdir", str(tmp_path / "w"), "--data", "my-digits", "--labels", "0"]) == 2
    assert "known data sets" in capsys.readouterr().err  # not registered without the plugin
    try:
        tree = parse_config(["build-predictor", "--plugin", "my_data_plugin", "--data", "my-digits"])
        assert tree.data.name == "my-digits" and tree.plugins == ["my_data_plugin"]
    finally:
        DATASETS._items.pop("my-digits", None)


def test_result_marker_decides_the_fingerprint():
    base = BKDConfig()
    assert dataclasses.replace(base, train_device="cpu", threads=4, executor="inprocess").fingerprint() == \
        base.fingerprint()
    assert dataclasses.replace(base, epochs=5).fingerprint() != base.fingerprint()
    assert dataclasses.replace(base, seed=5).fingerprint() != base.fingerprint()
    assert "arch" not in FinetuneConfig().fingerprint() and "latency_device" not in FinetuneConfig().fingerprint()


def test_ray_executor_and_address_reach_every_job_stage():
    tree = parse_config(["build-predictor", "--set", "bkd.executor=ray", "--set", "score.executor=ray",
                         "--set", "labels.executor=ray", "--ray-address", "10.0.0.5:6379"])
    assert (tree.bkd.executor, tree.score.executor, tree.labels.executor) == ("ray", "ray", "ray")
    assert tree.ray_address == tree.bkd.ray_address == tree.score.ray_address == tree.labels.ray_address \
        == "10.0.0.5:6379"
    assert parse_config(["run", "--set", "ray_address=auto"]).labels.ray_address == "auto"
    assert "ray_address" not in tree.bkd.fingerprint() and tree.bkd.fingerprint() == BKDConfig().fingerprint()
    with pytest.raises(ValueError, match="choose from processes, inprocess, ray"):
        parse_config(["build-predictor", "--set", "labels.executor=threads"])
    saved = {name: dataclasses.asdict(getattr(tree, name)) for name in ("data", "bkd", "score", "labels")}
    assert from_sections(saved).labels.ray_address == "10.0.0.5:6379"  # a saved config.json keeps the address


def test_flags_keep_one_name_across_commands(capsys):
    for command in ("build-predictor", "finetune", "run"):
        assert "--train-device" in _help(command, capsys)
    for command in ("search", "finetune", "run"):
        assert "--latency-device" in _help(command, capsys)
    assert "--force " in _help("search", capsys)
    assert parse_config(["run"]).search.target_ms is None  # no sentinel: None computes a target the space meets


def test_a_searcher_registered_by_a_plugin_is_known_to_the_cli(tmp_path, monkeypatch):
    from search.registry import SEARCHERS

    (tmp_path / "my_searcher_plugin.py").write_text(
        "from search import register_searcher\nfrom search.random_search import RandomSearcher\n"
        "register_searcher('my-random', RandomSearcher)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError):
        parse_config(["search", "--target-ms", "1", "--searcher", "my-random"])  # unknown without the plugin
    try:
        tree = parse_config(["search", "--plugin", "my_searcher_plugin", "--target-ms", "1", "--searcher",
                             "my-random", "--pop-size", "4"])
        assert tree.search.searcher == "my-random" and tree.search.settings == {"pop_size": 4}
    finally:
        SEARCHERS._items.pop("my-random", None)
