"""Reading `torch.save` files without PyTorch (`model.network.torch_checkpoint`): good ones, hostile ones.

Good checkpoints come from `../shared/data/torch_checkpoints/` (written by
`torch.save` in both formats, with their expected arrays, and two malicious
pickles). Hostile files are written here, opcode by opcode and zip record by
zip record, so each test names exactly what it attacks; each is loaded in a
child process under a memory limit, where it must end as one
`CheckpointError` line.
"""

import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from model.network import torch_checkpoint
from torch_files import save_zip

CHECKPOINTS = SHARED_DATA / "torch_checkpoints"
PWNED = "/tmp/twoplusone_pwned"  # what the malicious pickles would create
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save's legacy format opens with it
REFUSED = 3  # the child's exit status when the reader refuses the file
# Address space the child may map beyond what it maps before loading: far
# more than any of these files needs, far less than they ask for.
HEADROOM = 1 << 30
GiB = 1 << 30

# Loads argv[1] as the model does, under an address-space limit; prints one
# line (the error, or "loaded") and how much its peak RSS grew, on stderr.
CHILD = """
import resource, sys
from model.network import torch_checkpoint

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

with open("/proc/self/statm") as statm:
    mapped = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (mapped + int(sys.argv[2]),) * 2)
before = peak_mb()
try:
    torch_checkpoint.load_state_dict(sys.argv[1])
except torch_checkpoint.CheckpointError as error:
    print(f"{type(error).__name__}: {error}")
    status = %d
else:
    print("loaded")
    status = 0
print(f"peak RSS grew {peak_mb() - before:.0f} MB", file=sys.stderr)
sys.exit(status)
""" % REFUSED


