"""Read PyTorch ``state_dict`` checkpoints into NumPy without importing torch.

Two on-disk layouts written by ``torch.save`` are understood:

* the **legacy** (pre-1.6, non-zip) layout: a run of pickles -- a magic
  number, a protocol version, a small dict of system information, the main
  object (whose tensors refer to storages through persistent ids), and the
  list of storage keys -- followed, for each storage key in that order, by an
  8-byte little-endian element count and the raw storage bytes;
* the **zip** layout (torch >= 1.6): an archive holding ``<name>/data.pkl``
  (the main object, same persistent-id scheme) and one raw file
  ``<name>/data/<key>`` per storage.

Every pickle is read with :class:`RestrictedUnpickler`, which admits only the
handful of globals a plain tensor ``state_dict`` needs and maps them to small
local stand-ins.  No code from the file is ever executed, so reading an
untrusted checkpoint cannot run arbitrary commands -- it either yields arrays
or fails with an error naming the file and the refused global.

Example::

    from transferkit.models.torch_legacy import read_legacy_state_dict

    weights = read_legacy_state_dict("model.pth")
    weights["_conv_stem.weight"].shape  # (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from transferkit.errors import DataError

__all__ = [
    "LEGACY_MAGIC_NUMBER",
    "LEGACY_PROTOCOL_VERSION",
    "RestrictedUnpickler",
    "TorchCheckpointError",
    "UnsafePickleError",
    "read_legacy_state_dict",
]

#: First pickle of a legacy ``torch.save`` file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Second pickle of a legacy ``torch.save`` file.
LEGACY_PROTOCOL_VERSION = 1001


class TorchCheckpointError(DataError):
    """A file is not a readable torch checkpoint (truncated, corrupt, other).

    A :class:`transferkit.errors.DataError` (hence a ``ValueError``); the
    message always names the file.
    """


class UnsafePickleError(TorchCheckpointError, pickle.UnpicklingError):
    """A pickle asked for a global or persistent object that is not allowed.

    Also a ``pickle.UnpicklingError``; the message names the refused
    ``module.name`` and the file.
    """


# --------------------------------------------------------------------------
# Stand-ins for the torch objects a state_dict pickle refers to.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<Kind>Storage`` class: just the element dtype."""

    name: str
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A reference to (part of) a serialized storage.

    ``offset`` and ``numel`` count elements of ``storage_type.dtype``; they
    select a window of the root storage ``key`` (legacy storage views).
    """

    storage_type: _StorageType
    key: str
    offset: int
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor described by the pickle; materialised once storages are read."""

    storage: _StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _little(code: str) -> np.dtype:
    return np.dtype(code).newbyteorder("<")


