"""Reads files written by `torch.save` into numpy arrays, without PyTorch and without running code.

    state = load_state_dict("r2plus1d_18-91a641e6.pth")   # {key: numpy array}

Both of `torch.save`'s formats: the zip archive (PyTorch 1.6 and later: a
pickle `data.pkl` beside one raw file per storage) and the legacy stream
(five pickles, then the raw storages). A pickle is a program; this one runs
on a small interpreter of its own that follows `torch.load(weights_only=True)`'s
rules: it knows the opcodes of plain values and containers, calls only the
functions that rebuild tensors, and refuses anything else before it happens.

Its promises hold for any file, hostile ones included; each broken one is one
`CheckpointError`:
- nothing outside tensor rebuilding runs, and no load changes the next one;
- memory stays near the storages the file declares: no zip member is inflated
  past its declared size, a tensor may not hold more elements than its storage
  (a broadcast), and the copies of all tensors may not exceed twice the storages;
- containers nest at most `MAX_DEPTH` deep, so no nesting overflows a stack.
"""

import collections
import dataclasses
import math
import pickle
import pickletools
import struct
import zipfile
import zlib

import numpy as np

from preprocess.errors import UserError

# The legacy format opens with this number, pickled.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Where a checkpoint may keep its state dict, besides at the top.
STATE_DICT_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module",
                   "net", "network")
# Containers within containers: a checkpoint needs four or so (its dict, the
# optimizer's state, a parameter's moments), recursion troubles start near 1000.
MAX_DEPTH = 32
# A state dict's pickle takes ~150 bytes and ~20 values a tensor: these allow
# some 200,000 tensors and cap what the interpreter can be made to hold
# (a value costs it 100 bytes at most).
_MAX_PICKLE_BYTES = 64 << 20
_MAX_PICKLE_VALUES = 1 << 22
# numpy's own limit on dimensions is 64; no network weight comes near.
_MAX_DIMS = 32
# Tensors are copied out of their storages; overlapping views (a weight and a
# slice of it) may take more than the storages, but not more than this many times.
_COPY_FACTOR = 2
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
# What a dict key may be: a state dict's are strings, an optimizer's numbers.
# Nothing nested, since hashing a nested key recurses (and can crash CPython).
_KEY_TYPES = (str, int, float, bool, bytes, type(None))


class CheckpointError(UserError):
    """A file that is not a readable PyTorch checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle asks for something other than rebuilding tensors."""


@dataclasses.dataclass(frozen=True)
class _DType:
    """What a pickled storage class or dtype stands for; shared by every load, so frozen."""

    name: str

    @property
    def numpy(self):
        return _DTYPES[self.name]

    @property
    def itemsize(self):
        return 2 if self.numpy == _BFLOAT16 else np.dtype(self.numpy).itemsize


