"""A researcher's own data: the layouts people have (class folders as GTZAN, Hugging Face's
audiofolder, a CSV), label mistakes warned about, a checkpoint that carries its network into every
command, and user errors that end with their message.

The README's "Your own data" commands are run as written (with a tiny model and short clips added).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from downstream_data import GENRES, audiofolder, genre_tree, tones
from experiment_cli import ROOT, ok, run_cli, sacred_run

from audioset.synthetic import write_audio_file
from helpers.data.label_checks import edit_distance, label_warnings
from models.checkpoints import CheckpointError

QUIET = {"--loglevel": "ERROR"}
RNG = np.random.default_rng(0)
#: a tiny network from scratch and a recipe that runs in seconds (as tests/test_downstream_cli.py)
FAST = ["tiny_model", "models.net.s_patchout_t=0", "models.net.s_patchout_f=0", "models.mel.freqm=0",
        "models.mel.timem=0", "use_mixup=False", "seed=1", "warm_up_len=1", "basedataset.gain_augment=0",
        "basedataset.clip_length=1", "datasets.training.num_workers=0", "datasets.test.num_workers=0",
        "trainer.enable_progress_bar=False", "wandb.mode=disabled", "trainer.precision=32"]


def folder_config(audio_dir: Path, **overrides) -> dict:
    from ex_folder import ex

    updates = {"basedataset": {"audio_dir": str(audio_dir), **overrides}}
    return ex.run("print_config", config_updates=updates, options=QUIET).config["basedataset"]


def readme_commands(section: str, script: str) -> list[list[str]]:
    """The ``python <script>`` lines of the README section's bash blocks, split as a shell would."""
    text = (ROOT / "README.md").read_text()
    body = re.split(r"\n#{2,} ", text.split(f"\n### {section}\n", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line)[2:] for line in lines if line.startswith(f"python {script} ")]


# ------------------------------------------------------------------------------------- layouts
def test_class_folders_give_the_labels_and_a_holdout_split(tmp_path):
    from folder.dataset import build_set, read_table

    genres = genre_tree(tmp_path / "genres", per_genre=3)
    (genres / "blues" / "._blues.00000.wav").write_bytes(b"macOS resource fork, not audio")  # hidden: skipped
    (genres / "README.txt").write_text("not audio")
    table = read_table(folder_config(genres))
    assert table.classes == GENRES and not table.multi_label
    assert len(table.paths) == 30 and table.is_test.sum() == 6  # basedataset.holdout=0.2
    assert table.labels[0] == ["blues"] and table.paths[0].endswith("blues/blues.00000.wav")
    assert len(build_set(folder_config(genres, clip_length=1), train=True)) == 24

    nested = tmp_path / "nested"  # class folders inside split folders, deeper folders below a class
    for split, n in (("train", 2), ("test", 1)):
        for k, name in enumerate(["dog", "cat"]):
            (nested / split / name / "take1").mkdir(parents=True)
            for i in range(n):
                write_audio_file(nested / split / name / "take1" / f"{i}.wav", tones([k], 0.5, 16000, RNG), 16000)
    table = read_table(folder_config(nested))
    assert table.classes == ["cat", "dog"] and list(table.is_test) == [True, True, False, False, False, False]

    loose = tmp_path / "loose"
    loose.mkdir()
    write_audio_file(loose / "a.wav", tones([0], 0.5, 16000, RNG), 16000)
    with pytest.raises(ValueError, match=r"1 audio files are not in a class folder \(e.g. a.wav\)"):
        read_table(folder_config(loose))
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        read_table(folder_config(tmp_path / "nowhere"))


def test_each_run_counts_the_classes_of_its_own_data(tmp_path):
    """In one process (tests, notebooks), a run's config hooks do not become the next run's defaults."""
    ten = genre_tree(tmp_path / "ten", per_genre=1)
    three = genre_tree(tmp_path / "three", per_genre=1, genres=["a", "b", "c"])
    from ex_folder import ex

    counts = [ex.run("print_config", config_updates={"basedataset": {"audio_dir": str(folder)}}, options=QUIET)
              .config["models"]["net"]["n_classes"] for folder in (ten, three, ten)]
    assert counts == [10, 3, 10]