# Raw on-disk dtype per storage class.  bfloat16 has no NumPy dtype: it is
# read as uint16 and widened to float32 (exactly) when tensors are built.
_STORAGE_TYPES: dict[str, _StorageType] = {
    name: _StorageType(name, _little(code))
    for name, code in {
        "DoubleStorage": "f8",
        "FloatStorage": "f4",
        "HalfStorage": "f2",
        "BFloat16Storage": "u2",
        "LongStorage": "i8",
        "IntStorage": "i4",
        "ShortStorage": "i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


def _rebuild_tensor_v2(
    storage,
    storage_offset,
    size,
    stride,
    requires_grad=False,
    backward_hooks=None,
    metadata=None,
):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the layout."""
    del requires_grad, backward_hooks, metadata  # irrelevant for weights
    return _make_tensor_ref(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    """Stand-in for the older ``torch._utils._rebuild_tensor``."""
    return _make_tensor_ref(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter's data."""
    del requires_grad, backward_hooks
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(
            f"_rebuild_parameter expected a tensor, got {type(data).__name__}"
        )
    return data


def _as_int_tuple(value, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(
            f"tensor {what} must be a tuple of ints, got {value!r}"
        )
    return tuple(value)


def _make_tensor_ref(storage, storage_offset, size, stride) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(
            f"tensor storage must come from a persistent id, got "
            f"{type(storage).__name__}"
        )
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(
            f"tensor storage offset must be a non-negative int, got "
            f"{storage_offset!r}"
        )
    shape = _as_int_tuple(size, "size")
    strides = _as_int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(
            f"tensor size {shape} and stride {strides} differ in rank"
        )
    if any(d < 0 for d in shape) or any(s < 0 for s in strides):
        raise pickle.UnpicklingError(
            f"negative tensor size or stride: size={shape} stride={strides}"
        )
    return _TensorRef(storage, storage_offset, shape, strides)


class _StateDict(collections.OrderedDict):
    """``collections.OrderedDict`` stand-in that drops pickled attributes.

    ``torch`` attaches a ``_metadata`` attribute (module versions) to every
    state_dict; pickle restores it with BUILD.  It is not needed, so the
    state is accepted and discarded instead of being set on the object.
    """

    def __setstate__(self, state):  # noqa: D401 - pickle protocol hook
        del state

    def __reduce__(self):  # pragma: no cover - never re-pickled
        return (collections.OrderedDict, (), None, None, iter(self.items()))


#: ``(module, name)`` pairs the unpickler admits, and what they become.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
}


class RestrictedUnpickler(pickle._Unpickler):  # the Python one: its opcode table can be restricted
    """An unpickler for torch ``state_dict`` pickles that runs no file code.

    ``find_class`` admits only :data:`ALLOWED_GLOBALS` and returns local
    stand-ins for them; any other global (``os.system``, ``builtins.eval``,
    a model class, ...) raises :class:`UnsafePickleError` naming it and the
    file.  Persistent ids of the form ``('storage', <StorageType>, key,
    location, numel[, view_metadata])`` become :class:`_StorageRef` values;
    every other persistent id is refused too.

    Args:
        file: binary file object positioned at the start of a pickle.
        source: name of the file, used in error messages.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_build(self):
        """BUILD only on a state_dict this pickle created; never on the stand-ins, which are shared."""
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if not isinstance(inst, _StateDict):
            raise UnsafePickleError(
                f"{self._source}: refusing BUILD on {type(inst).__name__}: a pickle may only set the "
                f"state of state_dicts it creates")
        self.stack.pop()  # the state (torch's _metadata) is not needed

    dispatch[pickle.BUILD[0]] = load_build

    def __init__(self, file: BinaryIO, source: str):
        super().__init__(file)
        self._source = source
        # Element count of each root storage, to check views and later reads.
        self.storage_numels: dict[str, int] = {}
        self.storage_types: dict[str, _StorageType] = {}

    def find_class(self, module: str, name: str):
        """Return the stand-in for ``module.name`` or refuse it."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle global "
                f"'{module}.{name}': only plain tensor state_dicts are "
                f"supported (allowed: "
                f"{', '.join(sorted(m + '.' + n for m, n in ALLOWED_GLOBALS))})"
            ) from None

    def persistent_load(self, pid):
        """Turn a torch storage persistent id into a :class:`_StorageRef`."""
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafePickleError(
                f"{self._source}: refusing persistent object {kind!r}; only "
                f"tensor storages are supported"
            )
        if len(pid) not in (5, 6):
            raise pickle.UnpicklingError(
                f"{self._source}: malformed storage persistent id {pid!r}"
            )
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(
                f"{self._source}: storage type {storage_type!r} is not a "
                f"supported torch storage class"
            )
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(
                f"{self._source}: bad element count {numel!r} for storage "
                f"{key!r}"
            )
        key = str(key)
        known = self.storage_types.get(key)
        if known is not None and known != storage_type:
            raise pickle.UnpicklingError(
                f"{self._source}: storage {key!r} is used as both "
                f"{known.name} and {storage_type.name}"
            )
        self.storage_types[key] = storage_type
        self.storage_numels[key] = numel
        if view is None:
            return _StorageRef(storage_type, key, 0, numel)
        # Legacy storage views: (view_key, offset, view_numel) of root `key`.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise pickle.UnpicklingError(
                f"{self._source}: malformed storage view {view!r}"
            )
        _view_key, offset, view_numel = view
        if not (
            isinstance(offset, int)
            and isinstance(view_numel, int)
            and 0 <= offset
            and 0 <= view_numel
            and offset + view_numel <= numel
        ):
            raise pickle.UnpicklingError(
                f"{self._source}: storage view {view!r} lies outside storage "
                f"{key!r} of {numel} elements"
            )
        return _StorageRef(storage_type, key, offset, view_numel)


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


def _load_pickle(file: BinaryIO, source: str, what: str):
    """Load one pickle from ``file`` with a fresh restricted unpickler."""
    return _run_unpickler(RestrictedUnpickler(file, source), source, what)


def _run_unpickler(unpickler: RestrictedUnpickler, source: str, what: str):
    """Run ``unpickler``, turning parse failures into errors naming the file."""
    try:
        return unpickler.load()
    except UnsafePickleError:
        raise
    except EOFError:
        raise TorchCheckpointError(
            f"{source}: file ends inside the {what} pickle (truncated "
            f"download or not a torch checkpoint)"
        ) from None
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        struct.error,
        MemoryError,
        RecursionError,
    ) as exc:
        raise TorchCheckpointError(
            f"{source}: cannot read the {what} pickle ({type(exc).__name__}: "
            f"{exc}); the file is corrupt, truncated or not a torch checkpoint"
        ) from exc


