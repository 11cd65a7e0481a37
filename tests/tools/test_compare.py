"""The CPU demos through the real entry point (GRPO: configs/demo.yaml, SFT: configs/demo_sft.yaml)
and ``r1aqa_pl.compare``: its accounting and table on fake numbers, and a tiny real run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1aqa_pl.eval import runs
from r1aqa_pl.tools import compare

ROOT = Path(__file__).parents[2]


def demo_overrides(demo_root: Path, out: Path, name: str) -> list[str]:
    """Point a demo config at a prepared tiny set and a temporary run folder; 2 steps, validated at 0 and 2."""
    warm, data = demo_root / "warm", demo_root / "data"
    return ["--model.init_args.policy.model_name_or_path", str(warm),
            "--data.init_args.train_file", str(data / "train.jsonl"),
            "--data.init_args.val_file", str(data / "test-mini.json"),
            "--data.init_args.val_batch_size", "24",
            "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
            "--trainer.default_root_dir", str(out),
            "--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", name,
            "--trainer.enable_progress_bar", "false"]


def fit(configs: list[str], overrides: list[str]):
    args = [a for c in configs for a in ("--config", c)]
    res = subprocess.run([sys.executable, "-m", "r1aqa_pl", "fit", *args, *overrides],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


ACCUMULATE_2 = ["--model.init_args.optimization.gradient_accumulation_steps", "2", "--trainer.val_check_interval", "4"]


@pytest.mark.parametrize("configs, name, module, extra", [
    (["configs/demo.yaml"], "grpo", "GRPOModule", []),
    (["configs/demo.yaml"], "grpo", "GRPOModule", ACCUMULATE_2),  # 2 batches per step: the x-axis stays in steps
    (["configs/demo.yaml", "configs/demo_sft.yaml"], "sft", "SFTModule", [])])  # the SFT overlay
def test_demo_config_fits_two_steps(tiny_run, tmp_path, configs, name, module, extra):
    """``demo.prepare(out=tmp, n_train=48, n_test=24, warm_steps=20)`` (the tiny_run fixture's folder)."""
    cfg = yaml.safe_load((ROOT / configs[-1]).read_text())
    assert cfg["model"]["class_path"].endswith(module)
    fit(configs, demo_overrides(tiny_run.root, tmp_path, name) + extra)
    scalars = runs.load_scalars(tmp_path / name)
    total = scalars["val/acc/total"]
    assert [s for s, _ in total] == [0, 2]  # x is the optimizer step: before training, then after step 2
    for d in ("sound", "music", "speech"):
        assert [s for s, _ in scalars[f"val/acc/{d}"]] == [0, 2]
    assert [s for s, _ in scalars["train/loss"]] == [1, 2]
    if name == "grpo":
        assert "train/reward" in scalars and "train/kl" in scalars
    version = tmp_path / name / "version_0"
    assert (version / "checkpoints" / "last.ckpt").is_file() and (version / "checkpoints" / "last_hf").is_dir()
    assert sorted(p.name for p in (version / "predictions").glob("*.json")) == [
        "val_step0.json", "val_step0.provenance.json", "val_step2.json", "val_step2.provenance.json"]


# ---------------------------------------------------------------- compare: accounting and table (unit)

def _fake_config(tmp_path, accum=2, batch=3, G=5, max_steps=40, vci=20):
    cfg = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    cfg["model"]["init_args"]["optimization"]["gradient_accumulation_steps"] = accum
    cfg["model"]["init_args"]["sampling"]["G"] = G
    cfg["data"]["init_args"]["batch_size"] = batch
    cfg["trainer"].update(max_steps=max_steps, val_check_interval=vci)
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _value(overrides, flag):
    return overrides[overrides.index(flag) + 1]


def test_plan_gives_sft_the_same_prompts(tmp_path):
    p = compare.plan(tmp_path / "out", tmp_path / "demo", grpo_config=_fake_config(tmp_path))
    assert p["steps"] == 40 and p["eval_every"] == 10  # 20 batches / accumulation 2
    grpo, sft, noaudio = p["runs"]["grpo"], p["runs"]["sft"], p["runs"]["grpo_noaudio"]
    assert grpo["prompts_seen"] == sft["prompts_seen"] == noaudio["prompts_seen"] == 40 * 3 * 2
    assert grpo["completions_seen"] == 40 * 3 * 2 * 5 and sft["completions_seen"] == 40 * 3 * 2
    assert _value(sft["overrides"], "--data.init_args.batch_size") == "6"  # 3 prompts × 2 accumulation
    assert _value(grpo["overrides"], "--trainer.val_check_interval") == "20"  # batches
    assert _value(sft["overrides"], "--trainer.val_check_interval") == "10"
    for r in (grpo, sft, noaudio):
        assert _value(r["overrides"], "--trainer.max_steps") == "40"
        assert _value(r["overrides"], "--model.init_args.policy.model_name_or_path") == str(tmp_path / "demo" / "warm")
    assert _value(noaudio["overrides"], "--model.init_args.policy.with_audio") == "false"
    assert "--model.init_args.policy.with_audio" not in grpo["overrides"] + sft["overrides"]
    assert sft["command"][3:8] == ["fit", "--config", str(_fake_config(tmp_path)), "--config", "configs/demo_sft.yaml"]
    assert len({r["log_dir"] for r in p["runs"].values()}) == 3
    with pytest.raises(ValueError, match="unknown arm"):
        compare.plan(tmp_path, tmp_path, arms=["grpo", "dpo"])


def test_plan_recipe_arms_and_seed(tmp_path):
    labels = tmp_path / "labels.jsonl"
    p = compare.plan(
        tmp_path / "out",
        tmp_path / "demo",
        grpo_config=_fake_config(tmp_path),
        arms=list(compare.RECIPE_ARMS),
        seed=3,
        labels=labels,
    )
    r = p["runs"]
    assert list(r) == ["grpo", "grpo_ds", "grpo_curriculum", "grpo_filtered", "grpo_relevance", "grpo_contribution",
                       "grpo_think", "grpo_think_length"] and p["seed"] == 3
    for run in r.values():  # one seed drives the run's sampling and the data order
        assert _value(run["overrides"], "--seed_everything") == "3" == _value(run["overrides"], "--data.init_args.seed")
        assert run["prompts_seen"] == 40 * 3 * 2
    assert _value(r["grpo_ds"]["overrides"], "--model.init_args.selection.dynamic_sampling") == "true"
    assert _value(r["grpo_curriculum"]["overrides"], "--data.init_args.audio_contribution") == str(labels)
    assert _value(r["grpo_curriculum"]["overrides"], "--data.init_args.curriculum_epochs") == "1"
    assert (
        json.loads(_value(r["grpo_filtered"]["overrides"], "--data.init_args.label_weights")) == compare.FILTER_WEIGHTS
    )
    assert "--data.init_args.audio_contribution" not in r["grpo"]["overrides"] + r["grpo_ds"]["overrides"]
    assert _value(r["grpo_relevance"]["overrides"], "--model.init_args.grounding.relevance") == "logp_gap"
    assert _value(r["grpo_contribution"]["overrides"], "--model.init_args.grounding.contribution") == "true"
    for name in ("grpo_think", "grpo_think_length"):
        assert _value(r[name]["overrides"], "--model.init_args.policy.think") == "true"
        # their own start, a warm start that thinks before it answers (demo.prepare(think=True))
        assert _value(r[name]["overrides"], "--model.init_args.policy.model_name_or_path") == str(
            tmp_path / "demo" / "warm-think")
    grpo_start = _value(r["grpo"]["overrides"], "--model.init_args.policy.model_name_or_path")
    assert grpo_start == str(tmp_path / "demo" / "warm")
    with pytest.raises(ValueError, match="warm must be one of"):
        compare.load_arms(extra={"mine": {"label": "mine", "warm": "warm-cold"}})
    assert r["grpo_think_length"]["configs"][-1] == compare.THINK_LENGTH_CONFIG
    with pytest.raises(ValueError, match="audio-contribution labels"):
        compare.plan(tmp_path, tmp_path, grpo_config=_fake_config(tmp_path), arms=["grpo_curriculum"])


@pytest.mark.slow  # one `fit --print_config` per arm: ~10 s each
@pytest.mark.parametrize("name", ["grpo_relevance", "grpo_contribution", "grpo_think", "grpo_think_length"])
def test_new_recipe_arms_resolve_through_the_cli(name):
    """The audio-grounding and length arms' overrides and overlays resolve on the demo config to what they name."""
    arm = compare.ARM_SPECS[name]
    cmd = [sys.executable, "-m", "r1aqa_pl", "fit", "--config", "configs/demo.yaml"]
    for c in arm.configs:
        cmd += ["--config", c]
    out = subprocess.run([*cmd, *arm.overrides, "--print_config"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = yaml.safe_load(out.stdout[out.stdout.index("# lightning"):])["model"]["init_args"]
    g = m["grounding"]
    assert (g["relevance"], g["contribution"]) == (
        "logp_gap" if name == "grpo_relevance" else None, name == "grpo_contribution")
    if name == "grpo_contribution":
        assert g["contribution_weights"] == compare.FILTER_WEIGHTS
    assert m["policy"]["think"] == name.startswith("grpo_think")
    assert m["sampling"]["max_new_tokens"] == (32 if name.startswith("grpo_think") else 8)
    lengths = [r for r in m["rewards"] if isinstance(r, dict) and r["class_path"].endswith("ThinkLength")]
    assert len(lengths) == (name == "grpo_think_length")


def test_plan_sft_then_grpo_and_several_sets(tmp_path):
    """``sft_grpo``: SFT then GRPO, half the steps each, GRPO from SFT's last weights: the same prompts as the
    single arms; every run validated on each set of ``val_sets``."""
    sets = {"mmau": "test-mini.json", "shift": "test-shifted.json"}
    p = compare.plan(tmp_path / "out", tmp_path / "demo", grpo_config=_fake_config(tmp_path),
                     arms=list(compare.SHIFT_ARMS), val_sets=sets)
    runs = p["runs"]
    assert list(runs) == ["sft", "grpo", "sft_grpo"] and p["val_sets"] == sets
    first, second = runs["sft_grpo"]["stages"]
    assert (first["arm"], second["arm"]) == ("sft", "grpo") and first["steps"] == second["steps"] == 20
    assert runs["sft_grpo"]["prompts_seen"] == runs["grpo"]["prompts_seen"] == runs["sft"]["prompts_seen"] == 240
    assert runs["sft_grpo"]["completions_seen"] == 20 * 6 + 20 * 6 * 5
    assert _value(first["overrides"], "--model.init_args.policy.model_name_or_path") == str(tmp_path / "demo" / "warm")
    assert _value(second["overrides"], "--model.init_args.policy.model_name_or_path") == str(
        Path(first["log_dir"]) / "checkpoints" / "last_hf")
    assert _value(first["overrides"], "--data.init_args.batch_size") == "6"
    assert first["configs"][-1].endswith("sft.yaml")
    assert "--data.init_args.batch_size" not in second["overrides"] and len(second["configs"]) == 1
    for stage in (first, second):
        assert _value(stage["overrides"], "--trainer.max_steps") == "20"
    assert _value(second["overrides"], "--trainer.val_check_interval") == "20"  # 10 steps × 2 batches, lands on 20
    assert len({first["log_dir"], second["log_dir"], runs["sft"]["log_dir"], runs["grpo"]["log_dir"]}) == 4
    for r in (runs["sft"], runs["grpo"], first, second):
        assert json.loads(_value(r["overrides"], "--data.init_args.val_file")) == {
            k: str(tmp_path / "demo" / "data" / f) for k, f in sets.items()}
    with pytest.raises(ValueError, match="cannot be split"):
        compare.plan(tmp_path, tmp_path, steps=3, grpo_config=_fake_config(tmp_path), arms=["sft_grpo"])


def test_arms_from_a_file(tmp_path):
    """A new arm is data: a label, overrides, overlays, labels, stages; refused when malformed."""
    f = tmp_path / "arms.yaml"
    f.write_text(yaml.safe_dump({
        "grpo_knob": {"label": "GRPO + a knob", "overrides": ["--model.init_args.knob", "0.5"], "labels": True},
        "sft_knob": {"label": "SFT then GRPO + a knob", "stages": ["sft", "grpo_knob"], "style": ["tab:cyan", ":"]},
    }))
    specs = compare.load_arms(f)
    assert specs["grpo_knob"].overrides == ("--model.init_args.knob", "0.5")
    assert specs["grpo"] == compare.ARM_SPECS["grpo"]
    p = compare.plan(tmp_path / "out", tmp_path / "demo", grpo_config=_fake_config(tmp_path),
                     arms=["grpo", "grpo_knob", "sft_knob"], labels=tmp_path / "labels.jsonl", specs=specs)
    knob = p["runs"]["grpo_knob"]
    assert knob["label"] == "GRPO + a knob" and _value(knob["overrides"], "--model.init_args.knob") == "0.5"
    assert _value(knob["overrides"], "--data.init_args.audio_contribution") == str(tmp_path / "labels.jsonl")
    assert [st["arm"] for st in p["runs"]["sft_knob"]["stages"]] == ["sft", "grpo_knob"]
    assert p["runs"]["sft_knob"]["style"] == ["tab:cyan", ":"]
    with pytest.raises(ValueError, match="audio-contribution labels"):  # a stage's labels count
        compare.plan(tmp_path, tmp_path, grpo_config=_fake_config(tmp_path), arms=["sft_knob"], specs=specs)
    for bad, match in (({"x": {"label": "x", "lr": 1}}, "unknown field"), ({"x": {"overrides": []}}, "label"),
                       ({"x": {"label": "x", "trainer": "dpo"}}, "trainer"),
                       ({"x": {"label": "x", "stages": ["sft", "sft_grpo"]}}, "single-run")):
        with pytest.raises(ValueError, match=match):
            compare.load_arms(extra=bad)


def test_merge_stages_and_shift_breakdown():
    sft = {"val/acc/total": [(0, 0.5), (10, 0.7)], "train/loss": [(1, 2.0), (10, 1.0)]}
    grpo = {"val/acc/total": [(0, 0.7), (5, 0.75), (10, 0.8)], "train/loss": [(1, 0.5)]}
    merged = compare.merge_stages([sft, grpo], [0, 10])
    assert merged["val/acc/total"] == [(0, 0.5), (10, 0.7), (15, 0.75), (20, 0.8)]  # the second start left out
    assert merged["train/loss"] == [(1, 2.0), (10, 1.0), (11, 0.5)]
    recs = [{"shift": "form", "shift_detail": "yes/no", "answer": "yes", "choices": ["yes", "no"],
             "model_prediction": "yes"},
            {"shift": "form", "shift_detail": "inverted", "answer": "low tone", "choices": ["low tone", "high tone"],
             "model_prediction": "high tone"},
            {"shift": "sound", "shift_detail": "out-of-range sound", "answer": "three",
             "choices": ["one", "two", "three"], "model_prediction": "three"},
            {"answer": "x", "choices": ["x", "y"], "model_prediction": "x"}]  # no shift: in no group
    b = compare.shift_breakdown(recs)
    assert b == {"form": {"acc": 0.5, "n": 2, "chance": 0.5}, "sound": {"acc": 1.0, "n": 1, "chance": 1 / 3},
                 "form: yes/no": {"acc": 1.0, "n": 1, "chance": 0.5},
                 "form: inverted": {"acc": 0.0, "n": 1, "chance": 0.5}}


def _shift_results():
    """Two seeds of three arms on two sets, as compare writes them."""
    def run(label, ends, shift_end):
        def st(start, end):
            return {"start": {"total": start}, "end": {"total": end}}
        return {"label": label, "start": {"total": 0.5}, "end": {"total": ends[0]}, "wall_s": 100.0,
                "prompts_seen": 80, "sets": {"mmau": st(0.5, ends[0]), "shift": st(0.4, ends[1])},
                "shifts": {"shift": {"start": {"wording": {"acc": 0.3, "n": 30, "chance": 0.5}},
                                     "end": {"wording": {"acc": shift_end, "n": 30, "chance": 0.5},
                                             "form: yes/no": {"acc": 0.0, "n": 24, "chance": 0.5},
                                             "form": {"acc": 0.1, "n": 30, "chance": 0.5}}}}}

    seeds = {}
    for k, (sft, grpo, both) in enumerate((((0.9, 0.6), (0.8, 0.65), (0.85, 0.6)),
                                           ((0.8, 0.5), (0.8, 0.45), (0.9, 0.6)))):
        seeds[str(k)] = {"val_sets": {"mmau": "test-mini.json", "shift": "test-shifted.json"},
                         "chance_sets": {"mmau": {"total": 0.48}, "shift": {"total": 0.46}},
                         "runs": {"sft": run("SFT (audio)", sft, 0.6), "grpo": run("GRPO (audio)", grpo, 0.7),
                                  "sft_grpo": run("SFT then GRPO", both, 0.8)}}
    return {"seeds": seeds}


def test_shift_tables_over_seeds():
    res = _shift_results()
    lines = compare.sets_table(res).splitlines()
    assert lines[0] == ("| run | in-distribution (test-mini): start (%) | end (%) | shifted (test-shifted): start (%) "
                        "| end (%) | shift − mmau at end (pts) | wall (s) | prompts seen |")
    # SFT: test-mini ends 90, 80; shifted 60, 50; the drop -30, -30
    assert lines[2] == ("| SFT (audio) | 50.0 ± 0.0 [50.0–50.0] | 85.0 ± 7.1 [80.0–90.0] | 40.0 ± 0.0 [40.0–40.0] "
                        "| 55.0 ± 7.1 [50.0–60.0] | -30.0 ± 0.0 [-30.0–-30.0] | 100 ± 0 [100–100] | 80 |")
    assert lines[-1].startswith("| chance (uniform guess) |  | 48.0 |  | 46.0 |")
    h2h = compare.head_to_head(res).splitlines()
    assert h2h[0] == "| arms | set | seed 0 | seed 1 | mean (pts) | first above on |"
    assert h2h[2] == ("| GRPO (audio) − SFT (audio) | in-distribution (test-mini) | -10.0 | +0.0 | -5.0 "
                      "| 0/2 (tied on 1) |")
    assert h2h[3] == "| GRPO (audio) − SFT (audio) | shifted (test-shifted) | +5.0 | -5.0 | +0.0 | 1/2 |"
    assert len(h2h) == 2 + 3 * 2  # three pairs × two sets
    kinds = compare.shift_table(res).splitlines()
    assert kinds[0] == ("| shift | questions | chance (%) | warm start (%) | SFT (audio) (%) | GRPO (audio) (%) "
                        "| SFT then GRPO (%) |")
    assert [row.split(" | ")[0] for row in kinds[2:]] == ["| wording", "| form", "| ↳ yes/no"]
    assert kinds[2] == ("| wording | 30 | 50.0 | 30.0 ± 0.0 [30.0–30.0] | 60.0 ± 0.0 [60.0–60.0] "
                        "| 70.0 ± 0.0 [70.0–70.0] | 80.0 ± 0.0 [80.0–80.0] |")


def test_dry_run_gives_each_seed_its_own_cache(tmp_path, capsys):
    res = compare.compare(out=str(tmp_path / "cmp"), seeds=[0, 2], arms=["grpo"], dry_run=True)
    assert list(res["seeds"]) == [0, 2]
    assert res["seeds"][2]["demo_dir"] == str((tmp_path / "cmp" / "seed2" / "demo").resolve())
    assert "--seed_everything 2" in capsys.readouterr().out


def test_eval_interval_lands_on_the_last_step():
    assert compare.eval_interval(200, 25) == 25
    assert compare.eval_interval(2, 25) == 2
    assert compare.eval_interval(30, 25) == 15
    assert compare.eval_interval(37, 25) == 37  # prime: only at the end
    assert compare.eval_interval(10, 1) == 10  # never 1 (it would collide with the step-0 point)
    with pytest.raises(ValueError):
        compare.eval_interval(1, 1)


def _fake_scalars(values, every=10):
    """``val/acc/*`` as the runs log them: the pre-training pass at 0, then at each validated optimizer step."""
    steps = [0] + [every * (i + 1) for i in range(len(values) - 1)]
    out = {f"val/acc/{c}": [(s, v[c]) for s, v in zip(steps, values)] for c in ("sound", "music", "speech", "total")}
    out["train/loss"] = [(0, 2.0), (1, 1.5)]
    return out


def test_summarize_and_table_on_fake_metrics():
    def acc(s, m, sp):
        return {"sound": s, "music": m, "speech": sp, "total": (s + m + sp) / 3}

    grpo = compare.summarize(_fake_scalars([acc(0.5, 0.5, 0.5), acc(0.6, 0.7, 0.5), acc(0.9, 0.8, 0.7)]))
    assert grpo["curves"]["sound"] == [[0, 0.5], [10, 0.6], [20, 0.9]]
    assert grpo["start"]["music"] == 0.5 and grpo["end"]["music"] == 0.8 and grpo["end_step"] == 20
    assert grpo["best_total"] == {"step": 20, "acc": pytest.approx(0.8)}
    assert grpo["train_loss_last"] == 1.5
    sft = compare.summarize(_fake_scalars([acc(0.5, 0.5, 0.5), acc(0.55, 0.5, 0.45), acc(0.6, 0.5, 0.5)]))
    assert sft["curves"]["total"][1][0] == 10 and sft["best_total"]["step"] == 20
    results = {
        "steps": 20,
        "runs": {"grpo": {**grpo, "prompts_seen": 80, "wall_s": 12.3}, "sft": {**sft, "prompts_seen": 80}},
    }
    lines = compare.table(results).splitlines()
    assert lines[0] == "| run | steps | prompts seen | sound (%) | music (%) | speech (%) | total (%) | wall (s) |"
    assert lines[2] == "| GRPO (audio) | 20 | 80 | 50.0 → 90.0 | 50.0 → 80.0 | 50.0 → 70.0 | 50.0 → 80.0 | 12 |"
    assert lines[3] == "| SFT (audio) | 20 | 80 | 50.0 → 60.0 | 50.0 → 50.0 | 50.0 → 50.0 | 50.0 → 53.3 | – |"
    results["chance"] = {"sound": 4 / 9, "music": 0.5, "speech": 0.5, "total": 13 / 27}
    assert compare.table(results).splitlines()[-1] == "| chance (uniform guess) |  |  | 44.4 | 50.0 | 50.0 | 48.1 |  |"
    missing = compare.summarize({})
    assert missing["start"]["total"] is None and "– → –" in compare.table({"runs": {"x": missing}})


def test_seeds_table_means_spreads_and_steps_to_target():
    def run(start, curve, wall):
        r = compare.summarize({"val/acc/total": [(0, start)] + [(100 * (i + 1), v) for i, v in enumerate(curve)]})
        return {**r, "wall_s": wall}

    seeds = {
        0: {"runs": {"grpo": run(0.5, [0.7, 0.8, 0.9], 100.0)}},
        1: {"runs": {"grpo": run(0.4, [0.6, 0.74, 0.7], 120.0)}},
    }
    assert seeds[0]["runs"]["grpo"]["steps_to_target"] == 200 and seeds[1]["runs"]["grpo"]["steps_to_target"] is None
    lines = compare.seeds_table({"seeds": seeds}).splitlines()
    assert lines[0] == (
        "| run | start total (%) | end total (%) | best total (%) | reached 75 % | steps to 75 % | wall (s) |"
    )
    # start 50, 40: mean 45, sd 7.07; end 90, 70; best 90, 74; only seed 0 reached 75 % (at step 200)
    assert lines[2] == (
        "| GRPO (audio) | 45.0 ± 7.1 [40.0–50.0] | 80.0 ± 14.1 [70.0–90.0] | 82.0 ± 11.3 [74.0–90.0] "
        "| 1/2 | 200 (1/2) | 110 ± 14 [100–120] |"
    )
    # a think arm: words of thinking over the first and last tenth of its logged steps (20 points: 2 each)
    for k, (a, z) in enumerate([(9.0, 3.0), (11.0, 5.0)]):
        think = [(i + 1, a if i < 2 else (z if i >= 18 else 7.0)) for i in range(20)]
        r = compare.summarize({"val/acc/total": [(0, 0.5), (100, 0.6)], "train/think_length": think})
        seeds[k]["runs"]["think"] = {**r, "wall_s": 50.0}
    assert seeds[0]["runs"]["think"]["think_words"] == {"first": 9.0, "last": 3.0}
    lines = compare.seeds_table({"seeds": seeds}).splitlines()
    assert lines[0].endswith("| wall (s) | think words, first → last tenth of steps |")
    assert lines[2].endswith("| – |")
    assert lines[3] == ("| think | 50.0 ± 0.0 [50.0–50.0] | 60.0 ± 0.0 [60.0–60.0] | 60.0 ± 0.0 [60.0–60.0] | 0/2 | – "
                        "| 50 ± 0 [50–50] | 10.0 ± 1.4 [9.0–11.0] → 4.0 ± 1.4 [3.0–5.0] |")


def test_chance_per_domain(synth_dir):
    c = compare.chance(synth_dir / "test-mini.json")  # sound: 3-, 2- and 2-choice tasks; music, speech: 2
    assert c["music"] == c["speech"] == 0.5
    assert 1 / 3 < c["sound"] < 0.5 and c["sound"] < c["total"] < 0.5


def test_plot_comparison_one_panel_per_domain(tmp_path):
    def curves(v):
        return {c: [[0, 0.5], [10, v]] for c in ("sound", "music", "speech", "total")}

    results = {
        "steps": 10,
        "runs": {name: {"curves": curves(v)} for name, v in (("grpo", 0.9), ("sft", 0.6), ("grpo_noaudio", 0.5))},
    }
    (tmp_path / "compare.json").write_text(json.dumps(results))
    fig = compare.plot_comparison(compare.load(tmp_path))
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["sound", "music", "speech", "total"]
    assert all(len(a.get_lines()) == 3 for a in axes)
    assert axes[3].get_lines()[0].get_ydata()[-1] == pytest.approx(90.0)
    fig.savefig(tmp_path / "c.png")


# ---------------------------------------------------------------- compare: a tiny real run


@pytest.mark.slow  # three `fit` subprocesses: ~1.5 min on 2 busy cores
def test_compare_tiny_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "cmp"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "r1aqa_pl",
            "compare",
            "--out",
            str(out),
            "--steps",
            "2",
            "--demo_dir",
            str(tiny_run.root),
            "--jobs",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads((out / "compare.json").read_text())
    assert list(results["seeds"]) == ["0"]  # the cache's seed
    results = results["seeds"]["0"]
    assert list(results["runs"]) == ["grpo", "sft", "grpo_noaudio"]
    batch = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["data"]["init_args"]["batch_size"]
    for name, r in results["runs"].items():
        assert r["returncode"] == 0 and r["prompts_seen"] == 2 * batch
        assert [p[0] for p in r["curves"]["total"]] == [0, 2], name
        assert all(r["start"][c] is not None and r["end"][c] is not None for c in compare.COLUMNS)
    # same warm start and same validation set: GRPO and SFT start from the same numbers
    assert results["runs"]["grpo"]["start"] == results["runs"]["sft"]["start"]
    assert (out / "compare_seed0.png").stat().st_size > 0
    table = (out / "compare.md").read_text()
    assert "| GRPO (no audio) |" in table and "| GRPO (audio) |" in res.stdout
    # the audio-free run really ran without audio: every validation question was answered from text alone
    pred = json.loads(
        next((out / "seed0" / "grpo_noaudio" / "version_0" / "predictions").glob("val_step2.json")).read_text()
    )
    assert len(pred) == 24
    noaudio_scalars = runs.load_scalars(out / "seed0" / "grpo_noaudio")
    assert noaudio_scalars["val/count/no_audio"][-1][1] == 24


@pytest.mark.slow  # four `fit` subprocesses (SFT, GRPO, SFT then GRPO), two at a time: ~1 min on 2 busy cores
def test_compare_shift_tiny_end_to_end(tiny_run, tmp_path):
    """``make compare-shift`` in miniature: 4 steps (SFT then GRPO: 2 + 2), scored on test-mini and the shifted set."""
    out = tmp_path / "shift"
    res = subprocess.run(
        [sys.executable, "-m", "r1aqa_pl", "compare", "--shift", "true", "--out", str(out), "--steps", "4",
         "--demo_dir", str(tiny_run.root), "--jobs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads((out / "compare.json").read_text())["seeds"]["0"]
    runs_ = results["runs"]
    assert list(runs_) == ["sft", "grpo", "sft_grpo"] and results["val_sets"] == compare.SHIFT_SETS
    n_shift = len(json.loads((tiny_run.root / "data" / "test-shifted.json").read_text()))
    for name, r in runs_.items():
        assert r["returncode"] == 0 and r["prompts_seen"] == 4 * 16 and r["wall_s"] > 0, name
        assert [p[0] for p in r["curves"]["total"]] == ([0, 2, 4] if name == "sft_grpo" else [0, 4])
        for label in ("mmau", "shift"):
            assert r["sets"][label]["start"]["total"] is not None and r["sets"][label]["end"]["total"] is not None
        kinds = r["shifts"]["shift"]["end"]
        assert sum(kinds[k]["n"] for k in ("wording", "options", "sound", "form", "combined")) == n_shift
        assert r["sets"]["mmau"]["curves"]["total"] == r["curves"]["total"]  # the monitor set is the plain val/acc
    # one warm start: every arm starts from the same numbers on both sets; the second stage starts where SFT ended
    for label in ("mmau", "shift"):
        assert len({json.dumps(r["sets"][label]["start"]) for r in runs_.values()}) == 1
    (handoff,) = runs_["sft_grpo"]["handoff"]
    assert handoff["end"] == handoff["next_start"]
    assert runs_["sft_grpo"]["wall_s"] == pytest.approx(sum(st["wall_s"] for st in runs_["sft_grpo"]["stages"]))
    text = (out / "compare.md").read_text()
    for heading in ("### every set", "### arms head to head", "### shift: end accuracy per kind", "### seed 0"):
        assert heading in text
    assert "| SFT then GRPO |" in text and "| ↳ yes/no |" in text


# ---------------------------------------------------------------- the real-model SFT config


def test_sft_overlay_keeps_grpo_engine_and_prompts_per_step():
    """configs/sft.yaml on top of configs/grpo.yaml: GRPO's engine (strategy, precision, devices, dtype) and
    data, the same prompts per optimizer step and the same number of steps; it resolves through the CLI."""
    grpo = yaml.safe_load((ROOT / "configs/grpo.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "configs/sft.yaml").read_text())
    assert "data" not in overlay and not {"strategy", "precision", "devices", "max_steps"} & set(overlay["trainer"])
    assert (
        overlay["trainer"]["accumulate_grad_batches"]
        == grpo["model"]["init_args"]["optimization"]["gradient_accumulation_steps"]
    )
    assert "gradient_clip_val" not in overlay["trainer"]  # DeepSpeed clips (the JSON's gradient_clipping)
    ds = json.loads((ROOT / grpo["trainer"]["strategy"]["init_args"]["config"]).read_text())
    assert ds["gradient_clipping"] == grpo["model"]["init_args"]["optimization"]["max_grad_norm"]
    assert "gradient_accumulation_steps" not in ds
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "r1aqa_pl",
            "fit",
            "--config",
            "configs/grpo.yaml",
            "--config",
            "configs/sft.yaml",
            "--print_config",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    sft = yaml.safe_load(out.stdout[out.stdout.index("# lightning") :])  # DeepSpeed may print a CUDA warning first
    assert sft["model"]["class_path"] == "r1aqa_pl.training.sft_module.SFTModule"
    assert sft["model"]["init_args"]["target"] == "<answer>{answer}</answer>"
    assert "sampling" not in sft["model"]["init_args"]  # GRPO's own groups are dropped with the class
    for group, key in (
        ("policy", "model_name_or_path"),
        ("policy", "dtype"),
        ("policy", "attn_implementation"),
        ("optimization", "max_grad_norm"),
        ("evaluation", "max_new_tokens"),
    ):
        assert sft["model"]["init_args"][group][key] == grpo["model"]["init_args"][group][key], key
    for key in ("accelerator", "devices", "num_nodes", "precision", "max_steps", "val_check_interval"):
        assert sft["trainer"][key] == grpo["trainer"][key], key
    assert sft["trainer"]["strategy"]["init_args"]["config"] == grpo["trainer"]["strategy"]["init_args"]["config"]
    assert sft["data"]["init_args"]["batch_size"] == grpo["data"]["init_args"]["batch_size"]


def test_demo_warm_start_reads_the_question_text_alone_unless_told(tmp_path, monkeypatch):
    """The demo's warm start trains without the audio (so GRPO starts at chance on every seed); ``warm_audio``
    brings the audio back, and a changed recipe rebuilds the cached warm start."""
    from r1aqa_pl.recipes import demo
    from r1aqa_pl.training import sft_module

    seen = []

    class Spy(sft_module.SFTModule):
        def __init__(self, policy, *args, **kwargs):
            seen.append(policy.get("with_audio", True))
            super().__init__(policy, *args, **kwargs)

    monkeypatch.setattr(sft_module, "SFTModule", Spy)
    small = {"n_train": 12, "n_test": 6, "warm_steps": 1, "warm_batch_size": 4}
    demo.prepare(out=str(tmp_path), **small)
    assert seen == [False]
    assert json.loads((tmp_path / "prepared.json").read_text())["warm_audio"] is False
    demo.prepare(out=str(tmp_path), warm_audio=True, **small)
    assert seen == [False, True]
