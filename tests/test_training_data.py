"""training/: the dataset registry, meta-info files, split files, the synthetic set, crops and metrics."""
import csv
import json
import pickle

import cv2
import numpy as np
import pytest
import torch

from contract.errors import UserError
from training import synth
from training.datasets import load_dataset, load_registry, read_split_file, resolve_datasets
from training.loading import EpochOrder, TrainingImages
from contract.correlation import correlations, krcc, plcc, plcc_fit, srcc

PAPER_DATASETS = {"koniq10k": (0, 100, False, "natural"), "spaq": (0, 100, False, "natural"),
                  "livec": (0, 100, False, "natural"), "kadid10k": (1, 5, False, "natural"),
                  "live": (1, 100, True, "natural"), "csiq": (0, 1, True, "natural"),
                  "tid2013": (0, 9, False, "natural"), "agiqa3k": (0, 5, False, "aigc"),
                  "uwiqa": (0, 1, False, "underwater"), "gfiqa20k": (0, 1, False, "face"),
                  "aadb": (0, 1, False, "aesthetics"), "ava": (0, 10, False, "aesthetics")}


# ---------------------------------------------------------------- helpers

def write_dataset(root, rows, header=("img_name", "mos", "std"), images=True, size=(240, 260)):
    """A small NR dataset: ROOT/meta.csv and ROOT/images/<name>.png (random pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    with open(root / "meta.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    if images:
        rng = np.random.default_rng(0)
        for row in rows:
            cv2.imwrite(str(root / "images" / row[0]), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def spec_of(root, **entry):
    base = {"scene": "natural", "mos_range": [0, 10], "lower_better": False, "meta_info": "meta.csv",
            "image_dir": "images"}
    registry = {"mine": {**base, **entry}}
    return resolve_datasets([f"mine:{root}"], registry)[0]


# ---------------------------------------------------------------- registry

def test_registry_holds_the_papers_twelve_datasets_with_their_ranges():
    registry = load_registry()
    for name, (lo, hi, lower_better, scene) in PAPER_DATASETS.items():
        entry = registry[name]
        assert entry["mos_range"] == [lo, hi], name
        assert entry["lower_better"] is lower_better, name
        assert entry["scene"] == scene, name
    # Every dataset's scene exists among the shipped scenes (SDP prompts).
    from gamma_edge.scenes import default_scenes
    scenes = {s.name for s in default_scenes()}
    assert {e["scene"] for e in registry.values()} <= scenes


def test_a_user_adds_a_dataset_with_a_config_file(tmp_path):
    root = write_dataset(tmp_path / "xray", [["a.png", "3"], ["b.png", "7"]], header=("file", "score"))
    extra = tmp_path / "mine.json"
    extra.write_text(json.dumps({"datasets": {"xray": {
        "scene": "natural", "mos_range": [0, 10], "lower_better": True, "meta_info": "meta.csv",
        "image_dir": "images", "mos_column": "score"}}}))
    spec = resolve_datasets([f"xray:{root}"], load_registry([extra]))[0]
    part = load_dataset(spec, "all")
    # Normalised to [0, 1] and flipped: lower is better in this dataset.
    assert [round(s.target, 6) for s in part.samples] == [0.7, 0.3]


def test_unknown_keys_and_unknown_names_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"datasets": {"x": {"scene": "natural", "mos_range": [0, 1], "lower_better": False,
                                                  "meta_info": "m.csv", "mos_colum": "q"}}}))
    with pytest.raises(UserError, match="mos_colum"):
        load_registry([bad])
    with pytest.raises(UserError, match="unknown dataset 'konig'"):
        resolve_datasets(["konig:/x"], load_registry())
    with pytest.raises(UserError, match="no root folder"):
        resolve_datasets(["koniq10k"], load_registry())


def test_data_root_gives_each_dataset_its_folder(tmp_path):
    spec = resolve_datasets(["koniq10k", "livec"], load_registry(), data_root=str(tmp_path))
    assert spec[0].root == str(tmp_path / "koniq10k")
    assert spec[1].root == str(tmp_path / "ChallengeDB_release")


# ---------------------------------------------------------------- meta-info

def test_full_reference_layout_and_skipped_first_rows(tmp_path):
    rows = [["ref.png", f"d{i}.png", str(i)] for i in range(10)]
    root = write_dataset(tmp_path / "fr", [[r[1], r[2]] for r in rows], images=True)
    with open(root / "meta.csv", "w", newline="") as f:
        csv.writer(f).writerows([["ref_name", "dist_name", "dmos"], *rows])
    spec = spec_of(root, layout="fr", skip_first_rows=3, lower_better=True)
    part = load_dataset(spec, "all")
    assert [s.path.split("/")[-1] for s in part.samples] == [f"d{i}.png" for i in range(3, 10)]
    assert part.samples[0].target == pytest.approx(1 - 3 / 10)
    # The reference column groups a full-reference dataset's versions of one photo.
    assert {s.group for s in part.samples} == {"mine/ref.png"}


def test_missing_root_and_meta_info_stop_with_the_dataset_named(tmp_path):
    with pytest.raises(UserError, match=r"dataset 'mine': root folder .*nowhere does not exist"):
        load_dataset(spec_of(tmp_path / "nowhere"), "all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"dataset 'mine': meta-info file .*meta.csv does not exist"):
        load_dataset(spec_of(tmp_path / "empty"), "all")


def test_mos_outside_the_declared_range_stops_naming_file_and_line(tmp_path):
    root = write_dataset(tmp_path / "d", [["a.png", "3"], ["b.png", "10.5"], ["c.png", "4"]])
    with pytest.raises(UserError) as info:
        load_dataset(spec_of(root), "all")
    message = str(info.value)
    assert "dataset 'mine'" in message and "line 3" in message and "meta.csv" in message
    assert "10.5" in message and "[0, 10]" in message


def test_a_few_missing_images_are_skipped_and_reported(tmp_path):
    rows = [[f"{i}.png", str(i % 10)] for i in range(40)]
    root = write_dataset(tmp_path / "d", rows, size=(64, 64))
    (root / "images" / "7.png").unlink()
    part = load_dataset(spec_of(root), "all")
    assert len(part.samples) == 39
    assert len(part.skipped) == 1
    path, reason = part.skipped[0]
    assert path.endswith("7.png") and "line 9" in reason


def test_many_missing_images_stop(tmp_path):
    rows = [[f"{i}.png", "5"] for i in range(20)]
    root = write_dataset(tmp_path / "d", rows, size=(64, 64))
    for i in range(5):
        (root / "images" / f"{i}.png").unlink()
    with pytest.raises(UserError, match=r"5 of 20 images listed in .*missing \(first: line 2"):
        load_dataset(spec_of(root), "all")


def test_unreadable_image_is_marked_invalid_not_fatal(tmp_path):
    root = write_dataset(tmp_path / "d", [["a.png", "3"], ["b.png", "6"]])
    (root / "images" / "b.png").write_bytes(b"not an image at all")
    part = load_dataset(spec_of(root), "all")
    images = TrainingImages(part.samples)
    good, bad = images[(0, 1)], images[(1, 1)]
    assert bool(good["valid"]) and not bool(bad["valid"])
    assert good["image"].shape == bad["image"].shape == (3, 224, 224)
    assert float(good["image"].max()) <= 1.0


# ---------------------------------------------------------------- split files

class _Payload:
    """Pickling this would run os.system when unpickled by plain pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_split_pickle_of_plain_data_is_read(tmp_path):
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({1: {"train": [0, 2, 3], "val": [1], "test": []}, 2: {"train": [1], "val": [0]}}))
    splits = read_split_file(path)
    assert splits["1"] == {"train": [0, 2, 3], "val": [1], "test": []}
    assert splits["2"]["test"] == []