def test_audiofolder_metadata_and_split_folders(tmp_path):
    from folder.dataset import build_set, read_table

    root = audiofolder(tmp_path / "af")  # metadata.csv at the top, file_name "train/x.wav"
    table = read_table(folder_config(root))
    assert table.classes == ["bird", "cat", "dog"] and table.source.endswith("metadata.csv")
    assert [Path(p).parent.name for p in np.asarray(table.paths)[table.is_test]] == ["test"] * 3
    assert table.kept.all()

    root = audiofolder(tmp_path / "af2", per_split={"train": 6, "validation": 3, "test": 3}, per_split_metadata=True)
    table = read_table(folder_config(root))
    tested = {Path(p).parent.name for p in np.asarray(table.paths)[table.is_test]}
    left_out = {Path(p).parent.name for p in np.asarray(table.paths)[~table.kept]}
    assert tested == {"test"} and left_out == {"validation"}  # another evaluation split neither trains nor counts
    assert len(build_set(folder_config(root, clip_length=1), train=True)) == 6
    table = read_table(folder_config(root, test_split="validation"))
    assert {Path(p).parent.name for p in np.asarray(table.paths)[table.is_test]} == {"validation"}

    (root / "test" / "metadata.csv").unlink()  # a CSV named directly may use audiofolder's file_name column
    with (tmp_path / "mine.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file_name", "label"], ["train/dog_00.wav", "dog"], ["train/cat_01.wav", "cat"]])
    table = read_table(folder_config(root, csv=str(tmp_path / "mine.csv"), holdout=0.5))
    assert table.classes == ["cat", "dog"] and table.is_test.sum() == 1


# ------------------------------------------------------------------------------ label mistakes
def test_label_typos_and_rare_classes_are_warned_about():
    assert edit_distance("Dgo", "Dog") == 1 and edit_distance("dogs", "dog") == 1 and edit_distance("cat", "dog") == 3
    labels = [["Dog"]] * 12 + [["Cat"]] * 10 + [["Dgo"]] + [["cat"]] * 4
    classes = sorted({row[0] for row in labels})
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[::4] = True
    found = label_warnings(labels, classes, is_test)
    assert any(re.match(r"class 'Dgo' has 1 clip \(1 training, 0 evaluated\)", line) for line in found), found
    assert "classes 'Dgo' (1 clip) and 'Dog' (12 clips) are one letter apart: a typo in a label?" in found
    assert any("'Cat'" in line and "'cat'" in line and "case" in line for line in found), found
    assert label_warnings(labels, classes, is_test, check_names=False) == [found[0]]
    # GTZAN's genres: nothing to say; two well-filled classes one letter apart are left alone
    genres = [[g] for g in GENRES for _ in range(10)]
    assert label_warnings(genres, GENRES, np.arange(100) % 5 == 0) == []
    two = [["cat"]] * 8 + [["car"]] * 8
    assert label_warnings(two, ["car", "cat"], np.arange(16) % 4 == 0) == []
    # a class that only occurs among the evaluated clips cannot be learnt
    assert label_warnings([["a"]] * 5 + [["b"]] * 3, ["a", "b"], np.arange(8) >= 5) == [
        "class 'b' has 3 clips (0 training, 3 evaluated): it cannot be learnt"]


