"""notebooks/results.ipynb runs top to bottom on a run folder (nbclient) and saves its figures;
the functions it calls (r1aqa_pl/runs.py) read the same numbers the run logged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from r1aqa_pl.benchmarks.mmau import MMAU
from r1aqa_pl.eval import runs
from r1aqa_pl.task.files import read_records

score_records = MMAU().score_records

REPO = Path(__file__).parents[1]
NOTEBOOK = REPO / "notebooks" / "results.ipynb"
FIGURES = ("accuracy_domains", "reward_kl", "accuracy_subcategories")


def test_runs_reads_scalars_and_predictions(tiny_run, tmp_path):
    scalars = runs.load_scalars(tiny_run.run)
    for tag in (*runs.ACC_TAGS, *runs.TRAIN_TAGS, "train/reward/sound"):
        assert scalars.get(tag), tag
    files = runs.prediction_files(tiny_run.run)
    assert [runs.file_step(p) for p in files] == [2, 4]
    assert runs.latest_predictions(tiny_run.run) == files[-1]
    # the k-th logged validation is the k-th prediction file, domain by domain
    for k, path in enumerate(files):
        result = runs.score_predictions(path)
        for d in ("sound", "music", "speech"):
            assert scalars[f"val/acc/{d}"][k][1] == pytest.approx(result["task"][d]["acc"], abs=1e-6)
        assert scalars["val/acc/total"][k][1] == pytest.approx(result["total"]["acc"], abs=1e-6)
        assert result["total"] == score_records(read_records(path))["total"]
    assert len(scalars["train/reward"]) == 4  # one point per optimizer step
    assert "val/acc/total" in runs.summary(scalars)
    paths = runs.report(tiny_run.run, tmp_path / "fig")
    assert sorted(paths) == sorted(FIGURES)
    assert all(p.stat().st_size > 5000 for p in paths.values())


def test_runs_errors_and_empty_plots(tmp_path):
    with pytest.raises(FileNotFoundError):
        runs.load_scalars(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        runs.load_scalars(tmp_path)
    assert runs.latest_predictions(tmp_path) is None
    figs = {"a": runs.plot_domain_accuracy({}), "b": runs.plot_training({}), "c": runs.plot_subcategories({})}
    assert all(p.is_file() for p in runs.save_figures(figs, tmp_path / "f").values())


def _kernel(tmp_path: Path, monkeypatch) -> str:
    """A kernelspec for this interpreter in a temporary JUPYTER_PATH (nothing installed for the user)."""
    name = "r1aqa-test"
    spec = tmp_path / "jupyter" / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "r1aqa test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    return name


def _inject(nb, **params):
    """papermill's way: a cell setting the parameters right after the cell tagged "parameters"."""
    import nbformat

    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert first == 0, "the parameters cell comes first"
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(first + 1, cell)


def test_notebook_is_clean_and_parametrised():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert "RUN_DIR" in nb.cells[0].source and "parameters" in nb.cells[0].metadata.get("tags", [])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_notebook_executes_on_a_run(tiny_run, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    figures = tiny_run.run / "figures"
    for name in FIGURES:
        (figures / f"{name}.png").unlink(missing_ok=True)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _inject(nb, RUN_DIR=str(tiny_run.run))
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name=_kernel(tmp_path, monkeypatch),
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    nbformat.write(nb, tmp_path / "executed.ipynb")
    for name in FIGURES:
        png = figures / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 5000, png
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(FIGURES)
    text = "".join(o.get("text", "") for o in outputs)
    assert "val/acc/total" in text and "MMAU accuracy" in text and "val_step4.json" in text