def shared_checkpoint(name):
    """A checkpoint of ../shared: skipped only when ../shared is absent, a failure when
    the file alone is."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared fixtures are not at {SHARED_DATA}")
    path = CHECKPOINTS / name
    assert path.is_file(), f"{path} is missing from the shared fixtures"
    return path


def assert_reads_expected(path):
    state = torch_checkpoint.load_state_dict(path)
    expected = np.load(shared_checkpoint("small_expected.npz"))
    assert sorted(state) == sorted(expected.files)
    for key in expected.files:
        assert state[key].shape == expected[key].shape, key
        np.testing.assert_array_equal(state[key].astype(expected[key].dtype), expected[key],
                                      err_msg=key)
    return state


# --- Pickles, opcode by opcode -------------------------------------------------------

def text(value):
    data = value.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def integer(value):
    if -2**31 <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def tup(*items):
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def glob(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def storage(key, numel, kind="FloatStorage", legacy=False):
    """A persistent id naming a storage, as torch.save writes it."""
    return tup(text("storage"), glob("torch", kind), text(key), text("cpu"), integer(numel),
               *[pickle.NONE] * legacy) + pickle.BINPERSID


def tensor(key, numel, size, stride, offset=0, legacy=False):
    """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`."""
    return (glob("torch._utils", "_rebuild_tensor_v2")
            + tup(storage(key, numel, legacy=legacy), integer(offset),
                  tup(*map(integer, size)), tup(*map(integer, stride)), pickle.NEWFALSE,
                  glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE)
            + pickle.REDUCE)


def state_pickle(entries, build=None):
    """A pickled `OrderedDict` of `{key: pickled value}`; `build` is a pickled state
    for its BUILD, as torch.save writes a state dict's `_metadata`."""
    items = b"".join(text(key) + value for key, value in entries.items())
    tail = build + pickle.BUILD if build is not None else b""
    return (pickle.PROTO + b"\x02" + glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE
            + pickle.REDUCE + pickle.MARK + items + pickle.SETITEMS + tail + pickle.STOP)


def one_float():
    return {"w": tensor("0", 1, (1,), (1,))}, {"0": np.float32(1.5).tobytes()}


# --- Files ---------------------------------------------------------------------------

def zip_checkpoint(path, data_pkl, storages, bombs=()):
    """A torch.save zip: `data.pkl` and raw storages. `bombs` replace or add members
    with a deflate stream, each `(name, stream, size the central directory declares)`."""
    members = {"data.pkl": data_pkl, "byteorder": b"little",
               **{f"data/{key}": raw for key, raw in storages.items()}}
    sizes = {name: size for name, _, size in bombs}
    members.update((name, stream) for name, stream, _ in bombs)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(f"archive/{name}")
            archive.writestr(info, data)  # stored verbatim...
            if name in sizes:
                # ...while the central directory, which readers go by, calls a bomb
                # deflated and of its size, with a CRC no inflated prefix can match.
                info.compress_type, info.file_size, info.CRC = (zipfile.ZIP_DEFLATED,
                                                                sizes[name], 0)
    return path


def deflated_zeros(size):
    """A raw deflate stream of `size` zero bytes (whole MiBs), built in milliseconds:
    one fully flushed MiB, repeated."""
    mib = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = mib.compress(bytes(1 << 20)) + mib.flush(zlib.Z_FULL_FLUSH)
    return block * (size >> 20) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def legacy_checkpoint(path, data_pkl, storages, keys_pkl=None):
    """torch.save's legacy stream: magic, protocol, system info, data and keys pickles,
    then each storage as its element count and bytes (float32 assumed)."""
    keys_pkl = keys_pkl or pickle.dumps(list(storages), protocol=2)
    head = [pickle.dumps(value, protocol=2) for value in
            (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})]
    body = [struct.pack("<q", numel) + raw for numel, raw in storages.values()]
    path.write_bytes(b"".join(head + [data_pkl, keys_pkl] + body))
    return path


# --- Hostile files: (builder of the file in a folder, fragment of the error) ---------

def build_on(target, state):
    """A good state dict whose `_metadata` holds `target` with BUILD applied to it."""
    def build(folder):
        entries, storages = one_float()
        data = state_pickle(entries, build=dict_state(_metadata=target + state + pickle.BUILD))
        return zip_checkpoint(folder / "build.pth", data, storages)
    return build


def dict_state(**values):
    return (pickle.EMPTY_DICT + pickle.MARK
            + b"".join(text(k) + v for k, v in values.items()) + pickle.SETITEMS)


# What BUILD would retarget FloatStorage with: its name, or its numpy type.
INT8 = dict_state(name=text("CharStorage"), numpy=text("int8"))
# The reader's own stand-ins for what a pickle may name, and what it makes: BUILD
# on a stand-in would change every later load in the process.
BUILD_TARGETS = {
    "storage-class": build_on(glob("torch", "FloatStorage"), INT8),
    "storage-class-slots": build_on(glob("torch", "FloatStorage"),
                                    pickle.NONE + INT8 + pickle.TUPLE2),
    "rebuild-function": build_on(glob("torch._utils", "_rebuild_tensor_v2"),
                                 dict_state(poison=integer(1))),
    "ordered-dict-class": build_on(glob("collections", "OrderedDict"),
                                   dict_state(fromkeys=integer(1))),
    "tensor": build_on(tensor("0", 1, (1,), (1,)), dict_state(storage=text("0"))),
    "storage": build_on(storage("0", 1), dict_state(numel=integer(2**40))),
}


def broadcast(size, stride, numel=1):
    def build(folder):
        entries = {"w": tensor("0", numel, size, stride)}
        return zip_checkpoint(folder / "view.pth", state_pickle(entries),
                              {"0": bytes(4 * numel)})
    return build


def many_views(folder):
    """256 distinct views of one 1 MiB storage: 256 MiB of copies from 1 MiB of file."""
    numel = 1 << 18
    entries = {f"w{i}": tensor("0", numel, (numel - i,), (1,), offset=i) for i in range(256)}
    return zip_checkpoint(folder / "views.pth", state_pickle(entries),
                          {"0": bytes(4 * numel)})


def zip_bomb(member, declared):
    def build(folder):
        entries, storages = one_float()
        if member != "data.pkl":
            del storages["0"]
        return zip_checkpoint(folder / "bomb.pth", state_pickle(entries), storages,
                              bombs=[(member, deflated_zeros(3 * GiB), declared)])
    return build


def nested(value):
    def build(folder):
        entries, storages = one_float()
        return zip_checkpoint(folder / "nested.pth", state_pickle({**entries, "x": value}),
                              storages)
    return build


def deep_key(folder):
    entries, storages = one_float()
    # Deep enough that hashing it overflows CPython's C stack.
    key = pickle.EMPTY_TUPLE + pickle.TUPLE1 * 500_000
    data = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + text("w") + entries["w"]
            + key + pickle.NONE + pickle.SETITEMS + pickle.STOP)
    return zip_checkpoint(folder / "key.pth", data, storages)


def shared_lists(levels, width):
    """A tuple of lists, each holding the one before `width` times: a few KB of pickle
    that copy to width**levels lists."""
    value = pickle.MARK + pickle.EMPTY_LIST + pickle.BINPUT + b"\x00"
    for level in range(levels):
        value += (pickle.EMPTY_LIST + pickle.MARK + (pickle.BINGET + bytes([level])) * width
                  + pickle.APPENDS + pickle.BINPUT + bytes([level + 1]))
    return value + pickle.TUPLE


def legacy_storage_length(folder):
    entries = {"w": tensor("0", 1, (1,), (1,), legacy=True)}
    return legacy_checkpoint(folder / "legacy.pth", state_pickle(entries),
                             {"0": (2**61, np.float32(1).tobytes())})


def legacy_deep_keys(folder):
    entries = {"w": tensor("0", 1, (1,), (1,), legacy=True)}
    keys = (pickle.PROTO + b"\x02" + pickle.EMPTY_LIST * 10**5 + pickle.APPEND * (10**5 - 1)
            + pickle.STOP)
    return legacy_checkpoint(folder / "legacy.pth", state_pickle(entries),
                             {"0": (1, np.float32(1).tobytes())}, keys_pkl=keys)


HOSTILE = [
    *[pytest.param(build, "sets the state of", id=f"build-on-{name}")
      for name, build in BUILD_TARGETS.items()],
    pytest.param(broadcast((2**40,), (0,)), "more elements than its storage",
                 id="broadcast-astronomical"),
    pytest.param(broadcast((2**27,), (0,)), "more elements than its storage",
                 id="broadcast-512MiB"),
    pytest.param(broadcast((2**14, 2**14), (1, 1), numel=2**15),
                 "more elements than its storage", id="overlapping-view-1GiB"),
    pytest.param(broadcast((0, 2**63), (1, 1)), "impossible shape", id="empty-huge-dims"),
    pytest.param(many_views, "times the", id="many-views-of-one-storage"),
    pytest.param(zip_bomb("data/0", 3 * GiB), "without inflating", id="zip-bomb-storage"),
    pytest.param(zip_bomb("data/0", 4), "damaged", id="zip-bomb-lying-size"),
    pytest.param(zip_bomb("data.pkl", 3 * GiB), "without inflating", id="zip-bomb-pickle"),
    pytest.param(nested(pickle.EMPTY_LIST * 10**5 + pickle.APPEND * (10**5 - 1)),
                 "nest deeper", id="deep-lists"),
    pytest.param(nested(pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00"
                        + pickle.APPEND), "nest deeper", id="list-inside-itself"),
    pytest.param(deep_key, "dict key", id="deep-tuple-key"),
    pytest.param(nested(shared_lists(4, 1000)), "no state dict", id="shared-lists"),
    pytest.param(legacy_storage_length, "truncated", id="legacy-storage-length"),
    pytest.param(legacy_deep_keys, "storage keys", id="legacy-deep-keys"),
]


def run_child(path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", CHILD, str(path), str(HEADROOM)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("build, fragment", HOSTILE)
def test_a_hostile_file_is_one_checkpoint_error_in_bounded_memory(tmp_path, build, fragment):
    result = run_child(build(tmp_path))
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == REFUSED, (result.returncode, result.stdout,
                                          result.stderr[-3000:])
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and re.match(r"(Unsafe)?CheckpointError: ", lines[0]), lines
    assert fragment in lines[0], lines[0]
    grew = float(re.search(r"peak RSS grew (\S+) MB", result.stderr)[1])
    assert grew < 64, f"the child's peak RSS grew {grew} MB"


@pytest.mark.parametrize("build", BUILD_TARGETS.values(), ids=BUILD_TARGETS.keys())
def test_build_on_anything_but_a_state_dict_changes_no_later_load(tmp_path, build):
    with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="sets the state of"):
        torch_checkpoint.load_state_dict(build(tmp_path))
    assert_reads_expected(shared_checkpoint("small_zip.pth"))
    assert_reads_expected(shared_checkpoint("small_legacy.pth"))


def test_a_state_dicts_metadata_is_read_past(tmp_path):
    # torch.save gives a state dict's OrderedDict its `_metadata` by BUILD.
    metadata = (glob("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
                + pickle.MARK + text("") + dict_state(version=integer(1)) + pickle.SETITEMS)
    entries, storages = one_float()
    data = state_pickle(entries, build=dict_state(_metadata=metadata))
    state = torch_checkpoint.load_state_dict(zip_checkpoint(tmp_path / "m.pth", data, storages))
    assert list(state) == ["w"] and state["w"].tolist() == [1.5]
    assert not hasattr(state, "_metadata")


def test_tied_and_overlapping_tensors_stay_exact(tmp_path):
    # Two keys naming one view (tied weights) share an array, as in torch; a
    # transposed view of the same storage is its own copy, within the budget.
    values = np.arange(12, dtype=np.float32)
    entries = {"a": tensor("0", 12, (3, 4), (4, 1)), "tied": tensor("0", 12, (3, 4), (4, 1)),
               "t": tensor("0", 12, (4, 3), (1, 4))}
    path = zip_checkpoint(tmp_path / "s.pth", state_pickle(entries), {"0": values.tobytes()})
    state = torch_checkpoint.load_state_dict(path)
    np.testing.assert_array_equal(state["a"], values.reshape(3, 4))
    assert state["tied"] is state["a"]
    np.testing.assert_array_equal(state["t"], values.reshape(3, 4).T)


# --- The shared fixtures -------------------------------------------------------------

@pytest.mark.parametrize("name", ["small_zip.pth", "small_legacy.pth", "nested_zip.pth"])
def test_fixture_checkpoints_read_to_the_expected_arrays(name):
    state = assert_reads_expected(shared_checkpoint(name))
    # dtypes as saved: bfloat16 is widened to float32, the rest keep theirs.
    assert state["half.weight"].dtype == np.float16
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert state["bn.num_batches_tracked"].shape == ()
    assert state["int32.table"].dtype == np.int32 and state["flag"].dtype == np.bool_
    assert state["bf16.weight"].dtype == np.float32


def test_nested_checkpoint_keeps_its_other_entries():
    root = torch_checkpoint.load(shared_checkpoint("nested_zip.pth"))
    assert root["epoch"] == 3 and root["arch"] == "r2plus1d_18"
    assert torch_checkpoint.is_state_dict(root["model"])


@pytest.mark.parametrize("name", ["malicious_zip.pth", "malicious_plain.pkl"])
def test_malicious_pickles_are_refused_and_run_nothing(name):
    path = shared_checkpoint(name)
    if os.path.exists(PWNED):
        os.remove(PWNED)
    with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="posix.system"):
        torch_checkpoint.load_state_dict(path)
    assert not os.path.exists(PWNED)


def test_damaged_and_foreign_files_fail_clearly(tmp_path):
    with pytest.raises(torch_checkpoint.CheckpointError, match="not a PyTorch checkpoint"):
        torch_checkpoint.load(REPO / "README.md")
    with pytest.raises(torch_checkpoint.CheckpointError, match="cannot read"):
        torch_checkpoint.load(tmp_path / "missing.pth")
    # A storage shorter than its tensor: refused, never read past its end.
    path = save_zip({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, tmp_path / "a.pth")
    short = tmp_path / "short.pth"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(short, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data[:16] if item.filename.endswith("data/0") else data)
    with pytest.raises(torch_checkpoint.CheckpointError, match="past the end"):
        torch_checkpoint.load(short)
    # A zip that is not a checkpoint, and a checkpoint with no state dict.
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(torch_checkpoint.CheckpointError, match="no single data.pkl"):
        torch_checkpoint.load(tmp_path / "other.zip")