def test_malicious_split_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({1: {"train": [_Payload(marker)], "val": []}}))
    with pytest.raises(UserError, match="refuses"):
        read_split_file(path)
    assert not marker.exists()
    # The same file WOULD run the command under plain pickle: the test is not vacuous.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_numpy_indices_in_a_split_pickle_are_refused_with_advice(tmp_path):
    path = tmp_path / "split.pkl"
    path.write_bytes(pickle.dumps({1: {"train": [np.int64(3)], "val": []}}))
    with pytest.raises(UserError, match="plain ints"):
        read_split_file(path)


def test_json_split_and_split_rows_past_the_meta_info_are_caught(tmp_path):
    root = write_dataset(tmp_path / "d", [[f"{i}.png", "5"] for i in range(5)], size=(64, 64))
    (root / "split.json").write_text(json.dumps({"1": {"train": [0, 1, 2], "val": [3, 4]}}))
    spec = spec_of(root, split_file="split.json")
    assert [s.row for s in load_dataset(spec, "train").samples] == [0, 1, 2]
    assert [s.row for s in load_dataset(spec, "eval").samples] == [3, 4]       # no test part: val
    (root / "split.json").write_text(json.dumps({"1": {"train": [0, 9], "val": []}}))
    with pytest.raises(UserError, match="refers to row 9 but the meta-info file has 5"):
        load_dataset(spec, "train")