# --------------------------------------------------------------------- the README, through the CLI
@pytest.mark.slow
def test_readme_gtzan_lines_train_and_evaluate_the_checkpoint(tmp_path):
    """The README's GTZAN lines: train on class folders alone, then evaluate_only with the checkpoint and
    nothing about its network on the command line (it carries itself); the same metrics come out."""
    genres = genre_tree(tmp_path / "genres", per_genre=3)
    train, evaluate, _ = readme_commands("Your own data", "ex_folder.py")
    assert train[:2] == ["with", "basedataset.audio_dir=genres/"] and "models.checkpoint=" in evaluate[-1]

    def local(args: list[str], extra: list[str]) -> list[str]:
        args = [a.replace("genres/", f"{genres}/").replace("runs/", f"{tmp_path / 'runs'}/") for a in args]
        at = args.index("with") + 1
        return args[:at] + extra + [f"output_dir={tmp_path / 'outputs'}"] + args[at:]

    proc = ok(run_cli(*local(train, FAST + ["lr=0.01", "trainer.max_epochs=2"]), script=str(ROOT / "ex_folder.py"),
                      threads=1))
    # no expected noise: Trainer keys beyond the defaults are valid, wandb is off
    assert "Added new config entry" not in proc.output and "anonymous" not in proc.output
    trained = sacred_run(tmp_path / "runs")
    # the story of the run: a line per validation, then where everything is
    epochs = re.findall(r"^epoch (\d)/1  train_loss \S+  val_acc \S+  val_loss \S+  (swa_val_acc \S+  "
                        r"swa_val_loss \S+  )?lr 1.00e-02  [\d.]+ s$", proc.stdout, re.M)
    assert [(epoch, bool(swa)) for epoch, swa in epochs] == [("0", False), ("1", True)], proc.stdout  # SWA from 1
    end = proc.stdout[proc.stdout.index("Training finished."):]
    assert f"last checkpoint: {trained['info']['last_checkpoint']}  (swa_val_acc" in end
    assert f"best checkpoint: {trained['info']['best_checkpoint']}  (val_acc" in end
    assert f"run folder: {trained['info']['run_dir']}" in end and f"sacred run: {tmp_path / 'runs' / '1'}" in end
    assert trained["config"]["models"]["net"]["n_classes"] == 10 and trained["result"]["val_examples"] == 6
    last = Path(trained["info"]["last_checkpoint"])
    assert torch.load(last, weights_only=True)["passt"]["class_names"] == GENRES

    evaluate = [a.replace("outputs/folder/<run>/checkpoints/last.ckpt", str(last)) for a in evaluate]
    proc = ok(run_cli(*local(evaluate, ["basedataset.clip_length=1", "datasets.test.num_workers=0",
                                        "trainer.enable_progress_bar=False", "wandb.mode=disabled"]),
                      script=str(ROOT / "ex_folder.py"), threads=1))
    assert "took models.net.input_fdim=64 (configured: 128)" in proc.output
    assert "models.net.depth=1 (configured: None)" in proc.output and "size mismatch" not in proc.output
    result = json.loads(re.search(r"Result: (\{.*\})", proc.output).group(1).replace("'", '"'))
    assert result["val_examples"] == 6 and result["val_acc"] == trained["result"]["val_acc"]
    # fp32 both times: training by request, evaluate_only by default (it reproduces numbers) on any CPU
    assert result["val_loss"] == pytest.approx(trained["result"]["val_loss"], abs=1e-5)
    assert "Mixed Precision" not in proc.output


