"""Published weights by name: fetched once from a server into Keras's cache, checked, built.

The files are made from the shared recipes (`../shared/data/`): torchvision's
R(2+1)D-18 layout, and IG-65M's R(2+1)D-34 layout with each file's own
classifier. A local HTTP server publishes them under their real file names,
and the registry's entries point at it with the fixtures' hashes; everything
else in the entries (architecture, epsilon, classes, normalisation) is what
the real files get.
"""

import dataclasses
import json
import os
import pathlib
import re

import keras
import numpy as np
import pytest

import train
from conftest import SHARED_DATA, RangeServer, two_class_records
from model.network import R2PLUS1D_STAGES, weights
from model.network.build import build_model
from model.training.config import PRESETS
from torch_files import save_zip

IG65M = SHARED_DATA / "ig65m_r2plus1d_34"
TORCHVISION = SHARED_DATA / "torchvision_r2plus1d_18"


@pytest.fixture(scope="module")
def published(torchvision_recipe, tmp_path_factory):
    """`{name: (path, sha256)}`: a fixture file for every named weight, in one served folder.

    IG-65M's files differ only in their classifier, whose rows the recipe
    draws in order from one seed: 359 classes are the first 359 of the
    fixture's 400, and the first 400 of 487 are the fixture's.
    """
    if not IG65M.is_dir():
        pytest.skip(f"the IG-65M fixture is not at {IG65M}")
    folder = tmp_path_factory.mktemp("published")
    spec = json.loads((IG65M / "state_dict_spec.json").read_text())
    made = {}
    for name, entry in weights.NAMED_WEIGHTS.items():
        path = folder / entry.file_name
        layout = (entry.architecture, entry.num_classes)
        if layout in made:  # the same bytes under another name
            os.link(made[layout], path)
            continue
        if entry.architecture == "r2plus1d_18":
            state = torchvision_recipe.make_state_dict()
        else:
            head = [[key, [entry.num_classes, *shape[1:]], dtype] if key.startswith("fc.")
                    else [key, shape, dtype] for key, shape, dtype in spec]
            head_spec = folder / f"spec{entry.num_classes}.json"
            head_spec.write_text(json.dumps(head))
            state = torchvision_recipe.make_state_dict(spec=head_spec)
        made[layout] = save_zip(state, path)
    return {name: (folder / entry.file_name, weights.sha256(folder / entry.file_name))
            for name, entry in weights.NAMED_WEIGHTS.items()}


@pytest.fixture(scope="module")
def server(published):
    folder = next(iter(published.values()))[0].parent
    with RangeServer(folder) as running:
        yield running


