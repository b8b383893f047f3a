"""The ``metainr`` command line: instant help, one-line user errors (exit 2), and train -> eval -> fit.

Subprocesses check the real entry point (exit codes, no traceback); the cheaper checks call
``metainr.cli.main.main()`` in-process with a patched ``sys.argv`` (the same code path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metainr.cli.main import main

SIDE = 12  # source images; trained at 8x8


def cli(*args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "metainr", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """main() in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["metainr", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def write_pngs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths



@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> dict[str, Path]:
    """A tiny run trained through the real entry point (4 steps, checkpoints at 2 and 4)."""
    base = tmp_path_factory.mktemp("cli")
    images = write_pngs(base / "images", 6)
    run = base / "RUN"
    proc = cli("train", "--data", base / "images", "--resolution", 8, "--width", 16, "--depth", 3,
               "--steps", 4, "--eval-every", 0, "--ckpt-every", 2, "--out", run, "--quiet", cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "step 4" in proc.stdout and "Traceback" not in proc.stderr
    return {"base": base, "run": run, "image": images[0]}


# ------------------------------------------------------------------------------------- help
def test_help_lists_verbs_and_cli_import_is_light():
    proc = cli("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for verb in ("train", "eval", "fit", "demo"):
        assert verb in proc.stdout
    code = ("import sys, metainr.cli.main; "
            "heavy = ('torch', 'numpy', 'PIL', 'safetensors', 'skimage'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert light.returncode == 0, light.stderr
    assert light.stdout.strip() == "", f"importing metainr.cli.main imported {light.stdout.strip()}"


# ------------------------------------------------------------------------------- user errors
def test_missing_data_path_is_one_line_error(tmp_path):
    proc = cli("train", "--data", tmp_path / "no-such-folder", "--out", tmp_path / "run", "--quiet",
               cwd=tmp_path, timeout=60)
    assert_one_line_error(proc.returncode, proc.stderr, "data path not found", "no-such-folder")
    assert not (tmp_path / "run").exists()  # a failed start leaves no run directory behind


def test_empty_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(monkeypatch, capsys, "train", "--data", tmp_path / "empty",
                            "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(code, err, "no images", str(tmp_path / "empty"))


def test_corrupt_image_is_named(tmp_path, monkeypatch, capsys):
    """A broken file is an error naming it (not silently skipped: that would change the dataset)."""
    data = tmp_path / "data"
    write_pngs(data, 4)
    (data / "broken.jpg").write_bytes(b"definitely not a jpeg" * 8)
    code, _, err = run_main(monkeypatch, capsys, "train", "--data", data, "--resolution", 8,
                            "--width", 16, "--depth", 3, "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(code, err, "cannot read image", str(data / "broken.jpg"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--method", "random-context", "--inner-steps", "2"],
                                   ["--method", "functa", "--offset", "0"]])
def test_flags_override_preset_defaults(tmp_path, monkeypatch, capsys, flags):
    # Missing data: gets as far as loading data only once the config could be built.
    code, _, err = run_main(monkeypatch, capsys, "train", *flags, "--data", tmp_path / "none",
                            "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(code, err, "data path not found")


def test_eval_on_a_directory_that_is_not_a_run(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "eval", tmp_path)
    assert_one_line_error(code, err, "no run config", "run directory")


def test_eval_on_a_run_without_checkpoints(trained_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run["run"] / "config.json", run / "config.json")
    code, _, err = run_main(monkeypatch, capsys, "eval", run)
    assert_one_line_error(code, err, "no complete checkpoint")


def test_eval_bad_steps(trained_run, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "eval", trained_run["run"], "--steps", "2,x")
    assert_one_line_error(code, err, "--steps")


def test_fit_with_checkpoint_from_another_config(trained_run, tmp_path, monkeypatch, capsys):
    """A run directory whose config says width 32 but whose checkpoints come from a width-16 run."""
    run = tmp_path / "wide"
    cfg = json.loads((trained_run["run"] / "config.json").read_text())
    cfg["field"]["width"] = 32
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg))
    shutil.copytree(trained_run["run"] / "checkpoints", run / "checkpoints")
    out = tmp_path / "recon.png"
    code, _, err = run_main(monkeypatch, capsys, "fit", run, trained_run["image"], "-o", out)
    assert_one_line_error(code, err, "different network/method config", "step_0000004")
    assert not out.exists()

    # The same through --checkpoint: another run's checkpoint into this (width-32) run.
    shutil.rmtree(run / "checkpoints")
    code, _, err = run_main(monkeypatch, capsys, "fit", run, trained_run["image"], "-o", out,
                            "--checkpoint", trained_run["run"] / "checkpoints" / "step_0000002")
    assert_one_line_error(code, err, "different network/method config")


def test_fit_unreadable_signal(trained_run, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    code, _, err = run_main(monkeypatch, capsys, "fit", trained_run["run"], bad, "-o", tmp_path / "r.png")
    assert_one_line_error(code, err, str(bad))


# ------------------------------------------------------------------------------- end to end
def test_train_eval_fit(trained_run, monkeypatch, capsys):
    base, run = trained_run["base"], trained_run["run"]
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_0000002.json", "step_0000002.safetensors",
                     "step_0000004.json", "step_0000004.safetensors"]
    assert (run / "config.json").exists() and (run / "metrics.jsonl").exists()

    out_json = base / "out.json"
    code, out, err = run_main(monkeypatch, capsys, "eval", run, "--steps", "0,2", "--json", out_json)
    assert code == 0, err
    result = json.loads(out_json.read_text())
    assert result["checkpoint_step"] == 4 and result["steps"] == [0, 2]
    for init in ("meta_init", "random_init"):
        assert set(result[init]) == {"0", "2"}
        for s in ("0", "2"):
            for metric in ("psnr", "ssim"):
                stats = result[init][s][metric]
                assert set(stats) == {"mean", "std", "n"} and stats["n"] == result["n_signals"] >= 1
                assert np.isfinite(stats["mean"])
    assert set(result["psnr_gain_db"]) == {"0", "2"}
    assert result["psnr_gain_db"]["2"] == pytest.approx(
        result["meta_init"]["2"]["psnr"]["mean"] - result["random_init"]["2"]["psnr"]["mean"])

    recon = base / "recon.png"
    code, out, err = run_main(monkeypatch, capsys, "fit", run, trained_run["image"], "-o", recon,
                              "--resolution", 16)
    assert code == 0, err
    assert "PSNR" in out
    with Image.open(recon) as img:
        assert img.size == (16, 16) and img.mode == "RGB"

    assert not [p for p in base.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written
