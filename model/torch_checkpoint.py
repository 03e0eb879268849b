"""Reads files written by `torch.save` into numpy arrays, without PyTorch and without running code.

    state = load_state_dict("r2plus1d_18-91a641e6.pth")   # {key: numpy array}

Both of `torch.save`'s formats: the zip archive (PyTorch 1.6 and later: a
pickle `data.pkl` beside one raw file per storage) and the legacy stream
(five pickles, then the raw storages). A pickle is a program; this one runs
through an unpickler that knows only the calls that rebuild tensors and plain
containers, as `torch.load(weights_only=True)` does, and refuses anything
else before it is called. Tensor views (strides, offsets, storages shared by
several tensors) are checked against their storage's size and copied out.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from preprocess.errors import UserError

# The legacy format opens with this number, pickled.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Where a checkpoint may keep its state dict, besides at the top.
STATE_DICT_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module",
                   "net", "network")
_BFLOAT16 = "bfloat16"
# Storage classes (and dtype names) to numpy types. bfloat16, which numpy
# lacks, is widened to float32 exactly.
_DTYPES = {
    "FloatStorage": np.float32, "float32": np.float32, "float": np.float32,
    "DoubleStorage": np.float64, "float64": np.float64, "double": np.float64,
    "HalfStorage": np.float16, "float16": np.float16, "half": np.float16,
    "BFloat16Storage": _BFLOAT16, "bfloat16": _BFLOAT16,
    "LongStorage": np.int64, "int64": np.int64, "long": np.int64,
    "IntStorage": np.int32, "int32": np.int32, "int": np.int32,
    "ShortStorage": np.int16, "int16": np.int16, "short": np.int16,
    "CharStorage": np.int8, "int8": np.int8,
    "ByteStorage": np.uint8, "uint8": np.uint8,
    "BoolStorage": np.bool_, "bool": np.bool_,
}


class CheckpointError(UserError):
    """A file that is not a readable PyTorch checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle asks to call something other than a tensor rebuild."""


class _DType:
    """What a pickled storage class or dtype stands for; never called."""

    def __init__(self, name):
        self.name = name
        self.numpy = _DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.numpy == _BFLOAT16 else np.dtype(self.numpy).itemsize


class _StorageRef:
    """A storage named in the pickle, read once its bytes are at hand."""

    def __init__(self, key, dtype, numel, offset=0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _TensorRef:
    """A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor in the checkpoint does not name its storage")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(tensor, requires_grad=None, backward_hooks=None, *unused):
    return tensor


def _encode(text, encoding="latin1"):
    # Protocol-2 pickles spell bytes as a call to _codecs.encode.
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafeCheckpointError("the checkpoint's pickle calls _codecs.encode oddly")
    return text.encode("latin1")


# Everything the pickle may name: (module, name) -> what it gets instead.
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("_codecs", "encode"): _encode,
    **{("torch", name): _DType(name) for name in _DTYPES},
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, persistent_load):
        super().__init__(file, encoding="utf-8")
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"the checkpoint asks to run {module}.{name}, which rebuilding tensors "
                "never needs; it was not run. Only load checkpoints from sources you "
                "trust, or re-save this one as a plain state dict") from None

    def persistent_load(self, pid):
        return self._persistent_load(pid)


def _unpickle(data, persistent_load=None):
    try:
        return _SafeUnpickler(io.BytesIO(data), persistent_load or _no_storage).load()
    except CheckpointError:
        raise
    except Exception as error:  # any malformed pickle: name it, run nothing more
        raise CheckpointError(f"cannot unpickle: {type(error).__name__}: {error}") from None