class _StorageRef:
    """A storage named in the pickle, read once its bytes are at hand."""

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key, dtype, numel, offset=0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _TensorRef:
    """A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _is_count(value):
    return type(value) is int and value >= 0


def _is_shape(value):
    return (type(value) in (tuple, list) and len(value) <= _MAX_DIMS
            and all(_is_count(n) for n in value))


def _printable(text, limit=80):
    """`text` fit for a one-line message: hostile names can hold newlines."""
    return text if text.isprintable() and len(text) <= limit else repr(text[:limit])


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor in the checkpoint does not name its storage")
    if not (_is_count(storage_offset) and _is_shape(size) and _is_shape(stride)
            and len(size) == len(stride)):
        raise CheckpointError("a tensor in the checkpoint has an invalid offset, shape or "
                              "strides: the file is damaged")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(tensor, *unused):
    # Also `_rebuild_parameter_with_state`: a Parameter's attributes are not weights.
    if not isinstance(tensor, _TensorRef):
        raise CheckpointError("a parameter in the checkpoint holds no tensor")
    return tensor


def _key(key):
    if not (type(key) in _KEY_TYPES
            or type(key) is tuple and all(type(part) in _KEY_TYPES for part in key)):
        raise CheckpointError(f"the checkpoint's pickle uses a {type(key).__name__} as a "
                              "dict key; a state dict's keys are strings or numbers")
    return key


def _ordered_dict(pairs=()):
    # `OrderedDict()` as torch.save writes it, or of `[key, value]` pairs (Python 2's).
    if type(pairs) not in (list, tuple) or not all(
            type(pair) in (list, tuple) and len(pair) == 2 for pair in pairs):
        raise CheckpointError("the checkpoint's pickle builds an OrderedDict of no pairs")
    return collections.OrderedDict((_key(key), value) for key, value in pairs)


def _encode(text, encoding="latin1"):
    # Protocol-2 pickles spell bytes as a call to _codecs.encode.
    if type(text) is not str or type(encoding) is not str or encoding != "latin1":
        raise UnsafeCheckpointError("the checkpoint's pickle calls _codecs.encode oddly")
    return text.encode("latin1")


# Everything the pickle may name: (module, name) -> what it gets instead.
_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _encode,
    **{("torch", name): _DType(name) for name in _DTYPES},
}
# What REDUCE may call, by identity: a hostile value is never hashed or compared.
_CALLABLE = {id(f): f for f in _ALLOWED.values() if callable(f)}
_NAMES = {}
for (_module, _name), _value in _ALLOWED.items():
    _NAMES.setdefault(id(_value), f"{_module}.{_name}")


def _allowed(module, name):
    try:
        return _ALLOWED[(module, name)]
    except KeyError:
        raise UnsafeCheckpointError(
            f"the checkpoint asks to run {_printable(f'{module}.{name}')}, which rebuilding "
            "tensors never needs; it was not run. Only load checkpoints from sources you "
            "trust, or re-save this one as a plain state dict") from None


def _unsafe_build(target):
    what = _NAMES.get(id(target)) or {_TensorRef: "a tensor", _StorageRef: "a storage"}.get(
        type(target), f"a {type(target).__name__}")
    return UnsafeCheckpointError(
        f"the checkpoint's pickle sets the state of {what}, which rebuilding a state dict "
        "never does (only an OrderedDict's own attributes); refused before anything changed. "
        "Only load checkpoints from sources you trust")


class _Unpickler:
    """Runs one pickle from `data[position:]`, allowing what a state dict needs and no more.

    As `torch.load(weights_only=True)`: GLOBAL names only what `_ALLOWED` maps
    and imports nothing; REDUCE calls only those stand-ins; BUILD only gives an
    OrderedDict the pickle made its attributes (a state dict's `_metadata`, which
    is dropped); SETITEM(S) and APPEND(S) only fill the pickle's own dicts and
    lists. Other opcodes are refused. Unlike `pickle`, it never hashes a nested
    value, and it counts what it holds.
    """

    def __init__(self, data, position=0, persistent_load=None):
        self.data, self.position = data, position
        self.persistent_load = persistent_load or _no_storage
        self.stack, self.marks, self.memo = [], [], {}
        self.held = 0

    def load(self):
        """The pickled value, and the position just past its STOP."""
        try:
            while True:
                opcode = self.read(1)
                handler = self.OPCODES.get(opcode)
                if handler is None:
                    known = pickletools.code2op.get(opcode.decode("latin1"))
                    raise UnsafeCheckpointError(
                        f"the checkpoint's pickle uses the opcode "
                        f"{known.name if known else opcode!r}, which rebuilding a state "
                        "dict never needs; nothing was run")
                if handler(self) is _STOP:
                    return self.stack.pop(), self.position
        except CheckpointError:
            raise
        except (IndexError, KeyError, TypeError, ValueError, struct.error) as error:
            raise CheckpointError(f"cannot unpickle the checkpoint: {type(error).__name__} "
                                  f"near byte {self.position}: the file is damaged") from None

    # Reading the program.
    def read(self, size):
        end = self.position + size
        if end > len(self.data):
            raise CheckpointError("the checkpoint's pickle is truncated: the file is damaged")
        chunk = self.data[self.position:end]
        self.position = end
        return chunk

    def read_size(self, fmt):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def readline(self):
        end = self.data.find(b"\n", self.position)
        if end < 0:
            raise CheckpointError("the checkpoint's pickle is truncated: the file is damaged")
        return bytes(self.read(end + 1 - self.position)[:-1]).decode("utf-8")

    # The stack, the marks and the memo.
    def push(self, value):
        self.count()
        self.stack.append(value)

    def count(self):
        self.held += 1
        if self.held > _MAX_PICKLE_VALUES:
            raise CheckpointError(f"the checkpoint's pickle makes over {_MAX_PICKLE_VALUES} "
                                  "values, far more than a state dict's tensors need")

    def pop_mark(self):
        items, self.stack = self.stack, self.marks.pop()
        return items

    def pop(self, count):
        if len(self.stack) < count:
            raise IndexError("stack underflow")
        items = self.stack[len(self.stack) - count:]
        del self.stack[len(self.stack) - count:]
        return items

    def put(self, index):
        self.count()
        self.memo[index] = self.stack[-1]

    def target(self, kinds, opcode):
        target = self.stack[-1]
        if type(target) not in kinds:
            raise CheckpointError(f"the checkpoint's pickle applies {opcode} to a "
                                  f"{type(target).__name__}: the file is damaged")
        return target

    # The opcodes.
    def op_proto(self):
        if self.read(1)[0] > 5:
            raise CheckpointError("the checkpoint's pickle has an unknown protocol")

    def op_frame(self):
        self.read(8)  # frames only batch reads

    def op_stop(self):
        return _STOP

    def op_mark(self):
        self.marks.append(self.stack)
        self.stack = []

    def op_tuple(self):
        self.push(tuple(self.pop_mark()))

    def op_tuple_n(self, count):
        self.push(tuple(self.pop(count)))

    def op_append(self):
        value = self.stack.pop()
        self.target((list,), "APPEND").append(value)

    def op_appends(self):
        values = self.pop_mark()
        self.target((list,), "APPENDS").extend(values)

    def op_setitems(self, items):
        if len(items) % 2:
            raise IndexError("odd SETITEMS")
        target = self.target((dict, collections.OrderedDict), "SETITEM")
        for index in range(0, len(items), 2):
            target[_key(items[index])] = items[index + 1]

    def op_text(self, fmt):
        self.push(str(self.read(self.read_size(fmt)), "utf-8", "surrogatepass"))

    def op_py2_text(self, fmt):
        # Python 2's str, as torch.load reads it: UTF-8.
        self.push(str(self.read(self.read_size(fmt)), "utf-8"))

    def op_bytes(self, fmt):
        self.push(bytes(self.read(self.read_size(fmt))))

    def op_long1(self):
        self.push(int.from_bytes(self.read(self.read(1)[0]), "little", signed=True))

    def op_global(self):
        module = self.readline()
        self.push(_allowed(module, self.readline()))

    def op_stack_global(self):
        module, name = self.pop(2)
        if type(module) is not str or type(name) is not str:
            raise CheckpointError("the checkpoint's pickle names a global oddly")
        self.push(_allowed(module, name))

    def op_reduce(self):
        args = self.stack.pop()
        function = _CALLABLE.get(id(self.stack[-1]))
        if function is not self.stack[-1]:
            raise UnsafeCheckpointError(
                f"the checkpoint's pickle calls a {type(self.stack[-1]).__name__}, which "
                "rebuilding tensors never does; nothing was run")
        if type(args) is not tuple:
            raise CheckpointError("the checkpoint's pickle calls a function with no "
                                  "argument tuple: the file is damaged")
        self.count()
        self.stack[-1] = function(*args)

    def op_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        # A state dict's `_metadata` (per-module versions): no weights, so dropped.
        if type(target) is not collections.OrderedDict or type(state) is not dict:
            raise _unsafe_build(target)

    def op_persid(self):
        self.push(self.persistent_load(self.stack.pop()))

    def op_get(self, fmt):
        self.push(self.memo[self.read_size(fmt)])

    def op_put(self, fmt):
        self.put(self.read_size(fmt))

    P = pickle  # its opcode names only: nothing here unpickles through it
    OPCODES = {
        P.PROTO: op_proto, P.FRAME: op_frame, P.STOP: op_stop, P.MARK: op_mark,
        P.TUPLE: op_tuple, P.EMPTY_TUPLE: lambda self: self.push(()),
        P.TUPLE1: lambda self: self.op_tuple_n(1), P.TUPLE2: lambda self: self.op_tuple_n(2),
        P.TUPLE3: lambda self: self.op_tuple_n(3),
        P.EMPTY_LIST: lambda self: self.push([]), P.APPEND: op_append, P.APPENDS: op_appends,
        P.EMPTY_DICT: lambda self: self.push({}),
        P.SETITEM: lambda self: self.op_setitems(self.pop(2)),
        P.SETITEMS: lambda self: self.op_setitems(self.pop_mark()),
        P.NONE: lambda self: self.push(None), P.NEWTRUE: lambda self: self.push(True),
        P.NEWFALSE: lambda self: self.push(False),
        P.BININT: lambda self: self.push(self.read_size("<i")),
        P.BININT1: lambda self: self.push(self.read_size("<B")),
        P.BININT2: lambda self: self.push(self.read_size("<H")),
        P.LONG1: op_long1, P.BINFLOAT: lambda self: self.push(self.read_size(">d")),
        P.BINUNICODE: lambda self: self.op_text("<I"),
        P.SHORT_BINUNICODE: lambda self: self.op_text("<B"),
        P.BINUNICODE8: lambda self: self.op_text("<Q"),
        P.BINSTRING: lambda self: self.op_py2_text("<I"),
        P.SHORT_BINSTRING: lambda self: self.op_py2_text("<B"),
        P.BINBYTES: lambda self: self.op_bytes("<I"),
        P.SHORT_BINBYTES: lambda self: self.op_bytes("<B"),
        P.BINBYTES8: lambda self: self.op_bytes("<Q"),
        P.GLOBAL: op_global, P.STACK_GLOBAL: op_stack_global, P.REDUCE: op_reduce,
        P.BUILD: op_build, P.BINPERSID: op_persid,
        P.BINGET: lambda self: self.op_get("<B"), P.LONG_BINGET: lambda self: self.op_get("<I"),
        P.BINPUT: lambda self: self.op_put("<B"), P.LONG_BINPUT: lambda self: self.op_put("<I"),
        P.MEMOIZE: lambda self: self.put(len(self.memo)),
    }


_STOP = object()


def _unpickle(data, persistent_load=None):
    value, _ = _Unpickler(data, 0, persistent_load).load()
    return value


def _storage_pid(pid):
    """`(dtype, key, numel, view)` of a persistent id `('storage', dtype, key, location,
    numel[, view])`; a legacy view is `(view key, element offset, view numel)`."""
    if not (type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str
            and pid[0] == "storage" and isinstance(pid[1], _DType) and type(pid[2]) is str
            and _is_count(pid[4])):
        raise CheckpointError("the checkpoint's pickle names a storage in a way torch.save "
                              "never writes: the file is damaged")
    view = pid[5] if len(pid) == 6 else None
    if view is not None and not (type(view) is tuple and len(view) == 3
                                 and _is_count(view[1]) and _is_count(view[2])):
        raise CheckpointError("the checkpoint's pickle names a storage view oddly: the file "
                              "is damaged")
    return pid[1], pid[2], pid[4], view


def _array(raw, dtype, byteorder="little"):
    """The elements of a raw storage as a numpy array (bfloat16 widened to float32)."""
    if dtype.numpy == _BFLOAT16:
        halves = np.frombuffer(raw, np.dtype("<u2" if byteorder == "little" else ">u2"))
        return (halves.astype(np.uint32) << 16).view(np.float32)
    kind = np.dtype(dtype.numpy).newbyteorder("<" if byteorder == "little" else ">")
    return np.frombuffer(raw, kind).astype(np.dtype(dtype.numpy), copy=False)


def _materialise(root, storages):
    """`root` with every tensor replaced by its numpy array.

    A value the pickle shares is copied once, and tensors that are the same
    view (tied weights) share one array, so a few bytes of pickle cannot
    multiply into many copies.
    """
    budget = _COPY_FACTOR * sum(array.nbytes for array in storages.values())
    copies = {}  # id of a container or tensor of `root` -> its copy
    views = {}  # (storage key, start, size, stride) -> array
    spent = 0

    def copy(value, depth):
        nonlocal spent
        kind = type(value)
        if kind not in (_TensorRef, dict, collections.OrderedDict, list, tuple):
            return value
        if id(value) in copies:
            return copies[id(value)]
        if depth > MAX_DEPTH:
            raise CheckpointError(f"the checkpoint's containers nest deeper than {MAX_DEPTH} "
                                  "levels (or hold themselves); a state dict needs a few")
        if kind is _TensorRef:
            storage = storages[value.storage.key]
            start = value.storage.offset + value.offset
            view = (value.storage.key, start, value.size, value.stride)
            if view not in views:
                spent += _check_view(value.size, value.stride, start, storage)
                if spent > budget:
                    raise CheckpointError(
                        f"the checkpoint's tensors would take more than {_COPY_FACTOR} "
                        f"times the {budget // _COPY_FACTOR} bytes of its storages (views "
                        "overlapping far more than a state dict's); refused before copying")
                views[view] = _copy_view(value.size, value.stride, start, storage)
            result = views[view]
        elif kind in (dict, collections.OrderedDict):
            result = kind((key, copy(item, depth + 1)) for key, item in value.items())
        else:
            result = kind(copy(item, depth + 1) for item in value)
        copies[id(value)] = result
        return result

    return copy(root, 0)


def _check_view(size, stride, start, storage):
    """The bytes a strided view of `storage` takes once copied, after checking it is one
    a state dict can hold: inside the storage, and no more elements than it."""
    numel = math.prod(size)
    if numel == 0:
        if any(n >= 2**31 for n in size):
            raise CheckpointError(f"an empty tensor has an impossible shape {size}")
        return 0
    last = start + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise CheckpointError(f"a tensor of shape {size} reaches past the end of its "
                              f"storage ({len(storage)} elements): the file is damaged")
    if numel > len(storage):
        # Only a broadcast (stride 0) or overlapping view can: torch.save keeps them as
        # such, but copied out they could take any memory.
        raise CheckpointError(f"a tensor of shape {size} and strides {stride} has more "
                              f"elements than its storage ({len(storage)}); a state dict "
                              "holds none such: re-save it after .contiguous()")
    return numel * storage.itemsize


def _copy_view(size, stride, start, storage):
    if math.prod(size) == 0:
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[start:], shape=size,
                                           strides=[s * storage.itemsize for s in stride],
                                           writeable=False)
    return np.array(view)


def _read_member(archive, info, limit, what, path):
    """A zip member's bytes; refused uninflated if it declares more than `limit`, and
    never inflated past what it declares."""
    if info.file_size > limit:
        raise CheckpointError(f"{path}: {_printable(info.filename)} would inflate to "
                              f"{info.file_size} bytes, more than {what} ({limit} bytes); "
                              "refused without inflating it")
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED,
                                                          zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{path}: {_printable(info.filename)} is encrypted or "
                              "compressed in a way torch.save never writes")
    with archive.open(info) as member:
        # At most the declared size: the inflater is bounded by what is asked, and
        # the member's CRC is checked once that much is read.
        return member.read(info.file_size)


def _load_zip(path):
    try:
        root, storages = _read_zip(path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError,
            struct.error) as error:  # how zipfile meets a damaged archive
        raise CheckpointError(f"{path} is a damaged zip: "
                              f"{_printable(str(error), 200)}") from None
    return _materialise(root, storages)


def _read_zip(path):
    """The pickled root and the storages `{key: array}` of a zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in infos if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip but not a PyTorch checkpoint "
                                  "(no single data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in infos:
            raw = _read_member(archive, infos[prefix + "byteorder"], 16, "a byte order", path)
            byteorder = raw.decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path} declares an unknown byte order")
        refs = {}

        def persistent_load(pid):
            dtype, key, numel, _ = _storage_pid(pid)
            refs.setdefault(key, _StorageRef(key, dtype, numel))
            return refs[key]

        data = _read_member(archive, infos[pickles[0]], _MAX_PICKLE_BYTES,
                            "a state dict's pickle needs", path)
        root = _unpickle(data, persistent_load)
        storages = {}
        for key, ref in refs.items():
            member = f"{prefix}data/{key}"
            if member not in infos:
                raise CheckpointError(f"{path} lacks the storage {_printable(member)}: it "
                                      "is damaged")
            raw = _read_member(archive, infos[member], ref.numel * ref.dtype.itemsize,
                               f"its storage of {ref.numel} elements", path)
            if len(raw) % ref.dtype.itemsize:
                raise CheckpointError(f"{path}: the storage {_printable(member)} holds a "
                                      "part of an element: it is damaged")
            storages[key] = _array(raw, ref.dtype, byteorder)
    return root, storages