def test_without_a_split_file_a_seeded_eight_two_split(tmp_path):
    root = write_dataset(tmp_path / "d", [[f"{i}.png", "5"] for i in range(50)], size=(32, 32))
    spec = spec_of(root)
    train, test = load_dataset(spec, "train"), load_dataset(spec, "eval")
    assert len(train.samples) == 40 and len(test.samples) == 10
    assert {s.group for s in train.samples} == {""}        # nr layout, no group_column: no groups
    assert not {s.row for s in train.samples} & {s.row for s in test.samples}
    assert [s.row for s in load_dataset(spec, "eval").samples] == [s.row for s in test.samples]


# ---------------------------------------------------------------- epoch order

def test_epoch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    full = list(EpochOrder(20, seed=5, epoch=3))
    assert full == list(EpochOrder(20, seed=5, epoch=3))
    assert full != list(EpochOrder(20, seed=5, epoch=4))
    assert list(EpochOrder(20, seed=5, epoch=3, start=8)) == full[8:]
    # Two DDP ranks split one permutation between them.
    ranks = list(EpochOrder(20, 5, 3, rank=0, world=2)) + list(EpochOrder(20, 5, 3, rank=1, world=2))
    assert sorted(i for i, _ in ranks) == list(range(20))


def test_grouped_epoch_order_keeps_runs_of_one_photo_and_splits_ranks_contiguously():
    groups = [f"p{i % 5}" for i in range(40)] + ["", ""]          # 5 photos x 8 versions, 2 ungrouped
    full = list(EpochOrder(42, 5, 3, groups=groups, group_size=4))
    indices = [i for i, _ in full]
    assert sorted(indices) == list(range(42))
    assert full == list(EpochOrder(42, 5, 3, groups=groups, group_size=4))
    assert indices != [i for i, _ in EpochOrder(42, 5, 4, groups=groups, group_size=4)]
    assert list(EpochOrder(42, 5, 3, start=9, groups=groups, group_size=4)) == full[9:]
    # The order is runs of 4 versions of one photo (or one ungrouped sample).
    runs, k = [], 0
    while k < len(indices):
        size = 4 if groups[indices[k]] else 1
        runs.append(indices[k:k + size])
        k += size
    assert len(runs) == 12 and all(len({groups[i] for i in run}) == 1 for run in runs)
    # Two ranks take contiguous halves of the same permutation.
    ranks = [[i for i, _ in EpochOrder(42, 5, 3, rank, 2, groups=groups, group_size=4)] for rank in (0, 1)]
    assert ranks[0] + ranks[1] == indices
    # group_size 0: the plain shuffle, as before.
    assert list(EpochOrder(42, 5, 3, groups=groups)) == list(EpochOrder(42, 5, 3))


# ---------------------------------------------------------------- synthetic set