def _storage_pid(pid):
    """`(dtype, key, numel, view_metadata)` of a persistent id `('storage', ...)`."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], _DType)):
        raise CheckpointError(f"unknown persistent id in the pickle: {pid!r:.80}")
    return pid[1], str(pid[2]), int(pid[4]), (pid[5] if len(pid) > 5 else None)


def _array(raw, dtype, byteorder="little"):
    """The elements of a raw storage as a numpy array (bfloat16 widened to float32)."""
    if dtype.numpy == _BFLOAT16:
        halves = np.frombuffer(raw, np.dtype("<u2" if byteorder == "little" else ">u2"))
        return (halves.astype(np.uint32) << 16).view(np.float32)
    kind = np.dtype(dtype.numpy).newbyteorder("<" if byteorder == "little" else ">")
    return np.frombuffer(raw, kind).astype(np.dtype(dtype.numpy), copy=False)


def _materialise(obj, storages):
    """Replaces every `_TensorRef` in a nest of containers with its numpy array."""
    if isinstance(obj, _TensorRef):
        return _view(obj, storages[obj.storage.key], obj.storage.offset)
    if isinstance(obj, dict):
        return type(obj)((key, _materialise(value, storages)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(value, storages) for value in obj)
    return obj


def _view(tensor, storage, base):
    """Copies a strided view out of a storage array, after checking it stays inside."""
    size, stride = tensor.size, tensor.stride
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"a tensor has an invalid shape {size} or strides {stride}")
    start = base + tensor.offset
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = start + sum((n - 1) * s for n, s in zip(size, stride))
    if start < 0 or last >= len(storage):
        raise CheckpointError(f"a tensor of shape {size} reaches past the end of its "
                              f"storage ({len(storage)} elements): the file is damaged")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[start:], shape=size,
                                           strides=[s * item for s in stride],
                                           writeable=False)
    return np.array(view)


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip but not a PyTorch checkpoint "
                                  "(no single data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode().strip()
        refs = {}

        def persistent_load(pid):
            dtype, key, numel, _ = _storage_pid(pid)
            refs.setdefault(key, _StorageRef(key, dtype, numel))
            return refs[key]

        root = _unpickle(archive.read(pickles[0]), persistent_load)
        storages = {}
        for key, ref in refs.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise CheckpointError(f"{path} lacks the storage {member}: it is damaged")
            storages[key] = _array(archive.read(member), ref.dtype, byteorder)
    return _materialise(root, storages)


def _load_legacy(path, data):
    stream = io.BytesIO(data)

    def next_pickle(persistent_load=None):
        start = stream.tell()
        # Find where this pickle ends by unpickling it; plain values only here.
        value = _SafeUnpickler(stream, persistent_load or _no_storage).load()
        if stream.tell() == start:
            raise CheckpointError(f"{path} ends early")
        return value

    try:
        magic = next_pickle()
    except UnsafeCheckpointError:
        raise
    except Exception:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path} is neither a zip nor a legacy PyTorch checkpoint; "
                              "give a file written by torch.save")
    try:
        if next_pickle() != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{path} has an unknown legacy protocol version")
        next_pickle()  # system info: byte order and type sizes (little-endian assumed)
        refs = {}

        def persistent_load(pid):
            dtype, key, numel, view = _storage_pid(pid)
            root = refs.setdefault(key, _StorageRef(key, dtype, numel))
            if view is not None:  # (view key, element offset, view size)
                return _StorageRef(key, dtype, int(view[2]), offset=int(view[1]))
            return root

        root = next_pickle(persistent_load)
        keys = next_pickle()
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"cannot unpickle {path}: {type(error).__name__}: "
                              f"{error}") from None
    storages = {}
    for key in keys:
        ref = refs.get(str(key))
        header = stream.read(8)
        if ref is None or len(header) != 8:
            raise CheckpointError(f"{path} is truncated or damaged near storage {key}")
        (numel,) = struct.unpack("<q", header)
        raw = stream.read(numel * ref.dtype.itemsize)
        if numel < 0 or len(raw) != numel * ref.dtype.itemsize:
            raise CheckpointError(f"{path} is truncated in storage {key}")
        storages[str(key)] = _array(raw, ref.dtype)
    return _materialise(root, storages)


def _no_storage(pid):
    raise CheckpointError("the pickle names a storage where none can be")


def load(path):
    """Everything a `torch.save` file holds, tensors as numpy arrays.

    Raises:
        UnsafeCheckpointError: the pickle asks to call anything beyond tensor
            rebuilds and plain containers (nothing is called).
        CheckpointError: the file is not a readable PyTorch checkpoint.
    """
    path = str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            if zipfile.is_zipfile(handle):
                return _load_zip(path)
            handle.seek(0)
            data = handle.read()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path} is a damaged zip: {error}") from None
    if head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it is not a pickle "
                              "nor a zip); give a file written by torch.save")
    return _load_legacy(path, data)


def is_state_dict(value):
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, np.ndarray)
                    for k, v in value.items()))


def load_state_dict(path):
    """The `{key: numpy array}` state dict in a checkpoint, bare or under a usual key.

    Nested dicts (`{"epoch": 3, "model": {...}}`) are searched under
    `STATE_DICT_KEYS`; the `module.` prefix of `DataParallel` is dropped.
    """
    root = load(path)
    candidates = [root] + [root.get(key) for key in STATE_DICT_KEYS
                           if isinstance(root, dict)]
    for candidate in candidates:
        if is_state_dict(candidate):
            return strip_prefix(candidate, "module.")
    keys = ", ".join(map(str, list(root)[:6])) if isinstance(root, dict) else type(root)
    raise CheckpointError(f"{path} holds no state dict of tensors at the top or under "
                          f"{', '.join(STATE_DICT_KEYS)} (it has: {keys})")


def strip_prefix(state, prefix):
    if all(key.startswith(prefix) for key in state):
        return collections.OrderedDict((key[len(prefix):], v) for key, v in state.items())
    return state
