"""The demo end to end: ``python -m npconv demo`` trains, reports, and writes weights, PNG and metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the 'demo' extra (scikit-learn) is not installed")
pytest.importorskip("tqdm", reason="the 'demo' extra (tqdm) is not installed")
pytest.importorskip("matplotlib", reason="the 'demo' extra (matplotlib) is not installed")
pytest.importorskip("safetensors", reason="the 'demo' extra (safetensors) is not installed")

import npconv  # noqa: E402
from npconv.demo import DigitsCNN, load_digits_split, run_demo  # noqa: E402

ACCURACY_LINE = re.compile(r"held-out accuracy: ([\d.]+)% \((\d+)/(\d+) test digits\)")
TIMEOUT = 240


def run_cli(args, cwd, launcher=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    process = subprocess.Popen([*launcher, sys.executable, "-m", "npconv", *args], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the demo hung for {TIMEOUT} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def evaluate_saved_weights(path, seed):
    """Accuracy of a fresh DigitsCNN loaded from the saved file, on the demo's test split."""
    model = DigitsCNN()
    model.load_state_dict(npconv.load(path))
    model.eval()
    _, _, x_test, y_test = load_digits_split(seed)
    with npconv.no_grad():
        predicted = model(npconv.tensor(x_test)).numpy().argmax(axis=1)
    return int((predicted == y_test).sum()), len(y_test)


def check_outputs(out, printed_correct, printed_total, seed):
    weights, figure, metrics = out / "digits_cnn.safetensors", out / "digits_cnn.png", out / "metrics.json"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread
    image = imread(figure)
    assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0.05  # a real picture
    # the saved weights reproduce the accuracy the demo printed
    assert evaluate_saved_weights(weights, seed) == (printed_correct, printed_total)
    recorded = json.loads(metrics.read_text())
    assert (recorded["correct"], recorded["total"]) == (printed_correct, printed_total)
    assert recorded["seed"] == seed
    return recorded


def test_cli_demo_trains_and_writes_its_files(tmp_path):
    out = tmp_path / "out"
    result = run_cli(["demo", "--epochs", "2", "--seed", "1", "--out", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    match = ACCURACY_LINE.search(result.stdout)
    assert match, result.stdout
    accuracy, correct, total = float(match[1]) / 100, int(match[2]), int(match[3])
    assert total == 359 and correct / total == pytest.approx(accuracy, abs=5e-5)
    assert accuracy >= 0.95  # two epochs already reach ~98%; the default 8 reach ~99%
    # one tqdm bar per epoch with the running loss and accuracy, on stderr
    assert "epoch 1/2" in result.stderr and "epoch 2/2" in result.stderr
    assert re.search(r"loss=\d+\.\d+", result.stderr) and re.search(r"acc=\d+\.\d+%", result.stderr)
    recorded = check_outputs(out, correct, total, seed=1)
    assert len(recorded["epoch_loss"]) == 2 and recorded["epoch_loss"][1] < recorded["epoch_loss"][0]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    runs = {name: run_demo(epochs=1, seed=seed, out=tmp_path / name, progress=False)
            for name, seed in (("a", 5), ("b", 5), ("c", 6))}
    weights = {name: npconv.load(tmp_path / name / "digits_cnn.safetensors") for name in runs}
    assert runs["a"].epoch_loss == runs["b"].epoch_loss
    for key, value in weights["a"].items():
        np.testing.assert_array_equal(value, weights["b"][key], err_msg=key)
    assert any(not np.array_equal(value, weights["c"][key]) for key, value in weights["a"].items())


def test_help_and_usage():
    result = subprocess.run([sys.executable, "-m", "npconv", "demo", "--help"], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    for option in ("--epochs", "--seed", "--out", "--batch-size", "--distributed"):
        assert option in result.stdout
    result = subprocess.run([sys.executable, "-m", "npconv"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2 and "demo" in result.stdout


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(epochs=0), "epochs must be a positive int, got 0"),
    (dict(batch_size=-3), "batch_size must be a positive int, got -3"),
    (dict(lr=0.0), "lr must be a positive number, got 0.0"),
])
def test_bad_arguments_are_rejected_before_any_work(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_demo(out=tmp_path / "never", progress=False, **kwargs)
    assert not (tmp_path / "never").exists()


def test_cli_reports_bad_arguments_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "npconv", "demo", "--epochs", "0", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert "epochs must be a positive int" in result.stderr and "Traceback" not in result.stderr


def test_distributed_demo_on_two_ranks(tmp_path):
    pytest.importorskip("mpi4py", reason="the 'mpi' extra (mpi4py, mpich) is not installed")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not found (install the 'mpi' extra: the mpich wheel provides it)")
    out = tmp_path / "out"
    result = run_cli(["demo", "--distributed", "--epochs", "2", "--seed", "2", "--out", str(out)],
                     cwd=tmp_path, launcher=(mpiexec, "-n", "2"))
    assert result.returncode == 0, result.stderr
    lines = ACCURACY_LINE.findall(result.stdout)
    assert len(lines) == 1, result.stdout  # printed by rank 0 only
    assert "on 2 ranks" in result.stdout
    correct, total = int(lines[0][1]), int(lines[0][2])
    assert correct / total >= 0.95
    recorded = check_outputs(out, correct, total, seed=2)
    assert recorded["world_size"] == 2