@pytest.mark.slow
def test_audiofolder_through_the_cli_warns_about_a_typo_before_training(tmp_path):
    root = audiofolder(tmp_path / "af", classes=["Dog", "Cat"], per_split={"train": 8, "test": 4})
    write_audio_file(root / "train" / "typo.wav", tones([0], 1.0, 16000, RNG), 16000)
    with (root / "metadata.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["train/typo.wav", "Dgo"])
    proc = ok(run_cli("-F", str(tmp_path / "runs"), "with", f"basedataset.audio_dir={root}", *FAST,
                      "trainer.max_epochs=1", f"output_dir={tmp_path / 'out'}", script=str(ROOT / "ex_folder.py"),
                      threads=1))
    warning = proc.output[proc.output.index("may hold mistakes"):]
    assert "classes 'Dgo' (1 clip) and 'Dog' (6 clips) are one letter apart: a typo in a label?" in warning
    run = sacred_run(tmp_path / "runs")
    assert run["config"]["models"]["net"]["n_classes"] == 3 and run["result"]["val_examples"] == 4


# ----------------------------------------------------------- a checkpoint carries its network
def _train_tiny(audio_dir: Path, out: Path, **updates):
    from ex_folder import ex

    config = {"basedataset": {"audio_dir": str(audio_dir), "clip_length": 1, "gain_augment": 0},
              "trainer": {"max_epochs": 1, "enable_progress_bar": False, "precision": "32"},
              "datasets": {"training": {"num_workers": 0}, "test": {"num_workers": 0}},
              "wandb": {"mode": "disabled"}, "use_mixup": False, "output_dir": str(out), **updates}
    return ex.run(named_configs=["tiny_model"], config_updates=config, options=QUIET)


def test_fine_tuning_and_ensembles_rebuild_the_network_a_checkpoint_carries(tmp_path):
    from ex_folder import ex

    genres = genre_tree(tmp_path / "genres", per_genre=2)
    last = _train_tiny(genres, tmp_path / "out").info["last_checkpoint"]
    common = {"basedataset": {"audio_dir": str(genres), "clip_length": 1}, "wandb": {"mode": "disabled"},
              "datasets": {"training": {"num_workers": 0}, "test": {"num_workers": 0}},
              "trainer": {"enable_progress_bar": False, "precision": "32", "max_epochs": 1},
              "output_dir": str(tmp_path / "out")}
    # fine-tuning from it, with the experiment's own (PaSST-S) network config: the checkpoint's is built
    tuned = ex.run(config_updates={**common, "models": {"checkpoint": last, "net": {"s_patchout_t": 2}}}, options=QUIET)
    assert tuned.status == "COMPLETED"
    taken = tuned.info["from_checkpoint"]
    assert taken["models.net.depth"] == 1 and taken["models.net.embed_dim"] == 32 and taken["models.mel.n_mels"] == 64
    assert "models.net.s_patchout_t" not in taken and "models.net.n_classes" not in taken  # training settings stay
    record = torch.load(tuned.info["last_checkpoint"], weights_only=True)["passt"]
    assert record["models"]["net"]["depth"] == 1 and record["models"]["net"]["s_patchout_t"] == 2

    # an ensemble of local members, evaluated: each member is the checkpoint's network
    members = [{"arch": "passt_s_swa_p16_128_ap476", "fstride": 10, "tstride": 10, "checkpoint": last},
               {"arch": "passt_s_swa_p16_128_ap476", "fstride": 10, "tstride": 10, "checkpoint": last, "swa": True}]
    evaluation = ex.run("evaluate_only", config_updates={**common, "models": {"ensemble": members}}, options=QUIET)
    assert evaluation.result["val_examples"] == 4
    assert evaluation.info["from_checkpoint"]["models.ensemble[1].depth"] == 1

    # evaluating on data with other classes (count, or order) stops before any work
    other = genre_tree(tmp_path / "three", per_genre=2, genres=["a", "b", "c"])
    with pytest.raises(CheckpointError, match="has 10 outputs .*blues.*the data to evaluate has 3 classes"):
        ex.run("evaluate_only", config_updates={**common, "basedataset": {"audio_dir": str(other), "clip_length": 1},
                                                "models": {"checkpoint": last}}, options=QUIET)
    reordered = {**common["basedataset"], "classes": GENRES[::-1]}
    with pytest.raises(CheckpointError, match="in this order; the data to evaluate has rock, reggae"):
        ex.run("evaluate_only", config_updates={**common, "basedataset": reordered,
                                                "models": {"checkpoint": last}}, options=QUIET)


# ------------------------------------------------------------------------------------ user errors
def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``ex_folder.py ARGS`` in this process, as its ``__main__`` runs it: exit status and stderr."""
    from ex_folder import ex
    from helpers.experiment.cli import run_cli as sacred_cli

    monkeypatch.setattr(sys, "argv", ["ex_folder.py"])
    with pytest.raises(SystemExit) as exit_:
        sacred_cli(ex, ["ex_folder.py", *args])
    return exit_.value.code, capsys.readouterr().err


def test_user_errors_end_with_their_message_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    genres = genre_tree(tmp_path / "genres", per_genre=1, genres=["a", "b"])
    data = [f"basedataset.audio_dir={genres}", "wandb.mode=disabled", f"output_dir={tmp_path / 'out'}"]
    code, err = _cli(monkeypatch, capsys, "with", *data, "tiny_modl")
    assert code == 1 and "'tiny_modl' is not a named config" in err and "Did you mean tiny_model?" in err
    assert "Traceback" not in err
    code, err = _cli(monkeypatch, capsys, "with", *data, "trainer.max_epoch=3")
    assert code == 1 and err.startswith("error: trainer.max_epoch is not a config key. Did you mean trainer.max_epochs")
    assert "Traceback" not in err and "-d shows" in err

    # training from the released weights without them and without network: the fix, no urllib traceback
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens there: the download fails at once
    code, err = _cli(monkeypatch, capsys, "with", *data, "datasets.training.num_workers=0",
                     "datasets.test.num_workers=0", "basedataset.clip_length=1")
    assert code == 1 and "Could not download the weights of passt_s_kd_p16_128_ap486" in err
    assert "put it at" in err and "models.net.pretrained=False" in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("folder/*"))  # the failed run left no empty run folder

    from ex_folder import ex
    from helpers.experiment.cli import run_cli as sacred_cli

    with pytest.raises(ValueError, match="trainer.max_epoch is not a config key"):  # -d: the exception itself
        sacred_cli(ex, ["ex_folder.py", "with", *data, "trainer.max_epoch=3", "-d"])