def _load_legacy(path, data):
    position = 0

    def next_pickle(persistent_load=None):
        nonlocal position
        value, position = _Unpickler(data, position, persistent_load).load()
        return value

    try:
        magic = next_pickle()
    except UnsafeCheckpointError:
        raise
    except CheckpointError:
        magic = None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{path} is neither a zip nor a legacy PyTorch checkpoint; "
                              "give a file written by torch.save")
    protocol = next_pickle()
    if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{path} has an unknown legacy protocol version")
    next_pickle()  # system info: byte order and type sizes (little-endian assumed)
    refs = {}

    def persistent_load(pid):
        dtype, key, numel, view = _storage_pid(pid)
        root = refs.setdefault(key, _StorageRef(key, dtype, numel))
        if view is not None:  # (view key, element offset, view size)
            return _StorageRef(key, dtype, view[2], offset=view[1])
        return root

    root = next_pickle(persistent_load)
    keys = next_pickle()
    if type(keys) is not list or not all(type(key) is str for key in keys):
        raise CheckpointError(f"{path}'s list of storage keys is not a list of names: it "
                              "is damaged")
    storages = {}
    raw = memoryview(data)
    for key in keys:
        ref = refs.get(key)
        if ref is None or position + 8 > len(data):
            raise CheckpointError(f"{path} is truncated or damaged near storage "
                                  f"{_printable(key)}")
        (numel,) = struct.unpack_from("<q", data, position)
        start, end = position + 8, position + 8 + numel * ref.dtype.itemsize
        if numel < 0 or end > len(data):
            raise CheckpointError(f"{path} is truncated in storage {_printable(key)}")
        storages[key] = _array(raw[start:end], ref.dtype)
        position = end
    if refs.keys() - storages.keys():
        raise CheckpointError(f"{path} lacks storages its pickle names: it is damaged")
    return _materialise(root, storages)


def _no_storage(pid):
    raise CheckpointError("the pickle names a storage where none can be")


def _is_zip(handle):
    try:
        return zipfile.is_zipfile(handle)
    except zipfile.BadZipFile:  # an end record naming several disks: a zip, if damaged
        return True


def load(path):
    """Everything a `torch.save` file holds, tensors as numpy arrays.

    Raises:
        UnsafeCheckpointError: the pickle asks for anything beyond tensor
            rebuilds and plain containers (nothing is run).
        CheckpointError: the file is not a readable PyTorch checkpoint, or
            breaks one of the limits in the module's docstring.
    """
    path = str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(1)
            if _is_zip(handle):
                return _load_zip(path)
            if head != b"\x80":
                raise CheckpointError(f"{path} is not a PyTorch checkpoint (it is not a "
                                      "pickle nor a zip); give a file written by torch.save")
            handle.seek(0)
            data = handle.read()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
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
