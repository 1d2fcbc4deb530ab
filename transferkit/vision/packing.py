"""Image datasets packed into sharded TFRecord files: `transferkit data pack SRC OUT`.

A pack is a folder:

    transferkit-pack.json      class names, per split: shards, counts per class, problems
    train-00000-of-00004.tfrecord ...
    val-00000-of-00001.tfrecord

Each record holds a file's encoded bytes as they were (only formats that
TensorFlow cannot decode become PNG), its label index and its source path
(`transferkit.vision.pack_records`). Few large files read much faster than many
small ones on network file systems, and several workers shard a pack by file.
A pack is written into a temporary sibling folder and renamed into place, so
an interrupted `pack` leaves no half-written pack behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit.errors import DataError
from transferkit.fileio import file_sha256, remove_stale_temporaries, temporary_sibling
from transferkit.progress import progress_bar
from transferkit.vision.pack_records import serialize_record

MANIFEST = "transferkit-pack.json"
FORMAT = 1
SPLITS = ("train", "val")
MIN_SHARD_MB = 0.001  # 1 KB: smaller shards only multiply files


def is_pack(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


@dataclasses.dataclass(frozen=True)
class PackSplit:
    """One split of a pack: its shard files and how many records of each class they hold."""

    shards: tuple[str, ...]
    class_counts: tuple[int, ...]
    digest: str = ""  # the pack's (names its content in cache keys)
    # Per shard, as written (packs made before these were recorded have none): bytes, sha256 and
    # records per class, so a damaged shard is found, named and counted.
    shard_facts: tuple[dict, ...] = ()

    def verified(self) -> tuple["PackSplit", list[dict[str, str]]]:
        """This split without its damaged shards (size or digest changed), and a problem for each."""
        if not self.shard_facts:
            return self, []
        kept, counts, problems = [], np.zeros(len(self.class_counts), np.int64), []
        for shard, facts in zip(self.shards, self.shard_facts):
            reason = _shard_damage(Path(shard), facts)
            if reason is None:
                kept.append(shard)
                counts += np.asarray(facts["class_counts"], np.int64)
            else:
                problems.append({"path": shard, "reason": f"{reason}; its {sum(facts['class_counts'])} "
                                                          f"record(s) are left out"})
        if not problems:
            return self, []
        facts = tuple(f for s, f in zip(self.shards, self.shard_facts) if s in kept)
        return dataclasses.replace(self, shards=tuple(kept), class_counts=tuple(int(c) for c in counts),
                                   shard_facts=facts), problems

    @property
    def count(self) -> int:
        return int(sum(self.class_counts))


@dataclasses.dataclass(frozen=True)
class Pack:
    """A pack folder, read from its manifest."""

    root: Path
    class_names: tuple[str, ...]
    splits: dict[str, PackSplit]
    problems: tuple[dict[str, str], ...]
    digest: str  # names the pack's content, for cache keys

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Pack":
        root = Path(root)
        manifest = root / MANIFEST
        try:
            spec = json.loads(manifest.read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise DataError(f"{manifest}: unreadable pack manifest: {error}") from None
        if not isinstance(spec, dict):
            raise DataError(f"{manifest}: unreadable pack manifest: expected a JSON object")
        if spec.get("format") != FORMAT:
            raise DataError(f"{manifest}: pack format {spec.get('format')!r}; this version reads format {FORMAT}")
        try:
            splits = {}
            for name, split in spec["splits"].items():
                shards = tuple(str(root / shard) for shard in split["shards"] if isinstance(shard, str))
                if len(shards) != len(split["shards"]) or not isinstance(split["class_counts"], list):
                    raise TypeError(f"split {name!r}: expected lists of shard names and class counts")
                missing = [s for s in shards if not os.path.isfile(s)]
                if missing:
                    raise DataError(f"{manifest}: shard {missing[0]} is missing; the pack is incomplete")
                facts = split.get("shard_facts") or []
                if not isinstance(facts, list) or (facts and len(facts) != len(shards)):
                    raise TypeError(f"split {name!r}: shard_facts must list one entry per shard")
                splits[name] = PackSplit(shards, tuple(int(c) for c in split["class_counts"]), str(spec["digest"]),
                                         tuple(dict(bytes=int(f["bytes"]), sha256=str(f["sha256"]),
                                                    class_counts=[int(c) for c in f["class_counts"]])
                                               for f in facts))
            class_names = spec["class_names"]
            if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
                raise TypeError("class_names: expected a list of names")
            problems = spec.get("problems", [])
            if not isinstance(problems, list):
                raise TypeError("problems: expected a list")
            return cls(root, tuple(class_names), splits, tuple(problems), str(spec["digest"]))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise DataError(f"{manifest}: unreadable pack manifest: {type(error).__name__}: {error}") from None


def pack_images(source: str | os.PathLike, out: str | os.PathLike, val: str | os.PathLike | None = None,
                val_split: float = 0.0, shard_mb: float = 128.0, seed: int = 0, max_pixels: int | None = None,
                force: bool = False) -> Pack:
    """Packs an image folder (class sub-folders) or a `path,label` CSV into `out`.

    `val` packs a second source as the validation split; `val_split` instead
    holds out a seeded, per-class share of `source`. Files that fail the
    header check (unreadable, not an image, over the pixel cap) are left out
    and listed in the manifest's problems. Records are shuffled (seeded)
    before they are written, so each shard mixes the classes. A per-image bar
    shows the progress on a terminal.
    """
    from transferkit.vision.images import MAX_PIXELS
    from transferkit.vision.samples import list_samples
    from transferkit.vision.streaming import check_image_files

    out = Path(out)
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split: expected a number in [0, 1). Received: {val_split}")
    if val is not None and val_split:
        raise DataError("give --val or --val-split, not both")
    if not (math.isfinite(shard_mb) and shard_mb >= MIN_SHARD_MB):
        raise DataError(f"--shard-mb: expected a number >= {MIN_SHARD_MB}. Received: {shard_mb}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"--seed: expected an integer >= 0. Received: {seed}")
    _check_output_folder(out, [source, *([val] if val is not None else [])], force)
    samples, problems = list_samples(source)
    _check_no_sample_inside(out, [s.path for s in samples])
    class_names = sorted({s.label for s in samples})
    if len(class_names) < 2:
        raise DataError(f"{source}: found {len(class_names)} class(es) {class_names}; expected at least 2")
    index = {name: i for i, name in enumerate(class_names)}
    rng = np.random.default_rng(seed)
    splits: dict[str, list] = {"train": samples}
    if val is not None:
        val_samples, val_problems = list_samples(val)
        _check_no_sample_inside(out, [s.path for s in val_samples])
        problems += val_problems
        problems += [{"path": s.path, "reason": f"label {s.label!r} is not one of the classes {class_names}"}
                     for s in val_samples if s.label not in index]
        splits["val"] = [s for s in val_samples if s.label in index]
    elif val_split:
        from transferkit.sampling import split_validation

        held = set(split_validation([s.label for s in samples], val_split, seed, field="--val-split")[1])
        splits = {"train": [s for i, s in enumerate(samples) if i not in held],
                  "val": [s for i, s in enumerate(samples) if i in held]}

    import tensorflow as tf  # after every refusal above: those answer without it

    remove_stale_temporaries(out.parent, of=out.name)  # a killed pack's half-written folders
    staging = temporary_sibling(out)
    staging.mkdir(parents=True)
    try:
        manifest_splits = {}
        for name, split_samples in splits.items():
            checked = check_image_files([s.path for s in split_samples], [index[s.label] for s in split_samples],
                                        max_pixels or MAX_PIXELS)
            problems += checked.problems
            if not len(checked):
                raise DataError(f"{source if name == 'train' else val}: no usable images for the {name} split")
            order = rng.permutation(len(checked))
            sizes = np.array([os.path.getsize(checked.paths[i]) for i in order], dtype=np.int64)
            shard_count = min(len(order), max(1, int(np.ceil(sizes.sum() / (shard_mb * 2**20)))))  # no empty shard
            groups = np.array_split(order, shard_count)
            shards, shard_facts = [], []
            bar = progress_bar(len(order), f"packing {name}", unit="image")
            for number, group in enumerate(groups):
                shard = f"{name}-{number:05d}-of-{shard_count:05d}.tfrecord"
                with tf.io.TFRecordWriter(str(staging / shard)) as writer:
                    for i in group:
                        encoded = _servable_bytes(checked.paths[i], bool(checked.tf_decodable[i]))
                        writer.write(serialize_record(encoded, int(checked.labels[i]), checked.paths[i]))
                        bar.update(1)
                shards.append(shard)
                group_labels = np.asarray([checked.labels[i] for i in group], dtype=np.int64)
                shard_facts.append({"bytes": (staging / shard).stat().st_size,
                                    "sha256": file_sha256(staging / shard),
                                    "class_counts": np.bincount(group_labels, minlength=len(class_names)).tolist()})
            bar.close()
            counts = np.bincount(np.asarray(checked.labels, dtype=np.int64), minlength=len(class_names))
            manifest_splits[name] = {"shards": shards, "class_counts": counts.tolist(), "shard_facts": shard_facts}
        # Names the content for cache keys: the shards' own digests, in order (each shard is read once).
        import hashlib

        digest = hashlib.sha256("".join(f["sha256"] for split in manifest_splits.values()
                                        for f in split["shard_facts"]).encode()).hexdigest()[:16]
        manifest = {"format": FORMAT, "class_names": class_names, "splits": manifest_splits,
                    "problems": problems, "source": str(Path(source).resolve()),
                    "val_source": str(Path(val).resolve()) if val is not None else None,
                    "val_split": val_split, "seed": seed, "digest": digest,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():
            old = temporary_sibling(out)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Pack.open(out)


def _check_output_folder(out: Path, sources: Sequence[str | os.PathLike], force: bool) -> None:
    """Refuses an output that would overwrite, or sit inside, a source; `--force` replaces only a pack.

    A pack replaces its folder whole, so an output that is, contains or lies inside a source
    folder would delete (or pollute) the images being packed.
    """
    resolved_out = out.resolve()
    for source in sources:
        resolved = Path(source).resolve()
        if resolved == resolved_out:
            relation = "is"
        elif resolved_out in resolved.parents:
            relation = "contains"
        elif resolved.is_dir() and resolved in resolved_out.parents:
            relation = "is inside"
        else:
            continue
        raise DataError(f"{out}: the output folder {relation} the source {source} ({resolved}); "
                        f"write the pack to a folder outside the data")
    if out.exists() or out.is_symlink():
        if not force:
            raise DataError(f"{out}: already exists; pass --force to replace it")
        if out.is_symlink() or not out.is_dir() or not is_pack(out):
            raise DataError(f"{out}: exists and is not a pack (no {MANIFEST}); --force only replaces a pack "
                            f"folder: remove it yourself or choose another output")


def _check_no_sample_inside(out: Path, paths: Sequence[str]) -> None:
    """A CSV may list images anywhere: none of them may lie in the folder that the pack replaces."""
    prefix = os.path.join(os.path.realpath(out), "")
    for path in paths:
        if os.path.realpath(path).startswith(prefix):
            raise DataError(f"{out}: the output folder holds {path}, an image listed for packing; "
                            f"write the pack to a folder outside the data")


def _shard_damage(path: Path, facts: dict) -> str | None:
    """Why a shard is not as it was written, or None. A shard checked before is not hashed again while
    its size and modification time stay the same (recorded under $TRANSFERKIT_HOME/pack_checks)."""
    from transferkit import paths

    try:
        stat = path.stat()
    except OSError:
        return "the shard is missing"
    if stat.st_size != facts["bytes"]:
        return f"the shard has {stat.st_size} bytes, {facts['bytes']} were written (truncated or changed)"
    stamp = paths.home() / "pack_checks" / f"{facts['sha256']}.json"
    seen = [stat.st_size, stat.st_mtime_ns, str(path.resolve())]
    try:
        if json.loads(stamp.read_text()) == seen:
            return None
    except (OSError, ValueError):
        pass
    if file_sha256(path) != facts["sha256"]:
        return "the shard's bytes changed since it was written (its digest differs)"
    try:
        from transferkit.fileio import atomic_write_text

        atomic_write_text(stamp, json.dumps(seen))
    except OSError:
        pass  # the check is only repeated next time
    return None


def _servable_bytes(path: str, tf_decodable: bool) -> bytes:
    """The file's bytes; a format TensorFlow cannot decode (TIFF, WebP) becomes a lossless PNG of its upright pixels."""
    if tf_decodable:
        return Path(path).read_bytes()
    import io

    from PIL import Image

    from transferkit.vision.images import read_image

    buffer = io.BytesIO()
    Image.fromarray(read_image(path)).save(buffer, format="PNG")
    return buffer.getvalue()
