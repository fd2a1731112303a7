"""Normals from depth (Lopes et al., WACV 2023, App. B.1.1) against the exact synthetic ones."""

import torch
import torch.nn.functional as F

from densetasks.data import SYNTHETIC_CLASSES, SyntheticScenes, normals_from_depth


def test_normals_from_depth_match_exact_normals_on_room_planes() -> None:
    scenes = SyntheticScenes(n=3, size=(96, 96), seed=11)
    planes = [SYNTHETIC_CLASSES.index(name) for name in ("floor", "wall", "ceiling")]
    errors = []
    for index in range(len(scenes)):
        sample = scenes[index]
        estimated = normals_from_depth(sample["depth"], sample["meta"]["intrinsics"])
        near_edge = F.max_pool2d((sample["edges"] == 1).float()[None, None], 5, 1, 2)[0, 0] > 0
        on_plane = torch.isin(sample["semseg"], torch.tensor(planes))
        keep = on_plane & ~near_edge & (estimated.abs().sum(0) > 0)
        cosine = (estimated * sample["normals"]).sum(0).clamp(-1.0, 1.0)
        errors.append(torch.rad2deg(torch.acos(cosine))[keep])
    angles = torch.cat(errors)
    assert angles.numel() > 5000
    assert angles.mean() < 0.5
    assert torch.quantile(angles, 0.99) < 3.0