@pytest.fixture
def registry(published, server, monkeypatch, tmp_path):
    """The registry pointed at the local server with the fixtures' hashes; an empty Keras cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for name, entry in list(weights.NAMED_WEIGHTS.items()):
        monkeypatch.setitem(weights.NAMED_WEIGHTS, name, dataclasses.replace(
            entry, url=server.url(entry.file_name), sha256=published[name][1]))
    server.sent.clear()
    return weights.NAMED_WEIGHTS


def _expected(name):
    folder = TORCHVISION if weights.NAMED_WEIGHTS[name].architecture == "r2plus1d_18" else IG65M
    return np.load(folder / "expected_logits.npy")


def _relative_error(logits, expected):
    shared = min(logits.shape[1], expected.shape[1])
    return (np.abs(logits[:, :shared] - expected[:, :shared]).max()
            / np.abs(expected[:, :shared]).max())


# torchvision's R(2+1)D-18 is the fast run's; the IG-65M R(2+1)D-34s (a few seconds each on
# two cores, through the conversion kinetics400 takes too) are the slow run's.
@pytest.mark.parametrize("name", [
    name if name == "kinetics400" else pytest.param(name, marks=pytest.mark.slow)
    for name in weights.NAMED_WEIGHTS])
def test_each_named_weight_computes_its_fixtures_logits(name, registry, torchvision_recipe,
                                                         capsys):
    entry = registry[name]
    model = build_model(entry.architecture, entry.num_classes, 16, 112, weights=name)
    out = capsys.readouterr().out
    assert f"its {entry.num_classes}-class classifier kept" in out
    assert f"BatchNorm epsilon {entry.bn_epsilon:g}" in out
    logits = model.predict(torchvision_recipe.make_clip(), verbose=0)
    assert _relative_error(logits, _expected(name)) < 1e-4
    assert model.get_layer("stage1_block1").bn1.epsilon == entry.bn_epsilon
    assert os.path.exists(weights.cache_path(name))  # kept for the next use


@pytest.mark.slow
def test_bn_epsilon_still_overrides_the_named_one(registry, torchvision_recipe):
    # Read with PyTorch's epsilon, IG-65M's weights compute something else, silently:
    # the reason their name carries theirs.
    model = build_model("r2plus1d_34", 400, 16, 112, weights="ig65m_kinetics400",
                        bn_epsilon=1e-5)
    assert model.get_layer("stage1_block1").bn1.epsilon == 1e-5
    logits = model.predict(torchvision_recipe.make_clip(), verbose=0)
    assert _relative_error(logits, _expected("ig65m_kinetics400")) > 1e-3


def _downloads(server, name):
    return [path for path, _, _ in server.sent if path.endswith(name)]


def test_a_second_use_reads_the_cache_without_the_server(registry, published, server):
    entry = registry["kinetics400"]
    path, digest = weights.fetch("kinetics400")
    assert path == weights.cache_path("kinetics400") and digest == published["kinetics400"][1]
    assert len(_downloads(server, entry.file_name)) == 1
    # Nothing answers at the URL any more; the cached file is read, checked first.
    registry["kinetics400"] = dataclasses.replace(entry, url="http://127.0.0.1:9/" +
                                                  entry.file_name)
    assert weights.fetch("kinetics400") == (path, digest)
    build_model("r2plus1d_18", 7, 4, 32, weights="kinetics400")
    assert len(_downloads(server, entry.file_name)) == 1


def _damaged_copy(source, target):
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte: the file still reads, to other weights
    target.write_bytes(bytes(data))
    return target


def test_a_tampered_download_is_refused_and_removed(registry, published, tmp_path):
    entry = registry["kinetics400"]
    folder = tmp_path / "tampered"
    folder.mkdir()
    _damaged_copy(published["kinetics400"][0], folder / entry.file_name)
    with RangeServer(folder) as tampered:
        registry["kinetics400"] = dataclasses.replace(entry, url=tampered.url(entry.file_name))
        with pytest.raises(weights.WeightsError) as error:
            build_model("r2plus1d_18", 400, 4, 32, weights="kinetics400")
    message = str(error.value)
    assert "\n" not in message
    assert tampered.url(entry.file_name) in message and entry.sha256[:16] in message
    assert "pass its path instead of 'kinetics400'" in message
    cache = os.path.dirname(weights.cache_path("kinetics400"))
    assert os.listdir(cache) == []  # neither the file nor its partial download


def test_a_damaged_cached_file_is_replaced(registry, published, server):
    entry = registry["kinetics400"]
    path, digest = weights.fetch("kinetics400")
    _damaged_copy(published["kinetics400"][0], pathlib.Path(path))
    assert weights.fetch("kinetics400") == (path, digest)
    assert weights.sha256(path) == digest
    assert len(_downloads(server, entry.file_name)) == 2


def test_offline_is_one_line_naming_the_url_the_hash_and_the_way_round(registry, published):
    entry = registry["ig65m_kinetics400"]
    registry["ig65m_kinetics400"] = dataclasses.replace(
        entry, url="http://127.0.0.1:9/" + entry.file_name)  # nothing listens on port 9
    with pytest.raises(weights.WeightsError) as error:
        build_model("r2plus1d_34", 101, 8, 32, weights="ig65m_kinetics400")
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot download ig65m_kinetics400 from "
                                                      "http://127.0.0.1:9/")
    assert entry.sha256[:16] in message and "pass its path instead" in message
    assert os.listdir(os.path.dirname(weights.cache_path("ig65m_kinetics400"))) == []
    # The way round: the file downloaded by hand, under its published name, is
    # checked and gets its weights' epsilon.
    downloaded = published["ig65m_kinetics400"][0]
    model = build_model("r2plus1d_34", 101, 8, 32, weights=str(downloaded))
    assert model.get_layer("stage2_block1").bn2.epsilon == 1e-3
    # The same name on other bytes is refused.
    other = _damaged_copy(downloaded, pathlib.Path(weights.cache_path("kinetics400")).parent
                          / entry.file_name)
    with pytest.raises(weights.WeightsError, match="has the name of ig65m_kinetics400's file"):
        build_model("r2plus1d_34", 101, 8, 32, weights=str(other))


def test_failed_and_abandoned_downloads_leave_nothing(registry, published, tmp_path):
    entry = registry["kinetics400"]
    cache = pathlib.Path(weights.cache_path("kinetics400")).parent
    cache.mkdir(parents=True)
    abandoned = cache / f"{entry.file_name}.999999999.partial"  # a killed download's
    abandoned.write_bytes(b"half")
    with RangeServer(published["kinetics400"][0].parent, fail_first=1) as flaky:
        registry["kinetics400"] = dataclasses.replace(entry, url=flaky.url(entry.file_name))
        with pytest.raises(weights.WeightsError, match="503"):
            weights.fetch("kinetics400")
        assert os.listdir(cache) == []
        assert weights.fetch("kinetics400")[1] == published["kinetics400"][1]
    assert os.listdir(cache) == [entry.file_name]


def test_a_model_that_does_not_fit_is_refused_before_any_download(registry, server):
    with pytest.raises(weights.WeightsError, match="r2plus1d_34 weights and do not fit "
                                                   "r2plus1d_18; choose --model r2plus1d_34"):
        build_model("r2plus1d_18", 101, 8, 32, weights="ig65m")
    with pytest.raises(weights.WeightsError, match="drop --width_multiplier"):
        build_model("r2plus1d_18", 101, 8, 32, weights="kinetics400", width_multiplier=0.5)
    with pytest.raises(weights.WeightsError, match=r"neither a file nor published weights "
                                                   r"\(kinetics400, "):
        build_model("r2plus1d_18", 101, 8, 32, weights="kinetics40")
    assert server.sent == []


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return two_class_records(tmp_path_factory.mktemp("weights_records"))


@pytest.mark.slow
def test_init_from_a_name_fine_tunes_and_records_name_url_and_hash(registry, published,
                                                                    records, tmp_path, capsys):
    run_dir = tmp_path / "run"
    # The preset names its weights: no --init_from, no --bn_epsilon.
    assert train.main(["--records", str(records), "--output_dir", str(run_dir),
                       "--preset", "r2plus1d_18_kinetics", "--num_frames", "4",
                       "--image_size", "48", "--batch_size", "4", "--epochs", "1",
                       "--steps_per_epoch", "2", "--eval_clips", "1", "--eval_crops", "1",
                       "--precise_bn_batches", "1", "--precision", "float32"]) == 0
    out = capsys.readouterr().out
    assert "weights: r2plus1d_18 from kinetics400, trained on 16-frame clips" in out
    assert "a new 2-class classifier (the checkpoint has 400 classes)" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["init_from"] == "kinetics400"
    assert config["init_from_url"] == registry["kinetics400"].url
    assert config["init_from_sha256"] == published["kinetics400"][1]
    assert config["init_from_file"] == weights.cache_path("kinetics400")
    trained = keras.saving.load_model(run_dir / "model.keras")
    assert trained.get_layer("stage1_block1").bn1.epsilon == 1e-5
    assert "input_norm" in [layer.name for layer in trained.layers]  # Kinetics statistics


def test_init_from_names_that_do_not_fit_fail_in_one_line(records, tmp_path, capsys):
    cases = [(["--init_from", "kinetics400"],
              "--init_from kinetics400 are r2plus1d_18 weights and do not fit tutorial; "
              "choose --model r2plus1d_18 (or --preset r2plus1d_18_kinetics)"),
             (["--preset", "r2plus1d_18", "--init_from", "ig65m_kinetics400"],
              "choose --model r2plus1d_34 (or --preset r2plus1d_34_ig65m)"),
             (["--preset", "r2plus1d_18_kinetics", "--width_multiplier", "0.5"],
              "--init_from kinetics400 fixes the network's width"),
             (["--model", "r2plus1d_18", "--image_size", "48", "--init_from", "kinetics40"],
              "kinetics40 does not exist; give a run folder, a .keras file, a PyTorch "
              "checkpoint or one of the named weights: kinetics400, ")]
    for args, fragment in cases:
        code = train.main(["--records", str(records), "--output_dir", str(tmp_path / "run"),
                           *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], (fragment, err)


def test_the_registry_is_consistent():
    for name, entry in weights.NAMED_WEIGHTS.items():
        suffix = re.search(r"-([0-9a-f]{8})\.pth$", entry.file_name)
        assert suffix and entry.sha256.startswith(suffix[1]), name  # torch.hub's rule
        assert re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", entry.sha256), name
        assert entry.url.startswith("https://") and entry.architecture in R2PLUS1D_STAGES
        assert entry.normalisation == "kinetics" and entry.source
    # A preset that names weights trains and evaluates the network and clip they were made for.
    for preset, values in PRESETS.items():
        entry = weights.lookup(values.get("init_from"))
        if entry is not None:
            assert values["model"] == entry.architecture, preset
            assert values["num_frames"] == entry.num_frames, preset
