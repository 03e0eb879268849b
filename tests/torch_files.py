"""Writes state dicts in `torch.save`'s zip format with numpy alone, for test checkpoints.

The pickle is assembled opcode by opcode, naming `torch._utils._rebuild_tensor_v2`
and the storage classes as `torch.save` does, so no `torch` module is needed
(or faked) to write it. One storage per tensor, contiguous.
"""

import pickle
import struct
import zipfile

import numpy as np

_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
             np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
             np.dtype(np.int32): "IntStorage", np.dtype(np.bool_): "BoolStorage"}


def _text(value):
    data = value.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value):
    return pickle.BININT + struct.pack("<i", value)


def _tuple(items):
    return pickle.MARK + b"".join(_int(i) for i in items) + pickle.TUPLE


def _global(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _pickle(state):
    out = [pickle.PROTO + b"\x02", _global("collections", "OrderedDict"),
           pickle.EMPTY_TUPLE, pickle.REDUCE, pickle.MARK]
    for index, (key, value) in enumerate(state.items()):
        strides = [s // value.itemsize for s in value.strides] if value.ndim else []
        out += [_text(key), _global("torch._utils", "_rebuild_tensor_v2"),
                pickle.MARK,
                pickle.MARK, _text("storage"), _global("torch", _STORAGES[value.dtype]),
                _text(str(index)), _text("cpu"), _int(value.size), pickle.TUPLE,
                pickle.BINPERSID,
                _int(0), _tuple(value.shape), _tuple(strides), pickle.NEWFALSE,
                _global("collections", "OrderedDict"), pickle.EMPTY_TUPLE, pickle.REDUCE,
                pickle.TUPLE, pickle.REDUCE]
    out += [pickle.SETITEMS, pickle.STOP]
    return b"".join(out)


def save_zip(state, path, name="archive"):
    """Writes `{key: array}` as `torch.save` (zip format) would; returns `path`."""
    state = {key: np.asarray(value, order="C") for key, value in state.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", _pickle(state))
        archive.writestr(f"{name}/byteorder", "little")
        for index, value in enumerate(state.values()):
            archive.writestr(f"{name}/data/{index}", value.astype(value.dtype.newbyteorder("<"))
                             .tobytes())
        archive.writestr(f"{name}/version", "3\n")
    return path