def test_synthetic_set_has_a_known_quality_order_and_unseen_test_photos(tmp_path):
    summary = synth.make_synthetic_dataset(tmp_path, photos=["astronaut", "coffee", "chelsea"],
                                           kinds=["gaussian_blur", "gaussian_noise", "jpeg", "darken"],
                                           levels=4, short_side=128)
    assert summary["images"] == 3 * (4 * 4 + 1)
    with open(tmp_path / "meta_info.csv") as f:
        rows = list(csv.DictReader(f))
    # MOS falls with the level; the distortion itself gets stronger with the level (PSNR falls).
    for photo in ("astronaut", "coffee"):
        pristine = cv2.imread(str(tmp_path / "images" / photo / "pristine_0.png")).astype(np.float64)
        for kind in ("gaussian_blur", "gaussian_noise", "jpeg", "darken"):
            mine = sorted((int(r["level"]), float(r["mos"]), r["image_name"]) for r in rows
                          if r["photo"] == photo and r["distortion"] == kind)
            assert [m for _, m, _ in mine] == sorted((m for _, m, _ in mine), reverse=True)
            errors = [np.mean((cv2.imread(str(tmp_path / "images" / name)) - pristine) ** 2) for *_, name in mine]
            assert errors == sorted(errors) and errors[0] > 0, (photo, kind, errors)
    split = json.loads((tmp_path / "split.json").read_text())["1"]
    test_photos = {rows[i]["photo"] for i in split["test"]}
    assert test_photos == set(summary["test_photos"])
    assert not test_photos & {rows[i]["photo"] for i in split["train"]}
    # It is read through the registry's "synthetic" entry.
    spec = resolve_datasets([f"synthetic:{tmp_path}"], load_registry())[0]
    assert len(load_dataset(spec, "train").samples) + len(load_dataset(spec, "eval").samples) == summary["images"]
    # Each sample's group is its photo (the ranking loss pairs versions of one photo).
    assert all(s.group == f"synthetic/{s.path.split('/')[-2]}" for s in load_dataset(spec, "all").samples)


def test_views_and_dead_leaves_add_training_scenes_only(tmp_path):
    summary = synth.make_synthetic_dataset(tmp_path, photos=["astronaut", "moon", "chelsea"], kinds=["jpeg"],
                                           levels=1, short_side=96, test_photos=["chelsea"], views=3, leaves=2)
    assert summary["scenes"] == 3 + 2 * 2 + 2
    with open(tmp_path / "meta_info.csv") as f:
        rows = list(csv.DictReader(f))
    scenes = {split: {r["photo"] for r in rows if r["split"] == split} for split in ("train", "test")}
    assert scenes["test"] == {"chelsea"}                       # the held-out photo as it is, no views of it
    assert scenes["train"] == {"astronaut", "astronaut-v1", "astronaut-v2", "moon", "moon-v1", "moon-v2",
                               "leaves-0", "leaves-1"}

    def pristine(scene):
        return cv2.imread(str(tmp_path / "images" / scene / "pristine_0.png"))[..., ::-1]

    for photo in ("astronaut", "moon"):
        views = [pristine(s) for s in (photo, f"{photo}-v1", f"{photo}-v2")]
        assert all(min(v.shape[:2]) == 96 for v in views)
        assert len({v.tobytes() for v in views}) == 3           # each view is another scene
    moon = pristine("moon-v1")
    assert (moon[..., 0] == moon[..., 1]).all()                 # a grey photo's views stay grey
    leaves = pristine("leaves-0").astype(np.int16)
    assert leaves.shape == (96, 128, 3) and len(np.unique(leaves.reshape(-1, 3), axis=0)) > 50
    # Noise-free: most pixels equal their right-hand neighbour (inside a disc).
    same = (np.abs(np.diff(leaves, axis=1)).sum(-1) == 0)
    assert same.mean() > 0.3
    with pytest.raises(UserError, match="--views"):
        synth.make_synthetic_dataset(tmp_path / "bad", photos=["astronaut", "moon"], views=0)


def test_scene_names_lead_back_to_their_photo():
    assert synth.scene_source(synth.view_name("kiev-valley", 12)) == "kiev-valley"
    assert synth.scene_source("kiev-valley") == "kiev-valley"
    assert synth.scene_source(synth.leaves_name(3)) is None
    assert synth.scene_source("leaves-of-grass") == "leaves-of-grass"


