"""The donna command line: arch show / sample and one-line errors on bad input."""

import json
import subprocess
import sys

from donna.cli import main


def test_arch_show_json_reports_effnet_params(capsys):
    assert main(["arch", "show", "efficientnet_b0", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 5288548 and info["macs"] > 0 and len(info["key"]) == 16


def test_arch_sample_then_show_by_string(capsys):
    assert main(["arch", "sample", "--space", "mbconv-tiny", "--seed", "5"]) == 0
    text = capsys.readouterr().out.strip()
    assert main(["arch", "show", text]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "MACs" in out and "b4" in out


def test_bad_ir_file_is_one_line_error_without_traceback(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema_version": 1, "input_size": 32, "num_classes": 10, "stem": [],
                                "blocks": [{"type": "ir", "kernel": 4, "stride": 1, "out_channels": 8}],
                                "head": {"channels": 0}}))
    proc = subprocess.run([sys.executable, "-m", "donna.cli", "arch", "show", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "blocks[0]: kernel 4" in proc.stderr and "odd integer" in proc.stderr


def test_help_lists_every_subcommand():
    proc = subprocess.run([sys.executable, "-m", "donna.cli", "--help"], capture_output=True, text=True)
    for name in ("build-predictor", "search", "finetune", "arch"):
        assert name in proc.stdout
