"""`python -m lib train` and `python -m lib evaluate` as a user (or the job queue) runs them."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lib.__main__ import main
from lib.data.datasets import load_pairs, load_split
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.train.engine import train
from tests.train_cases import tiny_config, tiny_run

ROOT = Path(__file__).resolve().parent.parent


def _start(run_file: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lib", "train", str(run_file), "--out", str(out), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_resume_state(out: Path, proc: subprocess.Popen, after_step: int, timeout: float = 120) -> dict:
    """Poll until the process has saved a mid-epoch resume state past ``after_step``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        state_file = out / "resume" / "state.pt"
        if state_file.is_file():
            state = torch.load(state_file, weights_only=True)
            if state["step"] > after_step and state["batch"] > 0:
                return state
        time.sleep(0.05)
    raise AssertionError("no mid-epoch resume state was written in time")


def test_sigterm_cancels_and_kill_9_resumes_to_the_same_step_count(tmp_path):
    # ~30 identities, batch 8: ~33 steps an epoch; resume state saved after every step.
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(tiny_run(subset={"classes": 30, "pairs": 40}, resume_every_s=0.0)))
    out = tmp_path / "run"
    proc = _start(run_file, out)
    _wait_for_resume_state(out, proc, after_step=0)
    proc.send_signal(signal.SIGTERM)  # graceful: finish the step, save, exit 0
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, log
    assert "SIGTERM received" in log and "cancelled:" in log
    assert json.loads((out / "progress.json").read_text())["status"] == "cancelled"
    load_checkpoint(out / "last")

    proc = _start(run_file, out, "--resume")
    killed_state = _wait_for_resume_state(out, proc, after_step=torch.load(out / "resume" / "state.pt")["step"])
    proc.send_signal(signal.SIGKILL)  # no chance to save anything
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    proc = _start(run_file, out, "--resume", "--publish", str(tmp_path / "published"))
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log
    resumed_at = int(log.split("resuming at step ")[1].split("/")[0])
    assert resumed_at >= killed_state["step"] > 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress["status"] == "done" and progress["step"] == progress["total_steps"]
    records = RunFolder(out).read_metrics()
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == progress["total_steps"]
    assert load_checkpoint(out / "best").meta.metrics["auc"] == max(r["auc"] for r in records)
    published = load_checkpoint(tmp_path / "published").meta
    assert published.recipe == str(run_file) and published.run_wall_s > 0
    assert published.metrics == load_checkpoint(out / "best").meta.metrics


def test_bad_run_file_exits_2_naming_the_field(tmp_path, capsys):
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(tiny_run(batch_size=1)))
    assert main(["train", str(run_file), "--out", str(tmp_path / "out")]) == 2
    assert "batch_size: 1 is not a whole number" in capsys.readouterr().err
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["status"] == "failed" and "batch_size" in progress["message"]
    run_file.write_text("{not json")
    assert main(["train", str(run_file)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def _reference_numbers(folder: Path):
    """Dev top-1 and pair AUC computed here with plain torch and scikit-learn."""
    loaded = load_checkpoint(folder)
    meta, model = loaded.meta, loaded.model
    mean = torch.tensor(meta.normalize.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.normalize.std).view(1, 3, 1, 1)
    root = ROOT / meta.config["data_root"]  # recorded relative to the project
    dev = load_split(root, "dev")
    keep = dev.labels < len(meta.classes)
    with torch.no_grad():
        logits = model((dev.images[keep].float() / 255 - mean) / std)
        top1 = float((logits.argmax(1) == dev.labels[keep]).float().mean())
        pairs = load_pairs(root)
        emb = model.embed((pairs.images.float() / 255 - mean) / std)
    a, b = emb[pairs.pairs[:, 0]], emb[pairs.pairs[:, 1]]
    scores = torch.nn.functional.cosine_similarity(a, b).numpy()
    return top1, roc_auc_score(pairs.labels.numpy(), scores)


def test_evaluate_cli_matches_training_and_an_independent_computation(tmp_path, capsys):
    train(tiny_config(epochs=1), tmp_path / "run")
    best = tmp_path / "run" / "best"
    assert main(["evaluate", str(best), "--json"]) == 0
    same_data = json.loads(capsys.readouterr().out)
    trained = load_checkpoint(best).meta.metrics
    for key in ("dev_top1", "dev_top5", "auc", "eer"):
        assert same_data["metrics"][key] == trained[key]  # the run's own numbers, recomputed

    assert main(["evaluate", str(best), "--pairs", "val_pairs.txt", "--json"]) == 0
    full_pairs = json.loads(capsys.readouterr().out)["metrics"]
    top1, auc = _reference_numbers(best)
    assert np.isclose(full_pairs["dev_top1"], top1) and np.isclose(full_pairs["auc"], auc, atol=1e-6)

    assert main(["evaluate", str(best)]) == 0
    text = capsys.readouterr().out
    assert f"verification AUC    {trained['auc']:.4f}" in text and "TPR at FPR 1e-3" in text

    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