def _widen(raw: np.ndarray, storage_type: _StorageType) -> np.ndarray:
    """Convert raw storage elements to the NumPy dtype handed to callers."""
    if storage_type.name == "BFloat16Storage":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(storage_type.dtype.newbyteorder("="), copy=False)


def _materialise(
    tensor: _TensorRef, storages: dict[str, np.ndarray], source: str, name: str
) -> np.ndarray:
    """Build an owned, C-contiguous array for ``tensor`` from its storage."""
    ref = tensor.storage
    count = math.prod(tensor.shape)  # Python ints: a huge declared shape cannot overflow
    if count > ref.numel:
        # Weights never overlap in memory; a broadcast (stride 0) or oversized view would
        # expand a few stored bytes into an arbitrarily large array.
        raise TorchCheckpointError(
            f"{source}: tensor {name!r} declares {count} elements (size {tensor.shape}, "
            f"stride {tensor.stride}) but its storage holds {ref.numel}; refusing an "
            f"overlapping or oversized tensor"
        )
    flat = storages[ref.key][ref.offset : ref.offset + ref.numel]
    start = tensor.storage_offset
    if count == 0:
        return np.zeros(tensor.shape, dtype=flat.dtype)
    last = start + sum((d - 1) * s for d, s in zip(tensor.shape, tensor.stride))
    if last >= flat.size:
        raise TorchCheckpointError(
            f"{source}: tensor {name!r} (offset {start}, size "
            f"{tensor.shape}, stride {tensor.stride}) reaches element {last} "
            f"of a storage with {flat.size} elements"
        )
    contiguous = []
    step = 1
    for d in reversed(tensor.shape):
        contiguous.append(step)
        step *= d
    contiguous = tuple(reversed(contiguous))
    size = int(np.prod(tensor.shape, dtype=np.int64))
    if all(
        s == c or d == 1
        for d, s, c in zip(tensor.shape, tensor.stride, contiguous)
    ):
        out = flat[start : start + size].reshape(tensor.shape)
    else:
        out = np.lib.stride_tricks.as_strided(
            flat[start:],
            shape=tensor.shape,
            strides=tuple(s * flat.itemsize for s in tensor.stride),
            writeable=False,
        )
    return np.array(out, order="C", copy=True)