def test_own_photos_join_the_set_and_an_unreadable_one_is_reported(tmp_path, capsys):
    own = tmp_path / "mine"
    own.mkdir()
    rng = np.random.default_rng(0)
    for name in ("beach", "street"):
        coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (160, 120), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(own / f"{name}.jpg"), smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (own / "broken.png").write_bytes(b"not a png")
    (own / "notes.txt").write_text("not an image")
    code = synth.main(["--out", str(tmp_path / "set"), "--photos-dir", str(own), "--photos", "astronaut",
                       "--test-photos", "street", "--kinds", "jpeg", "--levels", "1", "--short-side", "96",
                       "--views", "2"])
    assert code == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err and "Traceback" not in err and "notes.txt" not in err
    with open(tmp_path / "set" / "meta_info.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["photo"] for r in rows if r["split"] == "train"} == {"astronaut", "astronaut-v1", "beach", "beach-v1"}
    assert {r["photo"] for r in rows if r["split"] == "test"} == {"street"}
    beach = cv2.imread(str(tmp_path / "set" / "images" / "beach" / "pristine_0.png"))
    assert beach.shape == (96, 128, 3)
    assert synth.main(["--out", str(tmp_path / "x"), "--photos-dir", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_synthetic_set_is_deterministic(tmp_path):
    for out in ("a", "b"):
        synth.main(["--out", str(tmp_path / out), "--photos", "rocket", "chelsea", "--kinds", "gaussian_noise",
                    "jpeg", "--levels", "2", "--short-side", "96", "--views", "2", "--leaves", "1"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# ---------------------------------------------------------------- crops and metrics

def test_prepare_for_crops_follows_the_dataset_and_the_runtime_rule(tmp_path):
    from training.loading import prepare_for_crops

    for name, shape in (("small.png", (100, 150)), ("large.png", (600, 1000))):
        cv2.imwrite(str(tmp_path / name), np.full((*shape, 3), 90, np.uint8))
    assert prepare_for_crops(str(tmp_path / "small.png"), 224, None, None).shape == (224, 336, 3)
    assert prepare_for_crops(str(tmp_path / "large.png"), 224, 512, None).shape == (307, 512, 3)
    assert prepare_for_crops(str(tmp_path / "large.png"), 224, None, 224).shape == (224, 373, 3)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert prepare_for_crops(str(tmp_path / "broken.jpg"), 224, None, None) is None


def test_metrics_against_known_values():
    x = np.arange(10.0)
    assert srcc(x, x ** 3) == pytest.approx(1.0)
    assert srcc(x, -x) == pytest.approx(-1.0)
    assert plcc(x, 2 * x + 1) == pytest.approx(1.0)
    assert plcc(x, x ** 3) < 0.95
    # A monotonic nonlinearity is what the logistic fit is for.
    y = 1 / (1 + np.exp(-(x - 4.5)))
    assert plcc_fit(x, y) > plcc(x, y) and plcc_fit(x, y) == pytest.approx(1.0, abs=1e-3)
    assert set(correlations(x, y)) == {"srcc", "plcc", "plcc_fit", "krcc"}


def test_training_evaluation_sees_the_runtimes_crops(tmp_path):
    """Training-time evaluation scores an image exactly as the deployed runtime crops it: the same
    decode (EXIF, alpha), resize and crops, as RGB float tensors."""
    from contract.preprocess import Preprocess
    from contract.images import read_image
    from training.datasets import Sample
    from training.loading import EvaluationImages

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.dstack([rng.integers(0, 256, (700, 900, 3)), np.full((700, 900), 200)]).astype(np.uint8))
    item = EvaluationImages([Sample(str(path), 0.5, "natural", "d", 0)], ["five", "random10"], 224, seed=3,
                            max_long_side=512)[0]
    for protocol in ("five", "random10"):
        runtime_crops = Preprocess(224, 512, 224, protocol, seed=3)(read_image(path))
        expected = torch.from_numpy(runtime_crops[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(item[protocol], expected), protocol