def _collect(
    obj, source: str, storages: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Check the main object is a flat name -> tensor mapping and build it."""
    if not isinstance(obj, dict):
        raise TorchCheckpointError(
            f"{source}: expected a state_dict (a mapping of names to tensors), "
            f"found {type(obj).__name__}"
        )
    result: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TorchCheckpointError(
                f"{source}: state_dict key {name!r} is not a string"
            )
        if not isinstance(value, _TensorRef):
            raise TorchCheckpointError(
                f"{source}: state_dict entry {name!r} holds a "
                f"{type(value).__name__}, not a tensor; only flat tensor "
                f"state_dicts are supported"
            )
        result[name] = _materialise(value, storages, source, name)
    return result


def _remaining_bytes(file: BinaryIO) -> int | None:
    try:
        return os.fstat(file.fileno()).st_size - file.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


def _read_legacy(file: BinaryIO, source: str) -> dict[str, np.ndarray]:
    magic = _load_pickle(file, source, "magic number")
    if magic != LEGACY_MAGIC_NUMBER:
        raise TorchCheckpointError(
            f"{source}: not a legacy torch checkpoint (magic number "
            f"{magic!r} instead of {LEGACY_MAGIC_NUMBER:#x})"
        )
    version = _load_pickle(file, source, "protocol version")
    if version != LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError(
            f"{source}: unsupported legacy torch protocol version {version!r} "
            f"(expected {LEGACY_PROTOCOL_VERSION})"
        )
    sys_info = _load_pickle(file, source, "system info")
    if not isinstance(sys_info, dict):
        raise TorchCheckpointError(
            f"{source}: malformed system info pickle {sys_info!r}"
        )
    byteorder = "<" if sys_info.get("little_endian", True) else ">"

    unpickler = RestrictedUnpickler(file, source)
    main = _run_unpickler(unpickler, source, "state_dict")
    keys = _load_pickle(file, source, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchCheckpointError(
            f"{source}: malformed storage key list {keys!r}"
        )
    missing = set(unpickler.storage_numels) - set(keys)
    if missing:
        raise TorchCheckpointError(
            f"{source}: storages {sorted(missing)} are referenced by tensors "
            f"but absent from the storage key list"
        )

    storages: dict[str, np.ndarray] = {}
    for key in keys:
        storage_type = unpickler.storage_types.get(key)
        if storage_type is None:
            raise TorchCheckpointError(
                f"{source}: storage key {key!r} is listed but no tensor uses "
                f"it, so its element type is unknown"
            )
        header = file.read(8)
        if len(header) != 8:
            raise TorchCheckpointError(
                f"{source}: file ends before the size of storage {key!r} "
                f"(truncated)"
            )
        (numel,) = struct.unpack(byteorder + "q", header)
        expected = unpickler.storage_numels[key]
        if numel != expected:
            raise TorchCheckpointError(
                f"{source}: storage {key!r} has {numel} elements on disk but "
                f"the pickle declares {expected}"
            )
        dtype = storage_type.dtype.newbyteorder(byteorder)
        nbytes = numel * dtype.itemsize
        remaining = _remaining_bytes(file)
        if remaining is not None and nbytes > remaining:
            raise TorchCheckpointError(
                f"{source}: storage {key!r} declares {nbytes} bytes but only "
                f"{remaining} remain in the file (corrupt or truncated)"
            )
        data = file.read(nbytes)
        if len(data) != nbytes:
            raise TorchCheckpointError(
                f"{source}: file ends inside storage {key!r}: expected "
                f"{nbytes} bytes, got {len(data)} (truncated)"
            )
        storages[key] = _widen(np.frombuffer(data, dtype=dtype), storage_type)
    return _collect(main, source, storages)


def _read_zip(path: str, source: str) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TorchCheckpointError(
            f"{source}: cannot open as a zip torch checkpoint: {exc}"
        ) from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise TorchCheckpointError(
                f"{source}: zip file is not a torch checkpoint (expected one "
                f"'<name>/data.pkl' entry, found {len(pickles)})"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in archive.namelist():
            order = archive.read(prefix + "byteorder").decode().strip()
            if order not in ("little", "big"):
                raise TorchCheckpointError(
                    f"{source}: unknown byteorder record {order!r}"
                )
            byteorder = "<" if order == "little" else ">"
        try:
            pickle_bytes = archive.read(pickles[0])
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise TorchCheckpointError(
                f"{source}: cannot read {pickles[0]}: {exc}"
            ) from exc
        unpickler = RestrictedUnpickler(io.BytesIO(pickle_bytes), source)
        main = _run_unpickler(unpickler, source, "data.pkl")
        storages: dict[str, np.ndarray] = {}
        for key, storage_type in unpickler.storage_types.items():
            member = f"{prefix}data/{key}"
            dtype = storage_type.dtype.newbyteorder(byteorder)
            numel = unpickler.storage_numels[key]
            try:
                declared = archive.getinfo(member).file_size
            except KeyError:
                declared = None
            if declared is not None and declared != numel * dtype.itemsize:
                raise TorchCheckpointError(
                    f"{source}: storage entry {member!r} holds {declared} "
                    f"bytes, expected {numel * dtype.itemsize}"
                )
            try:
                data = archive.read(member)
            except KeyError:
                raise TorchCheckpointError(
                    f"{source}: storage entry {member!r} is missing"
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise TorchCheckpointError(
                    f"{source}: cannot read storage entry {member!r}: {exc}"
                ) from exc
            dtype = storage_type.dtype.newbyteorder(byteorder)
            numel = unpickler.storage_numels[key]
            if len(data) != numel * dtype.itemsize:
                raise TorchCheckpointError(
                    f"{source}: storage entry {member!r} holds {len(data)} "
                    f"bytes, expected {numel * dtype.itemsize}"
                )
            storages[key] = _widen(
                np.frombuffer(data, dtype=dtype), storage_type
            )
    return _collect(main, source, storages)


def read_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torch ``state_dict`` file into ``{name: numpy.ndarray}``.

    Handles the legacy (non-zip) ``torch.save`` layout and, as a
    convenience, the zip layout of torch >= 1.6.  Nothing from the file is
    executed: pickles are parsed by :class:`RestrictedUnpickler`.

    Arrays are owned, C-contiguous copies in native byte order with the
    tensor's dtype (``bfloat16`` tensors are widened exactly to float32).
    The state_dict's ``_metadata`` (module versions) is dropped.

    Args:
        path: the ``.pth``/``.pt`` file.

    Returns:
        A dict from parameter/buffer name to array, in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file refers to a global other than the
            allowed torch tensor helpers (message names it and the file).
        TorchCheckpointError: the file is truncated, corrupt, not a torch
            checkpoint, or not a flat tensor state_dict (message names the
            file).
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"torch checkpoint not found: {source}")
    if zipfile.is_zipfile(source):
        return _read_zip(source, source)
    with open(source, "rb") as file:
        head = file.read(2)
        if len(head) < 2 or head[0] != 0x80:
            raise TorchCheckpointError(
                f"{source}: not a torch checkpoint (neither a zip archive nor "
                f"a legacy pickle stream; starts with {head!r})"
            )
        file.seek(0)
        return _read_legacy(file, source)
